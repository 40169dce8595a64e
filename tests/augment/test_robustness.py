"""Thin, tiny and integer-typed inputs go through every preset and transform."""

from __future__ import annotations

import pytest
import torch

from augment import (
    PRESETS,
    Pipeline,
    RandomAffine,
    RandomElastic,
    RandomFlip,
    RandomRot90,
    build_strategy,
    derive_generator,
    strategy_config,
)

SHAPES = [(1, 1, 1, 16, 16), (1, 1, 2, 3, 4), (1, 1, 16, 16, 1)]
SHAPE_IDS = ["one_slice_axis_0", "2x3x4", "one_slice_axis_2"]
SEEDS = range(3)

TRANSFORMS = {
    "flip": lambda: RandomFlip(p=1.0),
    "rot90_01": lambda: RandomRot90(axes=(0, 1), p=1.0),
    "rot90_12": lambda: RandomRot90(axes=(1, 2), p=1.0),
    "rot90_02": lambda: RandomRot90(axes=(0, 2), p=1.0),
    "affine": lambda: RandomAffine(degrees=15, scale=0.15, shear=0.1, translation=4, p=1.0),
    "elastic": lambda: RandomElastic(max_displacement=2.0, control_points=5, p=1.0),
}


def make_batch(shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
    image = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    return {"image": image, "label": (image > 0).to(torch.int64)}


def always_applied(preset: str) -> dict:
    """Return the preset's strategy with every transform probability set to 1."""
    config = strategy_config(preset)
    for entry in config["transforms"]:
        for kwargs in entry.values():
            kwargs["p"] = 1.0
    return config


def check_output(out: dict, batch: dict) -> None:
    assert out["image"].shape == batch["image"].shape
    assert out["label"].shape == batch["label"].shape
    assert out["image"].dtype == torch.float32
    assert out["label"].dtype == batch["label"].dtype
    assert torch.isfinite(out["image"]).all()


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_handles_small_shapes(preset, shape, seed):
    batch = make_batch(shape)

    out = build_strategy(preset)(batch, derive_generator(seed))

    check_output(out, batch)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_always_applied_preset_handles_small_shapes(preset, shape, seed):
    batch = make_batch(shape)

    out = build_strategy(always_applied(preset))(batch, derive_generator(seed))

    check_output(out, batch)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("transform_name", sorted(TRANSFORMS))
def test_transform_handles_small_shapes(transform_name, shape, seed):
    batch = make_batch(shape)

    out = Pipeline([TRANSFORMS[transform_name]()])(batch, derive_generator(seed))

    check_output(out, batch)


@pytest.mark.parametrize("shape, axis", [((1, 1, 1, 16, 16), 0), ((1, 1, 16, 16, 1), 2)], ids=SHAPE_IDS[::2])
def test_flip_of_single_voxel_axis_is_identity(shape, axis):
    batch = make_batch(shape)

    out = Pipeline([RandomFlip(axes=(axis,), p=1.0)])(batch, derive_generator(0))

    assert torch.equal(out["image"], batch["image"])
    assert torch.equal(out["label"], batch["label"])


def uint8_ramp() -> torch.Tensor:
    return torch.arange(32 * 32).reshape(1, 1, 32, 32).remainder(256).to(torch.uint8)


def int16_volume() -> torch.Tensor:
    return torch.randint(-1024, 1501, (1, 1, 8, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.int16)


INTEGER_IMAGES = {"uint8_ramp_2d": uint8_ramp, "int16_volume_3d": int16_volume}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("image_name", sorted(INTEGER_IMAGES))
def test_integer_image_gives_float_output(image_name, preset, seed):
    image = INTEGER_IMAGES[image_name]()
    batch = {"image": image, "label": (image > 100).to(torch.int64)}
    pipeline = build_strategy(always_applied(preset))

    out = pipeline(batch, derive_generator(seed))

    assert out["image"].dtype == torch.float32
    assert out["image"].shape == image.shape
    assert torch.isfinite(out["image"]).all()
    # Resampling interpolates between input values, so spatial-only presets stay within
    # the input range. Intensity transforms such as noise and brightness leave it by design.
    if not pipeline.intensity:
        assert out["image"].min() >= float(image.min())
        assert out["image"].max() <= float(image.max())


@pytest.mark.parametrize("image_name", sorted(INTEGER_IMAGES))
def test_integer_image_identity_keeps_values(image_name):
    image = INTEGER_IMAGES[image_name]()

    out = build_strategy("none")({"image": image}, derive_generator(0))

    assert torch.equal(out["image"], image.to(torch.float32))


def translate_single_slice(radians: float) -> torch.Tensor:
    """Translate a 1x4x4 volume of ones by 1 mm along its single-voxel axis 0, with an optional tiny rotation."""
    params = [
        {
            "radians": torch.tensor([[radians, 0.0, 0.0]], dtype=torch.float64),
            "scales": torch.ones(1, 3, dtype=torch.float64),
            "shears": torch.zeros(1, 3, 3, dtype=torch.float64),
            "translation": torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64),
        }
    ]
    pipeline = Pipeline([RandomAffine()], image_padding="zeros")
    return pipeline.apply({"image": torch.ones(1, 1, 1, 4, 4)}, params)["image"]


def test_translation_along_single_voxel_axis_keeps_slice():
    # grid_sample maps every coordinate along a single-voxel axis onto that voxel, and the
    # index copy of a whole-voxel translation must agree instead of filling the slice.
    copied = translate_single_slice(0.0)
    resampled = translate_single_slice(1e-5)

    assert torch.equal(copied, torch.ones(1, 1, 1, 4, 4))
    torch.testing.assert_close(resampled, copied, rtol=0.0, atol=1e-3)


CONSTANT_VALUES = [0.0, 7.0, -1024.0]


@pytest.mark.parametrize("value", CONSTANT_VALUES)
@pytest.mark.parametrize("shape", SHAPES + [(2, 1, 6, 7, 8), (2, 1, 9, 10)], ids=SHAPE_IDS + ["6x7x8", "9x10"])
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_constant_image_stays_finite(preset, shape, value):
    image = torch.full(shape, value)
    batch = {"image": image, "label": torch.ones(shape, dtype=torch.int64)}

    out = build_strategy(always_applied(preset))(batch, derive_generator(0))

    assert out["image"].shape == image.shape
    assert torch.isfinite(out["image"]).all()
    assert set(out["label"].unique().tolist()) <= {0, 1}
