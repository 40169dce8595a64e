"""The tiled, separable sampling grid of ``warp`` against a direct whole-batch reference.

The reference is the algorithm ``warp`` used before tiling: ``F.affine_grid`` for the
affine part, ``F.interpolate`` for the elastic field, one ``grid_sample`` per tensor.
The two compute the same grid in a different order, so grid coordinates differ by
float32 rounding (about 1e-6 voxel) and the outputs are compared with a tolerance,
not bit for bit. Index-copied samples do not use the grid and stay bit-exact.
"""

from __future__ import annotations

import importlib
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from augment import RandomAffine, RandomElastic, warp

warp_module = importlib.import_module("augment.warp")

SHAPES = {"2d": (33, 17), "3d": (12, 10, 9), "3d_one_slice": (1, 12, 10)}


def reference_warp(image, label, spacing, forward, coarse, image_padding):
    """Resample every sample as the whole-batch algorithm did; labels by nearest neighbour."""
    shape = tuple(image.shape[2:])
    ndim = len(shape)
    theta = warp_module.normalised_affine(forward, shape, spacing)
    reversed_axes = list(reversed(range(ndim)))
    theta_xyz = theta[:, reversed_axes][:, :, reversed_axes + [ndim]].to(image.dtype)
    with warnings.catch_warnings():
        # torch warns about size-1 axes, whose grid coordinate is 0 as intended here.
        warnings.filterwarnings("ignore", message=".*unit-size grids.*")
        grid = F.affine_grid(theta_xyz, (image.shape[0], 1) + shape, align_corners=True)
    if coarse is not None:
        mode = "bilinear" if ndim == 2 else "trilinear"
        field = F.interpolate(coarse, size=shape, mode=mode, align_corners=True)
        unit = (spacing * warp_module._half_extent(shape)).to(image.dtype)
        grid = grid + (field / unit.view(-1, ndim, *(1,) * ndim)).flip(1).movedim(1, -1)

    if image_padding == "border":
        out_image = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)
    else:
        fill = image.amin(dim=tuple(range(2, image.ndim)), keepdim=True)
        out_image = F.grid_sample(image - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=True) + fill
    out_label = F.grid_sample(label.to(image.dtype), grid, mode="nearest", padding_mode="zeros", align_corners=True)
    return out_image, out_label.to(label.dtype), grid


def sample_parameters(shape, batch_size, seed, p=1.0):
    generator = torch.Generator().manual_seed(seed)
    spacing = 0.5 + torch.rand(batch_size, len(shape), generator=generator, dtype=torch.float64)
    affine = RandomAffine(degrees=15, scale=(0.85, 1.15), translation=2.0, p=p)
    elastic = RandomElastic(max_displacement=2.0, control_points=4, p=p)
    affine_params = affine.sample(batch_size, shape, spacing, generator)
    elastic_params = elastic.sample(batch_size, shape, spacing, generator)
    forward = affine.matrix(affine_params, len(shape))
    return spacing, forward, elastic_params["coarse_displacement"].to(torch.float32)


def coordinate_image(shape, batch_size):
    """Return ``(B, D, *S)`` float32 images whose channel k is the voxel index along axis k."""
    axes = [torch.arange(n, dtype=torch.float32) for n in shape]
    coordinates = torch.stack(torch.meshgrid(*axes, indexing="ij"))
    return coordinates.expand(batch_size, *coordinates.shape).clone()


def block_label(shape, batch_size, seed):
    """Return ``(B, 1, *S)`` int64 labels of classes 0 to 3 in 3-voxel blocks."""
    generator = torch.Generator().manual_seed(seed)
    coarse_shape = [math.ceil(n / 3) for n in shape]
    blocks = torch.randint(0, 4, (batch_size, 1, *coarse_shape), generator=generator)
    for axis in range(len(shape)):
        blocks = blocks.repeat_interleave(3, dim=2 + axis)
    return blocks[(slice(None), slice(None)) + tuple(slice(0, n) for n in shape)].contiguous()


