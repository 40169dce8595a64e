"""``medaug segment``: predict label maps with a trained run, and evaluate them against references."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import torch
import typer
from rich.console import Console
from rich.progress import track

from .checkpoint import load_checkpoint
from .data.io import label_to_integer, load_nifti, save_nifti, spacing_from_affine
from .data.msd import MSDDataset
from .data.normalize import normalize_intensity
from .errors import DataError
from .files import write_csv
from .inference import predict_labels
from .metrics import dice_per_class, hd95_per_class, mean_over_cases

logger = logging.getLogger(__name__)
console = Console(stderr=True)

app = typer.Typer(help="Predict with a trained run and evaluate predictions.", no_args_is_help=True)

NIFTI = ".nii.gz"


def _read_case_list(path: Path) -> list[str]:
    """Case ids from a run's ``config.json`` (its validation cases) or a text file, one id per line."""
    if not path.is_file():
        raise DataError(f"case list not found: {path}")
    if path.suffix == ".json":
        config = json.loads(path.read_text())
        if "val_cases" not in config:
            raise DataError(f"{path} has no 'val_cases'; give a run's config.json or a text file of case ids")
        cases = list(config["val_cases"])
    else:
        cases = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not cases:
        raise DataError(f"case list {path} is empty; list one case id per line")
    return cases


def _case_files(folder: Path) -> dict[str, list[Path]]:
    """Image files of a plain folder by case id; ``case_0000.nii.gz``-style channel files are grouped."""
    by_case: dict[str, list[Path]] = {}
    for path in sorted(folder.glob(f"*{NIFTI}")):
        case_id = path.name[: -len(NIFTI)]
        if len(case_id) > 5 and case_id[-5] == "_" and case_id[-4:].isdigit():
            case_id = case_id[:-5]
        by_case.setdefault(case_id, []).append(path)
    return by_case


def iter_images(source: Path, cases: list[str] | None) -> Iterator[tuple[str, np.ndarray, np.ndarray, Path]]:
    """Yield ``(case id, normalised (C, *S) image, affine, first image file)`` from a dataset or plain folder."""
    if (source / "dataset.json").is_file():
        dataset = MSDDataset(source)
        for case_id in cases or [c.case_id for c in dataset.cases]:
            case = dataset.load(case_id)
            yield case_id, case.image, case.affine, dataset.case_files(case_id).images[0]
        return
    if not source.is_dir():
        raise DataError(f"input folder not found: {source}")
    files = _case_files(source)
    if not files:
        raise DataError(f"no {NIFTI} images in {source}")
    missing = sorted(set(cases or []) - set(files))
    if missing:
        raise DataError(f"cases {missing[:5]} have no image in {source}")
    for case_id in cases or sorted(files):
        arrays = [load_nifti(path) for path in files[case_id]]
        image = np.stack([array for array, _ in arrays])
        if not np.all(np.isfinite(image)):
            raise DataError(f"image {files[case_id][0]} contains NaN or infinite voxels")
        yield case_id, normalize_intensity(image), arrays[0][1], files[case_id][0]


@app.command("predict")
def predict_command(
    checkpoint: Annotated[Path, typer.Argument(help="A run's model.pt.")],
    source: Annotated[Path, typer.Argument(help="Decathlon dataset folder (with dataset.json) or a folder of NIfTI images.")],
    output: Annotated[Path, typer.Argument(help="Folder for the predicted label maps, one <case id>.nii.gz each.")],
    cases: Annotated[Optional[Path], typer.Option(help="Only these cases: a run's config.json (its validation cases) or a text file of ids.")] = None,
    patch_size: Annotated[Optional[str], typer.Option(help="Predict with Gaussian-weighted sliding windows of this size in voxels, e.g. 32,48,32; default: the whole image at once.")] = None,
    overlap: Annotated[float, typer.Option(help="Overlap of neighbouring sliding windows, as a fraction of the window.")] = 0.5,
    tta: Annotated[bool, typer.Option("--tta", help="Average the softmax over all axis flips (test-time augmentation).")] = False,
) -> None:
    """Predict label maps that carry each source image's affine."""
    net, hparams = load_checkpoint(checkpoint)
    divisor = net.divisor
    case_ids = _read_case_list(cases) if cases else None
    window = _parse_patch_size(patch_size, net.spatial_dims)
    if not 0.0 <= overlap < 1.0:
        raise DataError(f"--overlap must be in [0, 1), got {overlap}")
    written = 0
    for case_id, image, affine, _ in track(list(iter_images(source, case_ids)), description="predicting", console=console):
        with torch.no_grad():
            labels = predict_labels(net, torch.from_numpy(image)[None], divisor, patch_size=window, overlap=overlap, flip_tta=tta)[0]
        save_nifti(output / f"{case_id}{NIFTI}", labels.numpy(), affine, label=True)
        written += 1
    console.print(f"wrote {written} label maps to {output}")


