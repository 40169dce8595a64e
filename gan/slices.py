"""2D slices of 3D volumes for GAN training and slice-by-slice inference.

A *domain* is one of:

- a Decathlon / nnU-Net raw dataset folder (with ``dataset.json``); ``channel``
  picks the modality and the labels come from ``labelsTr``,
- a folder of NIfTI files, one case per file,
- a glob pattern such as ``data/BraTS/train/*/Flair.nii.gz``, or the path of one file.

For folders and patterns, ``labels`` and ``mask`` name each case's label map and
mask file with a template resolved in the image's folder: ``{stem}`` is the image
file name without ``.nii``/``.nii.gz``. For example ``"{stem}_seg.nii.gz"`` pairs
``ct.nii.gz`` with ``ct_seg.nii.gz``, and ``"brainmask.nii.gz"`` finds a mask next to
each image.

Volumes are mapped to the generator range with ``gan.intensity`` once when
loaded, and the slice axis is moved last, so a loaded volume is ``(X, Y, Z)`` with
slices ``[:, :, k]``. With ``context = c`` a sample stacks slices ``k - c .. k + c``
as channels, repeating the first or last slice at the volume's edges (2.5D).
"""

from __future__ import annotations

import glob
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from segment.data.io import label_to_integer, load_nifti
from segment.data.msd import MSDDataset
from segment.errors import DataError

from .errors import GanError
from .intensity import Intensity

logger = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii.gz", ".nii")


def nifti_stem(path: str | Path) -> str:
    """Return the file name without its ``.nii.gz`` or ``.nii`` suffix."""
    name = Path(path).name
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


@dataclass(frozen=True)
class VolumeFiles:
    """Files of one case of a domain: the image, and optionally its label map and mask.

    ``channel`` selects one image of a multi-channel case: the position in a list of
    per-channel files, or the index along the last axis of a 4D image.
    """

    case_id: str
    image: Path
    label: Path | None = None
    mask: Path | None = None
    channel: int = 0


@dataclass
class SliceVolume:
    """One loaded case in the generator range, slice axis last.

    ``image`` is ``(X, Y, Z)`` float32 in ``[-1, 1]``, ``label`` the integer label map
    and ``mask`` the boolean foreground (``None`` when absent). ``intensity`` is the
    state of the mapping fitted to this volume and ``affine`` the source affine.
    """

    case_id: str
    image: np.ndarray
    label: np.ndarray | None
    mask: np.ndarray | None
    affine: np.ndarray
    intensity: dict[str, Any]
    axis: int

    @property
    def depth(self) -> int:
        return int(self.image.shape[-1])


def _resolve_template(template: str | None, image: Path, kind: str, *, required: bool) -> Path | None:
    if template is None:
        return None
    path = image.parent / template.format(stem=nifti_stem(image))
    if not path.is_file():
        if required:
            raise DataError(f"{kind} file not found: {path} (template {template!r} for image {image}); fix the template or add the file")
        return None
    return path


def _unique_case_ids(images: Sequence[Path], where: str) -> list[str]:
    stems = [nifti_stem(path) for path in images]
    if len(set(stems)) == len(stems):
        return stems
    # Patterns such as train/*/Flair.nii.gz give one file name per case folder.
    folders = [path.parent.name for path in images]
    if len(set(folders)) == len(folders):
        return folders
    raise DataError(f"{where}: cannot name cases uniquely by file name or by folder; give each case its own file name or folder")


