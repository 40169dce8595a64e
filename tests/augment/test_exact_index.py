"""Flips, quarter turns and whole-voxel translations are exact index copies.

At 1 mm isotropic spacing on a cube these maps send voxel centres onto voxel
centres, so ``warp`` copies values by index and no value is ever interpolated.
"""

from __future__ import annotations

import pytest
import torch

from augment import Pipeline, RandomAffine, RandomElastic, RandomFlip, RandomRot90, derive_generator

SEEDS = range(50)
ROT90_PLANES = [(0, 1), (1, 2), (0, 2)]


def make_index_batch() -> dict[str, torch.Tensor]:
    """Return a 4x4x4 image whose values are the flat voxel indices 0..63, and label = index mod 3."""
    index = torch.arange(64).reshape(1, 1, 4, 4, 4)
    return {"image": index.to(torch.float32), "label": index % 3}


def flip_and_rot90_transforms() -> list:
    return [RandomFlip(p=0.5)] + [RandomRot90(axes=plane, p=0.5) for plane in ROT90_PLANES]


@pytest.mark.parametrize("seed", SEEDS)
def test_index_transforms_keep_label_mod_3(seed):
    batch = make_index_batch()
    # translation=(1, 1) is the range [1 mm, 1 mm], so every sample moves by exactly one voxel per axis.
    pipeline = Pipeline(flip_and_rot90_transforms() + [RandomAffine(translation=(1, 1), p=1.0)])

    out = pipeline(batch, derive_generator(seed))

    # Voxels moved in from outside get the image minimum 0 and label 0, which also satisfy the relation.
    assert torch.equal(out["label"], out["image"].to(torch.int64) % 3)
    assert torch.equal(out["image"], out["image"].round()), "an image value was interpolated"


@pytest.mark.parametrize("seed", SEEDS)
def test_random_voxel_shift_keeps_label_mod_3(seed):
    batch = make_index_batch()
    pipeline = Pipeline(flip_and_rot90_transforms() + [RandomAffine(p=1.0)])
    generator = derive_generator(seed)
    params = pipeline.sample(batch, generator)
    params[-1]["translation"] = torch.randint(-2, 3, (1, 3), generator=generator).to(torch.float64)

    out = pipeline.apply(batch, params)

    assert torch.equal(out["label"], out["image"].to(torch.int64) % 3)
    assert torch.equal(out["image"], out["image"].round()), "an image value was interpolated"


@pytest.mark.parametrize("seed", SEEDS)
def test_flip_rot90_permute_image_values(seed):
    batch = make_index_batch()
    pipeline = Pipeline(flip_and_rot90_transforms())

    out = pipeline(batch, derive_generator(seed))

    assert torch.equal(out["image"].flatten().sort().values, torch.arange(64, dtype=torch.float32))
    assert torch.equal(out["label"], out["image"].to(torch.int64) % 3)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_same_axis_flipped_twice_is_identity(axis):
    batch = make_index_batch()
    flip = torch.zeros(1, 3, dtype=torch.bool)
    flip[0, axis] = True
    pipeline = Pipeline([RandomFlip(), RandomFlip()])

    composed = pipeline.apply(batch, [{"flip": flip}, {"flip": flip}])
    once = Pipeline([RandomFlip()]).apply(batch, [{"flip": flip}])
    twice = Pipeline([RandomFlip()]).apply(once, [{"flip": flip}])

    assert not torch.equal(once["image"], batch["image"]), "a single flip left the image unchanged"
    assert torch.equal(composed["image"], batch["image"])
    assert torch.equal(composed["label"], batch["label"])
    assert torch.equal(twice["image"], batch["image"])
    assert torch.equal(twice["label"], batch["label"])


def test_single_flip_reverses_axis():
    batch = make_index_batch()
    flip = torch.tensor([[False, True, False]])

    out = Pipeline([RandomFlip()]).apply(batch, [{"flip": flip}])

    assert torch.equal(out["image"], batch["image"].flip(3))
    assert torch.equal(out["label"], batch["label"].flip(3))


# A forward translation of +1 mm per axis moves the anatomy one voxel towards higher
# indices: output[i, j] = input[i - 1, j - 1], and row 0 and column 0 come from outside.
DIAGONAL_LABEL = [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
SHIFTED_DIAGONAL_LABEL = [[0, 0, 0], [0, 1, 0], [0, 0, 1]]
# Every named mode and two constant fills: 5.0, the image value, and -3.0.
PADDING_MODES = ["zeros", "minimum", "mean", "border", "otsu", 5.0, -3.0]
# The image is 5.0 everywhere, so only "zeros" and -3.0 fill the voxels moved in from outside with another value.
SHIFTED_CONSTANT_IMAGE = {
    "zeros": [[0.0, 0.0, 0.0], [0.0, 5.0, 5.0], [0.0, 5.0, 5.0]],
    "minimum": [[5.0] * 3] * 3,
    "mean": [[5.0] * 3] * 3,
    "border": [[5.0] * 3] * 3,
    "otsu": [[5.0] * 3] * 3,
    5.0: [[5.0] * 3] * 3,
    -3.0: [[-3.0, -3.0, -3.0], [-3.0, 5.0, 5.0], [-3.0, 5.0, 5.0]],
}


def translate_diagonal(image_padding: str | float) -> dict[str, torch.Tensor]:
    batch = {
        "image": torch.full((1, 1, 3, 3), 5.0),
        "label": torch.tensor(DIAGONAL_LABEL).reshape(1, 1, 3, 3),
    }
    pipeline = Pipeline([RandomAffine(translation=(1, 1), p=1.0)], image_padding=image_padding)
    return pipeline(batch, derive_generator(0))


@pytest.mark.parametrize("image_padding", PADDING_MODES)
def test_translation_moves_label_towards_higher_indices(image_padding):
    out = translate_diagonal(image_padding)

    assert out["label"][0, 0].tolist() == SHIFTED_DIAGONAL_LABEL


@pytest.mark.parametrize("image_padding", PADDING_MODES)
def test_translation_fills_image_by_padding_mode(image_padding):
    out = translate_diagonal(image_padding)

    assert out["image"][0, 0].tolist() == SHIFTED_CONSTANT_IMAGE[image_padding]


def test_zero_probability_is_identity():
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(2, 2, 6, 5, 4, generator=generator)
    label = torch.randint(0, 4, (2, 1, 6, 5, 4), generator=generator)
    batch = {"image": image, "label": label, "spacing": torch.tensor([[1.0, 1.5, 3.0], [0.7, 0.7, 2.0]])}
    pipeline = Pipeline(
        [
            RandomFlip(p=0.0),
            RandomRot90(axes=(0, 1), p=0.0),
            RandomAffine(degrees=30, scale=0.2, shear=0.1, translation=5, p=0.0),
            RandomElastic(max_displacement=3.0, p=0.0),
        ]
    )

    out = pipeline(batch, derive_generator(0))

    assert torch.equal(out["image"], image)
    assert torch.equal(out["label"], label)
