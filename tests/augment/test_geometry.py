"""Geometry of the composed warp: voxel spacing, and image and label sharing one map."""

from __future__ import annotations

import pytest
import torch

from augment import Pipeline, RandomAffine, build_strategy, derive_generator, strategy_config

# A 41x41 image at 1 mm (axis 0) by 2 mm (axis 1) has its centre at voxel (20, 20).
# The forward rotation by +90 degrees maps millimetre offsets (a, b) to (-b, a).
SIZE = 41
CENTRE = 20
SPACING = torch.tensor([[1.0, 2.0]])


def rotate_90_degrees(image: torch.Tensor) -> torch.Tensor:
    pipeline = Pipeline([RandomAffine(degrees=(90, 90))], image_padding="zeros")
    out = pipeline({"image": image, "spacing": SPACING}, derive_generator(0))
    return out["image"][0, 0]


def test_rotation_moves_point_by_millimetres():
    # (+10 mm, 0 mm) is 10 voxels along axis 0 and goes to (0 mm, +10 mm), which is 5 voxels along axis 1.
    image = torch.zeros(1, 1, SIZE, SIZE)
    image[0, 0, CENTRE + 10, CENTRE] = 1.0

    out = rotate_90_degrees(image)

    assert divmod(int(out.argmax()), SIZE) == (CENTRE, CENTRE + 5)
    assert out[CENTRE, CENTRE + 5].item() == pytest.approx(1.0, abs=1e-6)


def test_rotation_of_line_honours_anisotropic_spacing():
    # The line along axis 0 is 41 mm long and one 2 mm voxel wide. Rotated, it runs
    # along axis 1 over -20..+20 mm (columns 10..30) and is 2 mm thick along axis 0,
    # so rows 19 and 21 sample the line half a voxel off its centre and get 0.5.
    image = torch.zeros(1, 1, SIZE, SIZE)
    image[0, 0, :, CENTRE] = 1.0
    expected = torch.zeros(SIZE, SIZE)
    expected[CENTRE, 10:31] = 1.0
    expected[CENTRE - 1, 10:31] = 0.5
    expected[CENTRE + 1, 10:31] = 0.5

    out = rotate_90_degrees(image)

    torch.testing.assert_close(out, expected, rtol=0.0, atol=1e-6)


def make_coordinate_batch(seed: int) -> dict[str, torch.Tensor]:
    """Return a 2x3x16x16x16 image whose channel k is the voxel index along axis k, and a random label."""
    shape = (16, 16, 16)
    coordinates = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in shape], indexing="ij"))
    image = coordinates.expand(2, 3, *shape).clone()
    noise = torch.randn(2, 1, *shape, generator=torch.Generator().manual_seed(seed))
    return {"image": image, "label": (noise > 0).to(torch.int64)}


@pytest.mark.parametrize("seed", range(8))
def test_nonrigid_image_and_label_share_sampling_map(seed):
    # Linear interpolation of a coordinate ramp returns the sampling position itself, so
    # the warped image gives where each output voxel sampled the input. The nearest
    # neighbour label must then be the input label at that position, rounded.
    config = strategy_config("nonrigid")
    config["image_padding"] = "border"
    pipeline = build_strategy(config)
    batch = make_coordinate_batch(seed)

    out = pipeline(batch, derive_generator(seed))

    position = out["image"]
    rounded = position.round()
    inside = ((position > 0.5) & (position < 14.5)).all(dim=1)
    # Positions within 1e-3 voxel of a rounding tie may round either way in float32.
    clear = ((position - position.floor() - 0.5).abs() > 1e-3).all(dim=1)
    compared = inside & clear
    assert compared.float().mean() > 0.25, "too few voxels sampled well inside the volume to compare"

    index = rounded.to(torch.int64)
    for b in range(2):
        sampled = batch["label"][b, 0][index[b, 0], index[b, 1], index[b, 2]]
        mismatches = (sampled != out["label"][b, 0]) & compared[b]
        assert int(mismatches.sum()) == 0, f"sample {b}: {int(mismatches.sum())} label voxels do not match the image map"


def test_nonrigid_seeds_cover_resampled_and_index_copied_samples():
    # Guards the test above against seeds that only ever take one of the two warp paths.
    pipeline = build_strategy("nonrigid")
    resampled = 0
    copied = 0
    for seed in range(8):
        out = pipeline(make_coordinate_batch(seed), derive_generator(seed))
        is_integer = (out["image"] == out["image"].round()).flatten(1).all(dim=1)
        copied += int(is_integer.sum())
        resampled += int((~is_integer).sum())

    assert copied > 0
    assert resampled > 0


@pytest.mark.parametrize("seed", range(4))
def test_recorded_parameters_replay_bit_for_bit(seed):
    pipeline = build_strategy("nonrigid")
    generator = torch.Generator().manual_seed(100 + seed)
    image = torch.randn(2, 1, 16, 16, 16, generator=generator)
    batch = {"image": image, "label": (image > 0).to(torch.int64)}

    out = pipeline(batch, derive_generator(seed))
    replayed = pipeline.apply(batch, out["augmentation"])

    assert torch.equal(replayed["image"], out["image"])
    assert torch.equal(replayed["label"], out["label"])