def away_from_ties(grid: torch.Tensor, shape) -> torch.Tensor:
    """``(B, *S)`` mask of output voxels whose sampling position is over 1e-3 voxel from a rounding tie."""
    sizes = torch.tensor(list(reversed(shape)), dtype=grid.dtype)
    position = (grid + 1) / 2 * (sizes - 1)
    fraction = position - position.floor()
    return ((fraction - 0.5).abs() > 1e-3).all(dim=-1)


@pytest.mark.parametrize("image_padding", ["minimum", "border"])
@pytest.mark.parametrize("with_elastic", [False, True], ids=["affine", "affine_elastic"])
@pytest.mark.parametrize("shape_name", sorted(SHAPES))
def test_warp_matches_whole_batch_reference(shape_name, with_elastic, image_padding):
    shape = SHAPES[shape_name]
    spacing, forward, coarse = sample_parameters(shape, 4, seed=3)
    field = coarse if with_elastic else None
    image = coordinate_image(shape, 4)
    label = block_label(shape, 4, seed=3)

    out_image, out_label = warp(image, label, spacing, forward, field, image_padding=image_padding)
    ref_image, ref_label, ref_grid = reference_warp(image, label, spacing, forward, field, image_padding)

    # The coordinate image rises by 1 per voxel and by up to 32 across the edge of the
    # field of view, so 1e-3 allows sampling positions that differ by 3e-5 voxel.
    torch.testing.assert_close(out_image, ref_image, rtol=0.0, atol=1e-3)
    clear = away_from_ties(ref_grid, shape)[:, None]
    assert clear.float().mean() > 0.95
    mismatches = (out_label != ref_label) & clear
    assert int(mismatches.sum()) == 0, f"{int(mismatches.sum())} label voxels differ away from rounding ties"


@pytest.mark.parametrize("shape_name", sorted(SHAPES))
def test_control_points_match_voxel_field(shape_name):
    shape = SHAPES[shape_name]
    spacing, forward, coarse = sample_parameters(shape, 3, seed=5)
    image = coordinate_image(shape, 3)
    label = block_label(shape, 3, seed=5)
    voxel_field = warp_module.upsample_linear(coarse, shape)

    from_control_points = warp(image, label, spacing, forward, coarse)
    from_voxels = warp(image, label, spacing, forward, voxel_field)

    torch.testing.assert_close(from_control_points[0], from_voxels[0], rtol=0.0, atol=1e-3)
    # Positions agree to about 1e-5 voxel, so labels differ at most where a position is that close to a tie.
    assert (from_control_points[1] != from_voxels[1]).float().mean() < 1e-3


def test_displacement_sequence_is_summed():
    shape = (12, 10, 9)
    spacing, forward, coarse = sample_parameters(shape, 2, seed=8)
    image = coordinate_image(shape, 2)
    voxel_field = torch.zeros(2, 3, *shape)
    voxel_field[:, 1] = 0.75

    summed = warp(image, None, spacing, forward, [coarse, voxel_field])[0]
    combined = warp(image, None, spacing, forward, warp_module.upsample_linear(coarse, shape) + voxel_field)[0]

    torch.testing.assert_close(summed, combined, rtol=0.0, atol=1e-3)


def test_several_control_grids_match_voxel_fields():
    # The first grid has one control plane along axis 0, so it cannot carry the affine
    # part. The second has another number of control points. The sampling grid then
    # sums three plane stacks and must match the same fields given per voxel.
    shape = (12, 10, 9)
    spacing, forward, _ = sample_parameters(shape, 2, seed=9)
    generator = torch.Generator().manual_seed(9)
    single_plane = torch.randn(2, 3, 1, 3, 2, generator=generator)
    finer = torch.randn(2, 3, 3, 4, 5, generator=generator)
    image = coordinate_image(shape, 2)
    label = block_label(shape, 2, seed=9)
    voxel_fields = warp_module.upsample_linear(single_plane, shape) + warp_module.upsample_linear(finer, shape)

    from_control_points = warp(image, label, spacing, forward, [single_plane, finer])
    from_voxels = warp(image, label, spacing, forward, voxel_fields)

    torch.testing.assert_close(from_control_points[0], from_voxels[0], rtol=0.0, atol=1e-3)
    assert (from_control_points[1] != from_voxels[1]).float().mean() < 1e-3


