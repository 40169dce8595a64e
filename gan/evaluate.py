"""Quality of synthetic datasets: image similarity to co-registered real images, and segmentation consistency.

Image similarity is measured inside a mask and in a stated intensity range
``[low, high]``: both images are clipped to it, and ``data_range = high - low``
enters PSNR and SSIM. Comparing like with like needs one fixed range for every
case, for example the CT window ``[-1000, 2000]`` HU or ``[-5, 5]`` for z-scored MR.
MR without an absolute scale can instead be compared after ``normalise="percentiles"``:
each image is mapped by its own 0.5th and 99.5th percentiles inside the mask to
``[-1, 1]`` (``gan.intensity.Percentiles``), and the range is then ``[-1, 1]``.

- MAE: mean absolute difference over the mask voxels, in the images' units.
- PSNR: ``10 * log10(data_range ** 2 / MSE)`` in dB, with the MSE over the mask
  voxels; infinite when the images are equal inside the mask.
- SSIM: the local SSIM map of Wang et al. (IEEE TIP 13(4), 2004) from
  ``skimage.metrics.structural_similarity`` with a Gaussian window (sigma 1.5,
  11 pixels wide), population covariances and K1 = 0.01, K2 = 0.03, averaged over
  the mask voxels. ``ssim_mode="2d"`` computes the map slice by slice along the
  last axis (the axis a 2D slice generator walks along); ``"3d"`` computes it in
  3D. Every axis the window runs along needs at least 11 voxels. The map near
  the image border uses mirrored voxels (skimage's ``reflect`` filter mode).

Segmentation consistency applies a segmenter trained on real data
(``segment.checkpoint``) to each synthetic image and scores its prediction
against the synthetic label map with ``segment.metrics.dice_per_class``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from skimage.metrics import structural_similarity

from segment.checkpoint import load_checkpoint
from segment.data.io import label_to_integer, load_nifti
from segment.data.msd import MSDDataset
from segment.data.normalize import normalize_intensity
from segment.errors import DataError
from segment.files import atomic_write, write_csv, write_json
from segment.inference import predict_labels
from segment.metrics import dice_per_class, mean_over_cases

from .errors import GanError
from .intensity import Percentiles
from .slices import VolumeFiles, find_volumes

logger = logging.getLogger(__name__)

SSIM_SIGMA = 1.5
SSIM_WINDOW = 11  # skimage's Gaussian window: 2 * round(3.5 * sigma) + 1 pixels
SSIM_MODES = ("2d", "3d")
NORMALISATIONS = ("percentiles",)
MASK_LABEL = "label"


def _checked(synthetic: np.ndarray, real: np.ndarray, mask: np.ndarray | None, intensity_range: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Clip both images to the range and return them as float64 with a boolean mask and the data range."""
    low, high = (float(value) for value in intensity_range)
    if not (math.isfinite(low) and math.isfinite(high) and high > low):
        raise GanError(f"intensity range must be two finite numbers with low < high, got {list(intensity_range)}")
    synthetic = np.asarray(synthetic, dtype=np.float64)
    real = np.asarray(real, dtype=np.float64)
    if synthetic.shape != real.shape:
        raise GanError(f"synthetic image has shape {synthetic.shape} but the real image has {real.shape}; they must be co-registered")
    mask = np.ones(synthetic.shape, dtype=bool) if mask is None else np.asarray(mask).astype(bool)
    if mask.shape != synthetic.shape:
        raise GanError(f"mask has shape {mask.shape} but the images have {synthetic.shape}")
    if not mask.any():
        raise GanError("the mask is empty; metrics inside it are undefined")
    return np.clip(synthetic, low, high), np.clip(real, low, high), mask, high - low


def masked_mae(synthetic: np.ndarray, real: np.ndarray, mask: np.ndarray | None, intensity_range: Sequence[float]) -> float:
    """Compute the mean absolute difference inside ``mask`` after clipping both images to ``intensity_range``."""
    synthetic, real, mask, _ = _checked(synthetic, real, mask, intensity_range)
    return float(np.abs(synthetic - real)[mask].mean())


def masked_psnr(synthetic: np.ndarray, real: np.ndarray, mask: np.ndarray | None, intensity_range: Sequence[float]) -> float:
    """Compute PSNR in dB inside ``mask`` with ``data_range = high - low``, or ``inf`` when the images are equal there."""
    synthetic, real, mask, data_range = _checked(synthetic, real, mask, intensity_range)
    mse = float(((synthetic - real) ** 2)[mask].mean())
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)