def find_volumes(
    domain: str | Path,
    *,
    channel: int = 0,
    labels: str | None = None,
    mask: str | None = None,
) -> list[VolumeFiles]:
    """List the cases of a domain (dataset folder, NIfTI folder, glob pattern or single file).

    Args:
        domain: see the module documentation.
        channel: modality index for multi-channel cases.
        labels: label file template for folders and patterns (``{stem}`` is the image
            name without suffix). Every case must then have its label file.
        mask: mask file template, resolved the same way; every case must have it.

    Raises:
        DataError: when nothing matches, or a label or mask file is missing.
    """
    text = str(domain)
    path = Path(text).expanduser()

    if path.is_dir() and (path / "dataset.json").is_file():
        dataset = MSDDataset(path)
        volumes = []
        for case in dataset.cases:
            if len(case.images) > 1:
                # One file per channel (nnU-Net naming): pick the file, then read it whole.
                if channel >= len(case.images):
                    raise DataError(f"case {case.case_id} of {path} has {len(case.images)} channels; channel {channel} does not exist")
                image, file_channel = case.images[channel], 0
            else:
                image, file_channel = case.images[0], channel
            volumes.append(VolumeFiles(case.case_id, image, case.label, _resolve_template(mask, image, "mask", required=True), file_channel))
        return volumes

    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.name.endswith(NIFTI_SUFFIXES) and p.is_file())
    elif path.is_file():
        images = [path]
    else:
        images = sorted(Path(p) for p in glob.glob(str(path)) if Path(p).is_file())
    if not images:
        raise DataError(f"no NIfTI images found for domain {text}; give a dataset folder, a folder of .nii.gz files, or a glob pattern that matches files")

    # A folder that contains images and their label maps or masks side by side lists those files too.
    companions = {
        image.parent / template.format(stem=nifti_stem(image))
        for image in images
        for template in (labels, mask)
        if template is not None
    }
    images = [image for image in images if image not in companions]
    case_ids = _unique_case_ids(images, text)
    return [
        VolumeFiles(
            case_id,
            image,
            _resolve_template(labels, image, "label", required=True),
            _resolve_template(mask, image, "mask", required=True),
            channel,
        )
        for case_id, image in zip(case_ids, images)
    ]


def select_cases(volumes: Sequence[VolumeFiles], cases: Sequence[str] | None, domain: str | Path) -> list[VolumeFiles]:
    """Keep the volumes whose case id is in ``cases`` (all when ``cases`` is ``None``).

    Raises:
        DataError: when a requested case is not in the domain, or ``cases`` is empty.
    """
    if cases is None:
        return list(volumes)
    requested = list(dict.fromkeys(cases))
    if not requested:
        raise DataError(f"the case list for {domain} is empty; give at least one case id or none to use every case")
    known = {volume.case_id: volume for volume in volumes}
    missing = [case for case in requested if case not in known]
    if missing:
        raise DataError(f"cases {missing[:5]} are not in {domain}; known cases include {sorted(known)[:5]}")
    return [known[case] for case in requested]


def _read_image(files: VolumeFiles) -> tuple[np.ndarray, np.ndarray]:
    array, affine = load_nifti(files.image)
    if array.ndim == 4:
        if files.channel >= array.shape[-1]:
            raise DataError(f"image {files.image} has {array.shape[-1]} channels on its last axis; channel {files.channel} does not exist")
        array = array[..., files.channel]
    elif array.ndim == 2:
        array = array[..., None]
    elif array.ndim != 3:
        raise DataError(f"image {files.image} has shape {array.shape}; expected a 2D, 3D or 4D (multi-channel) volume")
    if not np.issubdtype(array.dtype, np.number) or not np.all(np.isfinite(array)):
        raise DataError(f"image {files.image} contains NaN, infinite or non-numeric voxels; fix or remove the case {files.case_id}")
    return np.asarray(array), affine


def _read_companion(path: Path, shape: tuple[int, ...], image: Path) -> np.ndarray:
    array, _ = load_nifti(path)
    if array.ndim == 2:
        array = array[..., None]
    if array.shape != shape:
        raise DataError(f"{path} has shape {array.shape} but image {image} has shape {shape}; they must share one voxel grid")
    return array


def load_volume(files: VolumeFiles, intensity: Intensity, *, axis: int = -1) -> SliceVolume:
    """Load one case, fit ``intensity`` to it (inside its mask when there is one) and map it to ``[-1, 1]``.

    Raises:
        DataError: when a file is unreadable, contains NaN or infinite voxels, or disagrees in shape with the image.
    """
    array, affine = _read_image(files)
    if not -3 <= axis <= 2:
        raise GanError(f"slice axis must be 0, 1 or 2 (or -1, -2, -3), got {axis}")

    label = None
    if files.label is not None:
        label = label_to_integer(_read_companion(files.label, array.shape, files.image), files.label)
    mask = None
    if files.mask is not None:
        mask = _read_companion(files.mask, array.shape, files.image) > 0
        if not mask.any():
            raise DataError(f"mask {files.mask} is empty; it must mark the foreground of {files.image}")

    try:
        fitted = intensity.fit(array, mask)
    except GanError as error:
        raise DataError(f"cannot map the intensities of {files.image}: {error}") from error
    image = fitted.to_model(array)
    return SliceVolume(
        files.case_id,
        _slice_axis_last(image, axis),
        _slice_axis_last(label, axis),
        _slice_axis_last(mask, axis),
        affine,
        fitted.state(),
        axis % 3,
    )