@pytest.mark.parametrize("label_mode", ["nearest", "onehot"])
@pytest.mark.parametrize("image_padding", ["zeros", "minimum", "mean", "border", "otsu", -2.5])
@pytest.mark.parametrize("shape_name", sorted(SHAPES))
def test_small_tiles_give_identical_output(shape_name, image_padding, label_mode, monkeypatch):
    # p=0.6 leaves some samples exact (index copies), so the resampled samples are
    # not consecutive and groups are gathered by index.
    shape = SHAPES[shape_name]
    spacing, forward, coarse = sample_parameters(shape, 6, seed=11, p=0.6)
    generator = torch.Generator().manual_seed(11)
    image = torch.rand(6, 2, *shape, generator=generator)
    label = block_label(shape, 6, seed=11)
    kwargs = {"image_padding": image_padding, "label_mode": label_mode}

    one_tile = warp(image, label, spacing, forward, coarse, **kwargs)
    monkeypatch.setattr(warp_module, "_TILE_VOXELS_PER_THREAD", 40)
    many_tiles = warp(image, label, spacing, forward, coarse, **kwargs)

    assert torch.equal(many_tiles[0], one_tile[0])
    assert torch.equal(many_tiles[1], one_tile[1])


def test_small_tiles_cover_mixed_batch(monkeypatch):
    # Guards the test above: its seed must mix index-copied and resampled samples.
    shape = SHAPES["3d"]
    spacing, forward, coarse = sample_parameters(shape, 6, seed=11, p=0.6)
    theta = warp_module.normalised_affine(forward, shape, spacing)
    linear, offset = warp_module._voxel_map(theta, shape)
    exact = warp_module._is_integer(linear) & warp_module._is_integer(offset) & warp_module._is_zero(coarse)

    assert 0 < int(exact.sum()) < 6
    resampled = torch.nonzero(~exact).flatten().tolist()
    assert resampled != list(range(resampled[0], resampled[0] + len(resampled)))


LARGE_LABELS = {
    "int64_beyond_float32": (torch.int64, [0, 2**40 + 1, 2**40 + 2, 2**40 + 3]),
    "int32_beyond_float32": (torch.int32, [0, 2**30 + 1, 2**30 + 2, 2**30 + 3]),
    "int64_negative": (torch.int64, [-1, 0, 1, 2]),
}


@pytest.mark.parametrize("label_mode", ["nearest", "onehot"])
@pytest.mark.parametrize("case", sorted(LARGE_LABELS))
def test_label_values_stay_exact(case, label_mode):
    dtype, values = LARGE_LABELS[case]
    shape = (12, 10, 9)
    spacing, forward, coarse = sample_parameters(shape, 2, seed=4)
    index = block_label(shape, 2, seed=4)
    label = torch.tensor(values, dtype=dtype)[index]
    image = index.to(torch.float32)

    out_label = warp(image, label, spacing, forward, coarse, label_mode=label_mode)[1]

    assert out_label.dtype == dtype
    produced = set(out_label.unique().tolist())
    assert produced <= set(values) | {0}, f"labels {sorted(produced - set(values))} are not input values"
    assert len(produced & set(values)) >= 3, "the warp lost most classes"


@pytest.mark.parametrize(
    ("points", "shape"),
    [((4, 5), (33, 17)), ((5, 5, 5), (12, 10, 9)), ((3, 4, 2), (1, 12, 10)), ((1, 3), (6, 1)), ((2, 2, 2), (2, 2, 2))],
)
def test_upsample_linear_matches_interpolate(points, shape):
    values = torch.randn(2, len(shape), *points, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mode = "bilinear" if len(shape) == 2 else "trilinear"

    expected = F.interpolate(values, size=shape, mode=mode, align_corners=True)

    torch.testing.assert_close(warp_module.upsample_linear(values, shape), expected, rtol=0.0, atol=1e-12)


def test_displacement_with_wrong_axes_is_rejected():
    shape = (12, 10, 9)
    spacing, forward, coarse = sample_parameters(shape, 2, seed=0)

    with pytest.raises(ValueError, match=r"displacement must have shape \(B, D, \*P\)"):
        warp(torch.zeros(2, 1, *shape), None, spacing, forward, coarse[:, :2])
