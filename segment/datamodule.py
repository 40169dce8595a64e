"""Lightning data module: random patches of in-memory cases for training, whole volumes for validation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from .data.msd import Case


def _crop_or_pad(case: Case, patch_size: Sequence[int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random window of ``patch_size`` from ``case``; axes shorter than the patch are padded.

    The image is padded with its per-channel minimum and the label with background.
    """
    image, label = case.image, case.label
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
    """

    def __init__(
        self,
        cases: Sequence[Case],
        patch_size: Sequence[int],
        length: int,
        seed: int,
        *,
        worker_transform: WorkerTransform | None = None,
    ) -> None:
        if not cases:
            raise ValueError("PatchDataset needs at least one case")
        self.cases = list(cases)
        self.patch_size = tuple(int(n) for n in patch_size)
        self.length = int(length)
        self.seed = int(seed)
        self.worker_transform = worker_transform

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        n = len(self.cases)
        order = np.random.default_rng((self.seed, index // n, 0)).permutation(n)
        case = self.cases[int(order[index % n])]
        image, label = _crop_or_pad(case, self.patch_size, np.random.default_rng((self.seed, index, 1)))
        image = torch.from_numpy(np.ascontiguousarray(image))
        if self.worker_transform is not None:
            image = self.worker_transform(image, spacing=case.spacing, seed=self.seed, index=index)
        return {
            "image": image,
            "label": torch.from_numpy(np.ascontiguousarray(label)),
            "spacing": torch.from_numpy(case.spacing.astype(np.float64)),
            "case_id": case.case_id,
        }


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
    ) -> None:
        super().__init__()
        self.train_set = PatchDataset(train_cases, patch_size, max_steps * batch_size, seed, worker_transform=worker_transform)
        self.val_set = VolumeDataset(val_cases)
        self.batch_size = batch_size
        self.num_workers = num_workers

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=1, shuffle=False, num_workers=self.num_workers)
