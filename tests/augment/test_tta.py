"""Inverting the spatial part of an augmentation, and test-time augmentation built on it."""

from __future__ import annotations

import math

import pytest
import torch

from augment import Pipeline, RandomAffine, RandomElastic, RandomFlip, RandomRot90, derive_generator
from augment.tta import invert_spatial, tta_predict


def blob_2d(size: int = 41, sigma: float = 6.0) -> torch.Tensor:
    """Smooth off-centre Gaussian blob (1, 1, size, size), so rotations move it."""
    axis = torch.arange(size, dtype=torch.float32)
    x, y = torch.meshgrid(axis, axis, indexing="ij")
    return torch.exp(-((x - 16) ** 2 + (y - 22) ** 2) / (2 * sigma**2))[None, None]


def test_flips_and_quarter_turns_invert_exactly():
    image = torch.randn(4, 2, 6, 6, 6, generator=torch.Generator().manual_seed(0))
    pipeline = Pipeline([RandomFlip(p=0.5), RandomRot90(axes=(0, 1), p=0.5), RandomRot90(axes=(1, 2), p=0.5)])
    for seed in range(10):
        augmented = pipeline({"image": image}, derive_generator(seed))
        restored = invert_spatial(pipeline, augmented["image"], augmented["augmentation"])
        assert torch.equal(restored, image), f"seed {seed}"


def test_rotation_inverts_in_the_interior():
    image = blob_2d()
    pipeline = Pipeline([RandomAffine(degrees=(20, 20), translation=(3, 3))])
    augmented = pipeline({"image": image}, derive_generator(1))
    assert (augmented["image"] - image).abs().max() > 0.2

    restored = invert_spatial(pipeline, augmented["image"], augmented["augmentation"])
    # Two bilinear resamplings of a smooth blob: small interpolation error only.
    assert (restored - image)[..., 8:33, 8:33].abs().max() < 0.02


def test_inversion_honours_spacing():
    image = blob_2d()
    spacing = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    pipeline = Pipeline([RandomAffine(degrees=(90, 90))])
    augmented = pipeline({"image": image, "spacing": spacing}, derive_generator(0))
    restored = invert_spatial(pipeline, augmented["image"], augmented["augmentation"], spacing)
    assert (restored - image)[..., 10:31, 14:27].abs().max() < 0.02


def test_elastic_cannot_be_inverted():
    pipeline = Pipeline([RandomElastic(max_displacement=2.0)])
    augmented = pipeline({"image": torch.zeros(1, 1, 8, 8)}, derive_generator(0))
    with pytest.raises(ValueError, match="cannot invert an elastic deformation"):
        invert_spatial(pipeline, augmented["image"], augmented["augmentation"])


def test_tta_equivariant_model_unchanged():
    image = torch.rand(2, 1, 8, 8, 8, generator=torch.Generator().manual_seed(3))
    pipeline = Pipeline([RandomFlip(p=0.5), RandomRot90(axes=(0, 2), p=0.5)])

    def predict(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, 1 - x], dim=1)

    averaged = tta_predict(predict, {"image": image}, pipeline, draws=4, generator=derive_generator(7))
    assert torch.allclose(averaged, predict(image), atol=1e-6)


def test_tta_counts_only_covering_copies():
    image = blob_2d()
    pipeline = Pipeline([RandomAffine(translation=(10, 10))])

    def predict(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, 1 - x], dim=1)

    averaged = tta_predict(predict, {"image": image}, pipeline, draws=3, generator=derive_generator(2))
    # Corners shifted out of view are averaged over fewer copies, never diluted towards 0.
    assert torch.allclose(averaged.sum(dim=1), torch.ones(1, 41, 41), atol=1e-5)
    assert not math.isnan(float(averaged.sum()))