def _parse_patch_size(text: str | None, spatial_dims: int) -> list[int] | None:
    if text is None:
        return None
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError as error:
        raise DataError(f"--patch-size must be whole numbers separated by commas, e.g. 32,48,32; got {text!r}") from error
    if any(size < 1 for size in sizes) or len(sizes) != spatial_dims:
        raise DataError(f"--patch-size needs {spatial_dims} positive sizes for this model, got {text!r}")
    return sizes


def _reference_labels(reference: Path) -> tuple[dict[str, Path], set[int] | None]:
    if (reference / "dataset.json").is_file():
        dataset = MSDDataset(reference)
        return {c.case_id: c.label for c in dataset.cases if c.label is not None}, set(dataset.classes)
    if not reference.is_dir():
        raise DataError(f"reference folder not found: {reference}")
    return {path.name[: -len(NIFTI)]: path for path in sorted(reference.glob(f"*{NIFTI}"))}, None


@app.command("evaluate")
def evaluate_command(
    predictions: Annotated[Path, typer.Argument(help="Folder of predicted <case id>.nii.gz label maps.")],
    reference: Annotated[Path, typer.Argument(help="Decathlon dataset folder (labels from dataset.json) or a folder of reference label maps.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Per-case CSV to write.")] = Path("per_case.csv"),
) -> None:
    """Score every prediction against its reference: Dice per case and class, then the mean over cases."""
    if not predictions.is_dir():
        raise DataError(f"predictions folder not found: {predictions}")
    references, declared = _reference_labels(reference)
    predicted = {path.name[: -len(NIFTI)]: path for path in sorted(predictions.glob(f"*{NIFTI}"))}
    if not predicted:
        raise DataError(f"no {NIFTI} label maps in {predictions}")
    unmatched = sorted(set(predicted) - set(references))
    if unmatched:
        raise DataError(f"predictions {unmatched[:5]} have no reference in {reference}")

    rows = []
    for case_id, path in predicted.items():
        prediction, prediction_affine = load_nifti(path)
        truth, truth_affine = load_nifti(references[case_id])
        if prediction.shape != truth.shape:
            raise DataError(f"prediction {path} has shape {prediction.shape} but reference {references[case_id]} has {truth.shape}")
        if not np.allclose(prediction_affine, truth_affine, atol=1e-4):
            raise DataError(f"prediction {path} and reference {references[case_id]} have different affines")
        truth = label_to_integer(truth, references[case_id], declared)
        prediction = label_to_integer(prediction, path)
        # Without dataset.json, score every class found in either map, so false
        # positives of a class absent from the reference count as Dice 0.
        found = set(np.unique(truth).tolist()) | set(np.unique(prediction).tolist())
        classes = sorted(declared - {0}) if declared else sorted(found - {0})
        predicted_tensor, truth_tensor = torch.from_numpy(prediction), torch.from_numpy(truth)
        dice = dice_per_class(predicted_tensor, truth_tensor, classes)
        hd95 = hd95_per_class(predicted_tensor, truth_tensor, classes, spacing_from_affine(truth_affine)[: truth.ndim].tolist())
        row = {"case_id": case_id, **{f"dice_{c}": v for c, v in dice.items()}}
        row["dice_mean"] = float(np.mean(list(dice.values()))) if dice else float("nan")
        row.update({f"hd95_{c}": v for c, v in hd95.items()})
        row["hd95_mean"] = float(np.mean(list(hd95.values()))) if hd95 else float("nan")
        rows.append(row)

    write_csv(output, rows)
    mean, std, count = mean_over_cases([row["dice_mean"] for row in rows])
    hd95_mean = mean_over_cases([row["hd95_mean"] for row in rows])[0]
    console.print(f"mean foreground Dice {mean:.4f} ± {std:.4f}, mean HD95 {hd95_mean:.2f} mm, over {count} cases; per case: {output}")