def _slice_axis_last(volume: np.ndarray | None, axis: int) -> np.ndarray | None:
    return None if volume is None else np.ascontiguousarray(np.moveaxis(volume, axis, -1))


def load_domain(
    domain: str | Path,
    intensity: Intensity,
    *,
    channel: int = 0,
    labels: str | None = None,
    mask: str | None = None,
    cases: Sequence[str] | None = None,
    axis: int = -1,
) -> list[SliceVolume]:
    """Find, select and load the cases of a domain; see ``find_volumes`` and ``load_volume``."""
    volumes = select_cases(find_volumes(domain, channel=channel, labels=labels, mask=mask), cases, domain)
    logger.info("loading %d volumes of %s", len(volumes), domain)
    return [load_volume(files, intensity, axis=axis) for files in volumes]


def context_indices(index: int, depth: int, context: int) -> list[int]:
    """Slice indices ``index - context .. index + context``, clamped to ``[0, depth - 1]``."""
    return [min(max(index + offset, 0), depth - 1) for offset in range(-context, context + 1)]


def stack_slices(volume: np.ndarray, indices: Sequence[int], context: int) -> np.ndarray:
    """Return ``(len(indices), 2 * context + 1, X, Y)``: each slice with its neighbours as channels."""
    depth = volume.shape[-1]
    return np.stack([np.moveaxis(volume[..., context_indices(index, depth, context)], -1, 0) for index in indices])


