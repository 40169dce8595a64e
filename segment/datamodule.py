"""Lightning data module: random patches of in-memory cases for training, whole volumes for validation.

With ``slice_axis`` set, training patches are 2D: a random slice of a 3D case
along that axis, with ``slice_context`` neighbouring slices on each side as
extra channels (see ``segment.slices``). Validation still yields whole 3D cases.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from .data.msd import Case
from .slices import slice_stack


def _crop_or_pad(image: np.ndarray, label: np.ndarray, patch_size: Sequence[int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random window of ``patch_size`` from a ``(C, *S)`` image and its label; axes shorter than the patch are padded.

    The image is padded with its per-channel minimum and the label with background.
    """
    pads = [(0, 0)]
    for size, target in zip(image.shape[1:], patch_size):
        extra = max(target - size, 0)
        before = int(rng.integers(0, extra + 1)) if extra else 0
        pads.append((before, extra - before))
    if any(p != (0, 0) for p in pads):
        minimum = image.reshape(image.shape[0], -1).min(axis=1)
        image = np.stack([np.pad(channel, pads[1:], constant_values=m) for channel, m in zip(image, minimum)])
        label = np.pad(label, pads, constant_values=0)

    starts = [int(rng.integers(0, size - target + 1)) for size, target in zip(image.shape[1:], patch_size)]
    window = (slice(None),) + tuple(slice(s, s + t) for s, t in zip(starts, patch_size))
    return image[window], label[window]


class WorkerTransform(Protocol):
    """Per-sample image transform run in DataLoader workers, such as ``augment.MRIArtifacts``.

    It receives the cropped ``(C, *S)`` image, the case's spacing in millimetres,
    the dataset seed and the item index, and returns an image of the same shape.
    It must be deterministic given ``(seed, index)``.
    """

    def __call__(self, image: Tensor, *, spacing: np.ndarray, seed: int, index: int) -> Tensor: ...


class PatchDataset(Dataset):
    """``length`` random patches; item ``i`` is reproducible from ``(seed, i)`` alone.

    Cases are visited in passes: each pass is a fresh permutation of all cases,
    so every case is seen equally often whatever the number of workers.
    ``worker_transform``, when given, is applied to the cropped image only. The
    label is never passed to it.

    With ``slice_axis`` set, every item is a 2D patch of a random slice along
    that spatial axis of a 3D case, with ``slice_context`` neighbouring slices
    on each side stacked as channels, and its spacing is the in-plane spacing.
    """

    def __init__(
        self,
        cases: Sequence[Case],
        patch_size: Sequence[int],
        length: int,
        seed: int,
        *,
        worker_transform: WorkerTransform | None = None,
        slice_axis: int | None = None,
        slice_context: int = 0,
    ) -> None:
        if not cases:
            raise ValueError("PatchDataset needs at least one case")
        self.cases = list(cases)
        self.patch_size = tuple(int(n) for n in patch_size)
        self.length = int(length)
        self.seed = int(seed)
        self.worker_transform = worker_transform
        self.slice_axis = slice_axis
        self.slice_context = int(slice_context)
        if slice_axis is not None:
            _check_slicing(self.cases, self.patch_size, slice_axis, self.slice_context)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        n = len(self.cases)
        order = np.random.default_rng((self.seed, index // n, 0)).permutation(n)
        case = self.cases[int(order[index % n])]
        image, label, spacing = case.image, case.label, case.spacing
        if self.slice_axis is not None:
            image, label, spacing = self._random_slice(case, index)
        image, label = _crop_or_pad(image, label, self.patch_size, np.random.default_rng((self.seed, index, 1)))
        image = torch.from_numpy(np.ascontiguousarray(image))
        if self.worker_transform is not None:
            image = self.worker_transform(image, spacing=spacing, seed=self.seed, index=index)
        return {
            "image": image,
            "label": torch.from_numpy(np.ascontiguousarray(label)),
            "spacing": torch.from_numpy(spacing.astype(np.float64)),
            "case_id": case.case_id,
        }

    def _random_slice(self, case: Case, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Slice of ``case`` drawn uniformly along ``slice_axis``: stacked image, label and in-plane spacing."""
        axis = self.slice_axis
        position = int(np.random.default_rng((self.seed, index, 2)).integers(0, case.image.shape[axis + 1]))
        image = slice_stack(case.image, axis, position, self.slice_context)
        label = np.take(case.label, [position], axis=axis + 1).squeeze(axis + 1)
        return image, label, np.delete(case.spacing, axis)


def _check_slicing(cases: Sequence[Case], patch_size: tuple[int, ...], axis: int, context: int) -> None:
    if axis not in (0, 1, 2):
        raise ValueError(f"slice_axis must be 0, 1 or 2 (a spatial axis of a 3D case), got {axis}")
    if context < 0:
        raise ValueError(f"slice_context must be 0 or more, got {context}")
    if len(patch_size) != 2:
        raise ValueError(f"patch_size {list(patch_size)} must have 2 sizes when training on slices")
    for case in cases:
        if case.image.ndim != 4:
            raise ValueError(f"case {case.case_id} has image shape {case.image.shape}; slice training needs 3D cases (C, X, Y, Z)")


class VolumeDataset(Dataset):
    """Whole cases, one per item, for validation and prediction."""

    def __init__(self, cases: Sequence[Case]) -> None:
        self.cases = list(cases)

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> dict:
        case = self.cases[index]
        return {
            "image": torch.from_numpy(case.image),
            "label": torch.from_numpy(case.label),
            "spacing": torch.from_numpy(case.spacing.astype(np.float64)),
            "case_id": case.case_id,
        }


class SegmentationDataModule(L.LightningDataModule):
    """Training patches and validation volumes from loaded cases.

    Args:
        train_cases: cases to sample training patches from.
        val_cases: cases validated whole, one per batch (their shapes differ).
        patch_size: training patch size in voxels.
        batch_size: training batch size.
        max_steps: training steps; the training set yields exactly
            ``max_steps * batch_size`` patches.
        seed: seed of patch positions and case order.
        num_workers: DataLoader worker processes; 0 loads in the main process,
            which is fastest when the cases are already in memory.
        worker_transform: per-sample image transform of the training patches,
            see ``PatchDataset``, for example ``augment.build_worker_transform(strategy)``.
        slice_axis: train on 2D slices along this spatial axis of 3D cases;
            ``None`` trains on patches of the cases' own dimension.
        slice_context: neighbouring slices on each side stacked as channels.
    """

    def __init__(
        self,
        train_cases: Sequence[Case],
        val_cases: Sequence[Case],
        *,
        patch_size: Sequence[int],
        batch_size: int,
        max_steps: int,
        seed: int,
        num_workers: int = 0,
        worker_transform: WorkerTransform | None = None,
        slice_axis: int | None = None,
        slice_context: int = 0,
    ) -> None:
        super().__init__()
        self.train_set = PatchDataset(
            train_cases,
            patch_size,
            max_steps * batch_size,
            seed,
            worker_transform=worker_transform,
            slice_axis=slice_axis,
            slice_context=slice_context,
        )
        self.val_set = VolumeDataset(val_cases)
        self.batch_size = batch_size
        self.num_workers = num_workers

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=1, shuffle=False, num_workers=self.num_workers)