def ssim_map(synthetic: np.ndarray, real: np.ndarray, data_range: float, mode: str = "2d") -> np.ndarray:
    """Compute the local SSIM of two already clipped images; the map has the inputs' shape.

    ``mode="2d"`` computes it per slice along the last axis (2D images have
    one slice), ``"3d"`` over the whole volume.
    """
    if mode not in SSIM_MODES:
        raise GanError(f"SSIM mode must be one of {list(SSIM_MODES)}, got {mode!r}")
    axes = synthetic.shape if mode == "3d" or synthetic.ndim == 2 else synthetic.shape[:-1]
    if min(axes) < SSIM_WINDOW:
        raise GanError(
            f"SSIM needs at least {SSIM_WINDOW} voxels along each axis its window runs along; the images have shape {synthetic.shape} "
            "(use ssim mode 2d for volumes with few slices)"
        )

    def compare(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        _, full = structural_similarity(a, b, data_range=data_range, gaussian_weights=True, sigma=SSIM_SIGMA, use_sample_covariance=False, full=True)
        return full

    if mode == "3d" or synthetic.ndim == 2:
        return compare(synthetic, real)
    return np.stack([compare(synthetic[..., k], real[..., k]) for k in range(synthetic.shape[-1])], axis=-1)


def masked_ssim(synthetic: np.ndarray, real: np.ndarray, mask: np.ndarray | None, intensity_range: Sequence[float], *, mode: str = "2d") -> float:
    """Average the local SSIM map over the ``mask`` voxels, after clipping both images to ``intensity_range``."""
    synthetic, real, mask, data_range = _checked(synthetic, real, mask, intensity_range)
    return float(ssim_map(synthetic, real, data_range, mode)[mask].mean())


def image_metrics(
    synthetic: np.ndarray, real: np.ndarray, mask: np.ndarray | None, intensity_range: Sequence[float], *, ssim_mode: str = "2d"
) -> dict[str, float]:
    """Compute SSIM, PSNR (dB) and MAE of a synthetic image against its co-registered real image, inside ``mask``."""
    return {
        "ssim": masked_ssim(synthetic, real, mask, intensity_range, mode=ssim_mode),
        "psnr": masked_psnr(synthetic, real, mask, intensity_range),
        "mae": masked_mae(synthetic, real, mask, intensity_range),
    }


@dataclass
class _Sample:
    """One row of the PNG grid."""

    case_id: str
    real: np.ndarray | None
    aligned: bool
    synthetic: np.ndarray
    label: np.ndarray | None
    scores: Mapping[str, Any]


@dataclass
class SyntheticCaseFiles:
    """One case of a synthetic dataset and what it was generated from."""

    case_id: str
    image: Path
    label: Path | None
    source_case: str
    co_registered: bool


def _synthetic_cases(folder: Path) -> tuple[MSDDataset, list[SyntheticCaseFiles], dict[str, Any]]:
    """List the cases of a synthetic dataset with their source case from ``manifest.json`` (the case itself without a manifest)."""
    dataset = MSDDataset(folder)
    manifest_path = folder / "manifest.json"
    records: dict[str, Mapping[str, Any]] = {}
    provenance: dict[str, Any] = {}
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise DataError(f"{manifest_path} is not valid JSON: {error}") from error
        records = {str(record["case_id"]): record for record in manifest.get("cases", []) if isinstance(record, Mapping) and "case_id" in record}
        provenance = dict(manifest.get("provenance", {}))

    cases = []
    for files in dataset.cases:
        record = records.get(files.case_id, {})
        # A label map deformed before generating no longer lines up with its source case's image.
        co_registered = "augmentation" not in record.get("parameters", {})
        cases.append(SyntheticCaseFiles(files.case_id, files.images[0], files.label, str(record.get("source_case", files.case_id)), co_registered))
    return dataset, cases, provenance


def default_intensity_range(provenance: Mapping[str, Any]) -> tuple[float, float] | None:
    """Return the fixed range of the generator's output mapping recorded in a manifest, or ``None`` without one.

    CT windows and z-score clips have fixed ranges. Per-volume MR percentiles do
    not: their fitted range is only an estimate, so a range must then be given.
    """
    state = provenance.get("intensity") or {}
    if state.get("name") == "ct":
        return float(state["low"]), float(state["high"])
    if state.get("name") == "zscore":
        return -float(state["limit"]), float(state["limit"])
    return None


def _real_volumes(real: str | Path | None, channel: int, mask: str | None) -> dict[str, VolumeFiles]:
    if real is None:
        return {}
    template = None if mask in (None, MASK_LABEL) else mask
    return {volume.case_id: volume for volume in find_volumes(real, channel=channel, mask=template)}


def _read_real(files: VolumeFiles) -> tuple[np.ndarray, np.ndarray]:
    array, affine = load_nifti(files.image)
    if array.ndim == 4:
        array = array[..., files.channel]
    return np.asarray(array, dtype=np.float32), affine


def _segment(net: torch.nn.Module, image: np.ndarray, device: str) -> np.ndarray:
    """Predict labels for a ``(X, Y[, Z])`` image normalised as ``MSDDataset.load`` does; a 2D net runs slice by slice."""
    normalised = torch.from_numpy(normalize_intensity(image[None]))
    spatial_dims = int(getattr(net, "spatial_dims", image.ndim))
    if spatial_dims == image.ndim:
        batch = normalised[None]
    elif spatial_dims == 2 and image.ndim == 3:
        batch = normalised.permute(3, 0, 1, 2)  # slices along the last axis become the batch
    else:
        raise GanError(f"the segmenter is {spatial_dims}D but the synthetic images are {image.ndim}D")
    with torch.no_grad():
        labels = predict_labels(net, batch.to(device), net.divisor).cpu().numpy()
    return labels[0] if spatial_dims == image.ndim else np.moveaxis(labels, 0, -1)


def evaluate_synthetic(
    synthetic: str | Path,
    real: str | Path | None,
    output: str | Path,
    *,
    intensity_range: Sequence[float] | None = None,
    normalise: str | None = None,
    mask: str | None = None,
    channel: int = 0,
    ssim_mode: str = "2d",
    segmenter: str | Path | None = None,
    grid_cases: int = 4,
    device: str = "cpu",
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Score a synthetic dataset and write ``metrics.json``, ``per_case.csv`` and ``samples.png`` into ``output``.

    Args:
        synthetic: synthetic dataset folder (``dataset.json``, ``manifest.json``).
        real: real images: a dataset folder, folder or glob pattern (see ``gan.slices``),
            whose case ids are the synthetic cases' source cases. ``None`` skips image similarity.
        output: folder for the results.
        intensity_range: ``(low, high)`` that both images are clipped to; the default
            is the fixed range of the generator's output mapping in ``manifest.json``.
        normalise: ``"percentiles"`` maps each image by its own percentiles inside the
            mask to ``[-1, 1]`` before scoring (see the module documentation); it
            excludes ``intensity_range``.
        mask: ``None`` (every voxel), ``"label"`` (foreground of the synthetic label
            map), or a mask file template resolved next to each real image, such as
            ``"brainmask.nii.gz"``.
        channel: modality index of multi-channel real cases.
        ssim_mode: ``"2d"`` or ``"3d"``, see the module documentation.
        segmenter: a segmentation run's ``model.pt``. It adds the Dice of its
            predictions on the synthetic images against the synthetic label maps
            (``dice_*``). For a co-registered real counterpart it also adds the Dice of
            its predictions on the real image against the same label map (``dice_real_*``).
        grid_cases: rows of the PNG grid.
        device: where the segmenter runs.
        on_progress: called after each case with the number of cases done and the total.

    Returns:
        The contents of ``metrics.json``.

    Raises:
        DataError: for unreadable inputs, a real image whose shape differs from its
            synthetic counterpart, or a missing intensity range.
    """
    synthetic, output = Path(synthetic), Path(output)
    dataset, cases, provenance = _synthetic_cases(synthetic)
    reals = _real_volumes(real, channel, mask)
    paired = [case for case in cases if case.co_registered and case.source_case in reals]
    if real is not None and not paired:
        logger.warning("no synthetic case of %s is co-registered with a real case of %s; image similarity is skipped", synthetic, real)
    if normalise is not None:
        if normalise not in NORMALISATIONS:
            raise GanError(f"normalise must be one of {list(NORMALISATIONS)} or None, got {normalise!r}")
        if intensity_range is not None:
            raise GanError("give either an intensity range or a normalisation, not both: a normalised image always spans [-1, 1]")
        intensity_range = (-1.0, 1.0)
    if intensity_range is None and paired:
        intensity_range = default_intensity_range(provenance)
        if intensity_range is None:
            raise DataError(
                f"the generator behind {synthetic} maps intensities per volume, so no fixed intensity range is recorded; "
                "pass --range LOW,HIGH in the images' units, or --normalise percentiles"
            )

    net = None
    if segmenter is not None:
        net, hparams = load_checkpoint(segmenter, map_location=device)
        net = net.to(device)
        if int(hparams.get("in_channels", 1)) != 1:
            raise DataError(f"segmenter {segmenter} expects {hparams['in_channels']} image channels; synthetic images have one")
    classes = sorted(set(dataset.classes) - {0})

    rows = []
    samples = []
    for case in cases:
        image, affine = load_nifti(case.image)
        image = np.asarray(image, dtype=np.float32)
        label = label_to_integer(load_nifti(case.label)[0], case.label) if case.label is not None else None
        row: dict[str, Any] = {"case_id": case.case_id, "source_case": case.source_case}

        real_image = None
        scored = (image, None)
        if case in paired:
            files = reals[case.source_case]
            real_image = _paired_real(files, case, image.shape, affine)
            region = _region(mask, label, files, case, image.shape)
            scored = (image, real_image) if normalise is None else (_percentile_scaled(image, region), _percentile_scaled(real_image, region))
            row.update(image_metrics(scored[0], scored[1], region, intensity_range, ssim_mode=ssim_mode))
            row["mask_voxels"] = int(region.sum()) if region is not None else int(image.size)

        if net is not None and label is not None:
            row.update(_dice_columns(_segment(net, image, device), label, classes, "dice"))
            # The synthetic label map is the source case's, so it also fits the co-registered real image.
            if real_image is not None:
                row.update(_dice_columns(_segment(net, real_image, device), label, classes, "dice_real"))

        rows.append(row)
        if len(samples) < grid_cases:
            samples.append(_grid_sample(case, scored, reals, label, row, normalise))
        if on_progress is not None:
            on_progress(len(rows), len(cases))

    result = {
        "synthetic": str(synthetic),
        "real": None if real is None else str(real),
        "intensity_range": None if intensity_range is None else [float(v) for v in intensity_range],
        "normalise": normalise,
        "mask": mask or "none",
        "ssim": {"mode": ssim_mode, "window": "gaussian", "sigma": SSIM_SIGMA, "k1": 0.01, "k2": 0.03},
        "segmenter": None if segmenter is None else str(segmenter),
        "cases": len(rows),
        "paired_cases": len(paired),
        "mean": _summary(rows),
        "per_case": rows,
    }
    output.mkdir(parents=True, exist_ok=True)
    write_json(output / "metrics.json", _finite_or_none(result))
    write_csv(output / "per_case.csv", rows, list(dict.fromkeys(key for row in rows for key in row)))
    if samples:
        write_grid(output / "samples.png", samples, intensity_range)
    logger.info("evaluated %d synthetic cases (%d with a real counterpart) into %s", len(rows), len(paired), output)
    return result


def _paired_real(files: VolumeFiles, case: SyntheticCaseFiles, shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """Read the real counterpart of a synthetic case and check that it lies on the same voxel grid."""
    real_image, real_affine = _read_real(files)
    if real_image.shape != shape:
        raise DataError(f"real image {files.image} has shape {real_image.shape} but synthetic {case.image} has {shape}; give the co-registered real images")
    if not np.allclose(real_affine, affine, atol=1e-3):
        logger.warning("real image %s and synthetic %s have different affines; comparing voxel by voxel anyway", files.image, case.image)
    return real_image


def _grid_sample(
    case: SyntheticCaseFiles, scored: tuple[np.ndarray, np.ndarray | None], reals: Mapping[str, VolumeFiles], label: np.ndarray | None,
    row: Mapping[str, Any], normalise: str | None,
) -> _Sample:
    """Images of one grid row: the scored pair, or the synthetic image beside its unaligned source image."""
    synthetic, real = scored
    if real is not None:
        return _Sample(case.case_id, real, True, synthetic, label, row)
    real = _unaligned_real(reals, case)
    if normalise is not None:
        synthetic = _percentile_scaled(synthetic, None)
        real = None if real is None else _percentile_scaled(real, None)
    return _Sample(case.case_id, real, False, synthetic, label, row)


def _percentile_scaled(image: np.ndarray, region: np.ndarray | None) -> np.ndarray:
    return np.asarray(Percentiles().fit(image, region).to_model(image), dtype=np.float32)


def _region(mask: str | None, label: np.ndarray | None, files: VolumeFiles, case: SyntheticCaseFiles, shape: tuple[int, ...]) -> np.ndarray | None:
    """Voxels to score: everything, the synthetic label's foreground, or the real case's mask file."""
    if mask is None:
        return None
    if mask == MASK_LABEL:
        if label is None or not (label > 0).any():
            raise DataError(f"synthetic case {case.case_id} has no foreground label; it cannot serve as the mask (choose another --mask)")
        return label > 0
    region = load_nifti(files.mask)[0] > 0
    if region.shape != shape:
        raise DataError(f"mask {files.mask} has shape {region.shape} but the images of case {case.case_id} have {shape}")
    if not region.any():
        raise DataError(f"mask {files.mask} is empty; it must mark the voxels to score")
    return region


def _dice_columns(prediction: np.ndarray, label: np.ndarray, classes: list[int], prefix: str) -> dict[str, float]:
    dice = dice_per_class(torch.from_numpy(prediction), torch.from_numpy(label), classes)
    columns = {f"{prefix}_{value}": score for value, score in dice.items()}
    columns[f"{prefix}_mean"] = float(np.mean(list(dice.values()))) if dice else float("nan")
    return columns


def _unaligned_real(reals: Mapping[str, VolumeFiles], case: SyntheticCaseFiles) -> np.ndarray | None:
    files = reals.get(case.source_case)
    return None if files is None else _read_real(files)[0]


def _summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Summarise every numeric column by its mean, sample standard deviation and count over cases."""
    summary = {}
    for key in dict.fromkeys(key for row in rows for key in row):
        values = [row[key] for row in rows if isinstance(row.get(key), (int, float)) and not isinstance(row.get(key), bool)]
        if not values or key == "mask_voxels":
            continue
        mean, std, count = mean_over_cases([v for v in values if not math.isnan(v)])
        summary[key] = {"mean": mean, "std": std, "cases": count}
    return summary


def _finite_or_none(value: Any) -> Any:
    """Replace infinite and NaN floats by ``None``, since JSON has no such numbers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(item) for item in value]
    return value


def _shown_slice(image: np.ndarray, label: np.ndarray | None) -> int | None:
    """Slice along the last axis with the most foreground (the middle one without labels); ``None`` for 2D."""
    if image.ndim == 2:
        return None
    if label is not None and (label > 0).any():
        return int(np.argmax((label > 0).reshape(-1, label.shape[-1]).sum(axis=0)))
    return image.shape[-1] // 2


def _display_range(sample: _Sample, intensity_range: Sequence[float] | None) -> tuple[float, float]:
    if intensity_range is not None:
        return float(intensity_range[0]), float(intensity_range[1])
    values = sample.synthetic if sample.real is None else np.concatenate([sample.synthetic.ravel(), sample.real.ravel()])
    low, high = np.percentile(values, [1, 99])
    return float(low), float(max(high, low + 1e-6))


def write_grid(path: Path, samples: Sequence[_Sample], intensity_range: Sequence[float] | None) -> Path:
    """Write a PNG with one row per case: real image, synthetic image, synthetic image with label contours.

    Real and synthetic images of a row share one grey scale: the intensity range
    when given, else the 1st to 99th percentile of both. A real image that is not
    co-registered (its label map was deformed) is titled "source, not aligned".
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(samples), 3, figsize=(9, 3 * len(samples)), squeeze=False)
    for row, sample in zip(axes, samples):
        index = _shown_slice(sample.synthetic, sample.label)

        def cut(volume: np.ndarray | None) -> np.ndarray | None:
            if volume is None:
                return None
            return (volume if index is None else volume[..., index]).T  # x to the right, y upwards with origin="lower"

        low, high = _display_range(sample, intensity_range)
        real, synthetic, label = cut(sample.real), cut(sample.synthetic), cut(sample.label)
        where = "" if index is None else f", slice {index}"
        if real is not None:
            row[0].imshow(real, cmap="gray", vmin=low, vmax=high, origin="lower")
            row[0].set_title(f"real{where}" if sample.aligned else f"real source, not aligned{where}", fontsize=8)
        else:
            row[0].text(0.5, 0.5, "no real image", ha="center", va="center", fontsize=8)
        scores = ", ".join(f"{name.upper()} {sample.scores[name]:.3g}" for name in ("ssim", "psnr", "mae") if name in sample.scores)
        row[1].imshow(synthetic, cmap="gray", vmin=low, vmax=high, origin="lower")
        row[1].set_title(f"{sample.case_id}\n{scores}" if scores else sample.case_id, fontsize=8)
        row[2].imshow(synthetic, cmap="gray", vmin=low, vmax=high, origin="lower")
        if label is not None and (label > 0).any():
            row[2].contour(label, levels=np.arange(0.5, int(label.max()) + 0.5), linewidths=0.8, cmap="autumn")
        row[2].set_title("synthetic + label", fontsize=8)
        for axis in row:
            axis.set_axis_off()
    figure.tight_layout()
    atomic_write(path, lambda handle: figure.savefig(handle, format="png", dpi=100), binary=True)
    plt.close(figure)
    return path