def map_slices(
    volume: np.ndarray,
    function: Callable[[Tensor], Tensor],
    *,
    context: int = 0,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Apply ``function`` to every slice of ``volume`` (slice axis last) in batches and restack the results.

    ``function`` receives ``(B, 2 * context + 1, X, Y)`` tensors on ``device`` with the
    volume's dtype and returns ``(B, 1, X, Y)``; the result is ``(X, Y, Z)`` on the CPU.
    """
    if batch_size < 1:
        raise GanError(f"batch_size must be at least 1, got {batch_size}")
    outputs = []
    depth = volume.shape[-1]
    for start in range(0, depth, batch_size):
        indices = list(range(start, min(start + batch_size, depth)))
        batch = torch.from_numpy(stack_slices(volume, indices, context)).to(device)
        result = function(batch)
        if result.ndim != 4 or result.shape[1] != 1 or result.shape[0] != len(indices):
            raise GanError(f"slice function must return ({len(indices)}, 1, X, Y), got {tuple(result.shape)}")
        outputs.append(result[:, 0].detach().cpu().numpy())
    return np.moveaxis(np.concatenate(outputs), 0, -1)


def _crop_or_pad(array: np.ndarray, size: tuple[int, int], offset: tuple[int, int]) -> np.ndarray:
    """Cut ``size`` out of the last two axes starting at ``offset``; where it leaves the array, repeat the edge pixels.

    Edge repetition matches the padding the generators apply to inputs whose size is
    not a multiple of their downsampling factor. A constant fill would teach a
    conditional GAN that background labels next to the padding are dark.
    """
    source = []
    widths = [(0, 0)] * (array.ndim - 2)
    for axis_size, length, start in zip(array.shape[-2:], size, offset):
        low = max(start, 0)
        high = min(start + length, axis_size)
        source.append(slice(low, high))
        widths.append((low - start, start + length - high))
    return np.pad(array[(..., *source)], widths, mode="edge")


def _crop_offset(shape: tuple[int, int], size: tuple[int, int], rng: np.random.Generator | None) -> tuple[int, int]:
    """Centre offset, or a random one when ``rng`` is given; negative where the slice is smaller than ``size``."""
    offsets = []
    for axis_size, length in zip(shape, size):
        if axis_size <= length or rng is None:
            offsets.append((axis_size - length) // 2)
        else:
            offsets.append(int(rng.integers(0, axis_size - length + 1)))
    return offsets[0], offsets[1]


class SliceDataset(Dataset):
    """2D (or 2.5D) samples from a list of loaded volumes.

    Args:
        volumes: loaded volumes (``load_domain``).
        context: neighbouring slices on each side, stacked as channels (0: pure 2D).
        size: ``(X, Y)`` of every sample: larger slices are cropped, smaller ones
            padded by repeating their edge pixels. ``None`` keeps
            each slice's own size, which only works with batch size 1 for mixed sizes.
        min_foreground: keep a slice only when more than this fraction of its pixels
            is foreground: inside the mask where a volume has one, else above the
            volume's minimum intensity. ``None`` keeps every slice.

    Items are mappings with ``image`` ``(2c+1, X, Y)`` float32, ``label``
    ``(2c+1, X, Y)`` int64 when the volumes have label maps, ``case_id`` and ``slice``.
    """

    def __init__(
        self,
        volumes: Sequence[SliceVolume],
        *,
        context: int = 0,
        size: int | tuple[int, int] | None = None,
        min_foreground: float | None = 0.0,
    ) -> None:
        if not volumes:
            raise DataError("no volumes to take slices from; check the domain path and the case list")
        if not isinstance(context, int) or context < 0:
            raise GanError(f"context must be a non-negative integer, got {context!r}")
        self.volumes = list(volumes)
        self.context = context
        if isinstance(size, int):
            size = (size, size)
        self.size = tuple(size) if size is not None else None
        self.has_labels = all(volume.label is not None for volume in self.volumes)
        self._minimum = [float(volume.image.min()) for volume in self.volumes]
        self.index = self._keep_slices(min_foreground)
        if not self.index:
            raise DataError(f"no slice of the {len(self.volumes)} volumes has more than {min_foreground} foreground; lower min_foreground")

    def _keep_slices(self, min_foreground: float | None) -> list[tuple[int, int]]:
        index = []
        for volume_index, volume in enumerate(self.volumes):
            if min_foreground is None:
                index.extend((volume_index, k) for k in range(volume.depth))
                continue
            foreground = volume.mask if volume.mask is not None else volume.image > self._minimum[volume_index]
            fractions = foreground.reshape(-1, volume.depth).mean(axis=0)
            kept = np.nonzero(fractions > min_foreground)[0]
            index.extend((volume_index, int(k)) for k in kept)
        return index

    @property
    def case_ids(self) -> list[str]:
        return [volume.case_id for volume in self.volumes]

    def __len__(self) -> int:
        return len(self.index)

    def sample(self, position: int, rng: np.random.Generator | None = None) -> dict[str, Any]:
        """Return item ``position``, cropped at a random offset drawn from ``rng`` (centred when ``rng`` is ``None``)."""
        volume_index, k = self.index[position]
        volume = self.volumes[volume_index]
        image = stack_slices(volume.image, [k], self.context)[0]
        label = stack_slices(volume.label, [k], self.context)[0] if self.has_labels else None
        if self.size is not None:
            offset = _crop_offset(image.shape[-2:], self.size, rng)
            image = _crop_or_pad(image, self.size, offset)
            label = _crop_or_pad(label, self.size, offset) if label is not None else None

        item: dict[str, Any] = {"image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)), "case_id": volume.case_id, "slice": k}
        if label is not None:
            item["label"] = torch.from_numpy(np.ascontiguousarray(label, dtype=np.int64))
        return item

    def __getitem__(self, position: int) -> dict[str, Any]:
        return self.sample(position)


class RandomSlices(Dataset):
    """``length`` random slices of ``dataset`` at random crop offsets; item ``i`` depends only on ``(seed, i)``."""

    def __init__(self, dataset: SliceDataset, length: int, seed: int) -> None:
        self.dataset = dataset
        self.length = length
        self.seed = seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, i])
        return self.dataset.sample(int(rng.integers(len(self.dataset))), rng)


class UnpairedSlices(Dataset):
    """``length`` pairs of independent random slices from two domains: ``{"a": item of A, "b": item of B}``."""

    def __init__(self, domain_a: SliceDataset, domain_b: SliceDataset, length: int, seed: int) -> None:
        self.domain_a = domain_a
        self.domain_b = domain_b
        self.length = length
        self.seed = seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, i])
        a = self.domain_a.sample(int(rng.integers(len(self.domain_a))), rng)
        b = self.domain_b.sample(int(rng.integers(len(self.domain_b))), rng)
        return {"a": a, "b": b}
