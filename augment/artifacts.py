"""MRI artifacts from TorchIO, applied per sample to the image in DataLoader workers.

TorchIO simulates motion, ghosting, spikes and bias fields through Fourier-space
and resampling operations on one image at a time, so these artifacts run on the
CPU in the DataLoader workers rather than on the batch on the training device.
They change the image only: the hook in ``segment.datamodule.PatchDataset`` never
passes the label to them.

TorchIO draws its random parameters (and its probability ``p``) from PyTorch's
global generator. ``MRIArtifacts`` seeds that generator from ``(seed, sample
index)`` inside ``torch.random.fork_rng``, so item ``i`` of a run gets the same
artifacts in any worker and the worker's own random state is left untouched.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torchio as tio
from torch import Tensor

from .seeding import derive_seed

__all__ = ["ARTIFACTS", "MRIArtifacts", "artifact_keys"]

ARTIFACTS: dict[str, type[tio.Transform]] = {
    "motion": tio.RandomMotion,
    "ghosting": tio.RandomGhosting,
    "spike": tio.RandomSpike,
    "bias_field": tio.RandomBiasField,
}

# Third key of derive_seed(seed, index, key), so the artifact stream of an item never
# coincides with another stream derived from the same (seed, index).
_ARTIFACT_STREAM = 3


def artifact_keys(name: str) -> set[str]:
    """Keyword arguments accepted for artifact ``name``: the TorchIO class's own ones and ``p``."""
    parameters = inspect.signature(ARTIFACTS[name].__init__).parameters.values()
    named = {p.name for p in parameters if p.name != "self" and p.kind is not inspect.Parameter.VAR_KEYWORD}
    return named | {"p"}


class MRIArtifacts:
    """Apply TorchIO artifact transforms, in order, to one image, seeded from ``(seed, index)``.

    Args:
        transforms: TorchIO transforms, each with its own probability ``p``.

    Call it with a ``(C, X, Y)`` or ``(C, X, Y, Z)`` image, the voxel spacing in
    millimetres, the run seed and the item index. It returns a float32 image of the
    same shape. 2D images get a temporary third axis of size one for TorchIO.
    """

    def __init__(self, transforms: Sequence[tio.Transform]) -> None:
        self.transforms = list(transforms)
        self.compose = tio.Compose(self.transforms)

    @classmethod
    def from_config(cls, entries: Sequence[Mapping[str, Any]]) -> "MRIArtifacts":
        """Build from entries such as ``[{"motion": {"degrees": 5, "p": 0.2}}]``, with names from ``ARTIFACTS``."""
        transforms = []
        for entry in entries:
            (name, kwargs), = entry.items()
            transforms.append(ARTIFACTS[name](**dict(kwargs or {})))
        return cls(transforms)

    def __repr__(self) -> str:
        return f"MRIArtifacts(transforms={self.transforms!r})"

    def __call__(self, image: Tensor, *, spacing: Sequence[float] | np.ndarray | Tensor, seed: int, index: int) -> Tensor:
        if image.ndim not in (3, 4):
            raise ValueError(f"image must be (C, X, Y) or (C, X, Y, Z), got shape {tuple(image.shape)}")
        spatial_dims = image.ndim - 1
        spacing = [float(s) for s in torch.as_tensor(spacing).flatten().tolist()]
        if len(spacing) != spatial_dims:
            raise ValueError(f"spacing must have {spatial_dims} values for image shape {tuple(image.shape)}, got {spacing}")

        volume = image.to(torch.float32)
        if spatial_dims == 2:
            volume = volume.unsqueeze(-1)
            spacing = spacing + [1.0]
        affine = np.diag(spacing + [1.0])
        subject = tio.Subject(image=tio.ScalarImage(tensor=volume, affine=affine))

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(seed, index, _ARTIFACT_STREAM))
            transformed = self.compose(subject)
        out = transformed["image"].data.to(torch.float32)
        if spatial_dims == 2:
            out = out.squeeze(-1)
        return out
