"""Hand-written spatial transforms against Kornia and TorchIO, given the same parameters.

medaug composes its own sampling grid, so each check here feeds the same rotation,
scaling, shear, translation or displacement field to a library transform and
compares the outputs. Images are compared where both implementations sample well
inside the field of view, because Kornia's ``grid_sample`` and SimpleITK (used by
TorchIO) treat the half voxel at the border differently. Labels are resampled by
nearest neighbour in both. Two implementations compute the same sampling position
with float32 rounding in a different order, so a label can differ only where a
position lies within about 1e-5 voxel of a rounding tie between two voxels.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchio as tio
from kornia.geometry.transform import elastic_transform2d, get_affine_matrix2d, hflip, vflip, warp_affine

from augment import Pipeline, RandomAffine, RandomElastic, RandomFlip, derive_generator, warp
from augment.warp import upsample_linear

# Largest fraction of compared label voxels allowed to differ: only rounding ties can
# differ (see the module docstring), and these smooth random maps put far fewer than
# one voxel in a thousand that close to a tie.
LABEL_MISMATCH_LIMIT = 1e-3


def smooth_image(shape: tuple[int, ...], batch_size: int, seed: int) -> torch.Tensor:
    """Return a ``(B, 1, *shape)`` float32 image interpolated from a coarse random grid, values about -2 to 2."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(batch_size, 1, *(max(2, n // 5) for n in shape), generator=generator)
    mode = "bilinear" if len(shape) == 2 else "trilinear"
    return F.interpolate(coarse, size=shape, mode=mode, align_corners=True)


def block_label(shape: tuple[int, ...], batch_size: int, seed: int) -> torch.Tensor:
    """Return a ``(B, 1, *shape)`` int64 label map of classes 0 to 3 in blocks of 4 voxels."""
    generator = torch.Generator().manual_seed(seed)
    blocks = torch.randint(0, 4, (batch_size, 1, *(math.ceil(n / 4) for n in shape)), generator=generator)
    for axis in range(len(shape)):
        blocks = blocks.repeat_interleave(4, dim=2 + axis)
    return blocks[(slice(None), slice(None)) + tuple(slice(0, n) for n in shape)].contiguous()


def affine_params(degrees: list[list[float]], scales: list[float], translation: list[list[float]], shears=None) -> dict:
    """Return ``RandomAffine`` parameters for a batch: per-sample angles in degrees, isotropic scales, translations in mm."""
    radians = torch.deg2rad(torch.tensor(degrees, dtype=torch.float64))
    ndim = len(translation[0])
    batch_size = len(scales)
    if shears is None:
        shears = torch.zeros(batch_size, ndim, ndim, dtype=torch.float64)
    return {
        "radians": radians,
        "scales": torch.tensor(scales, dtype=torch.float64)[:, None].expand(batch_size, ndim).contiguous(),
        "shears": shears,
        "translation": torch.tensor(translation, dtype=torch.float64),
    }


def sampled_positions(pipeline: Pipeline, params: list, shape: tuple[int, ...], batch_size: int, spacing: torch.Tensor) -> torch.Tensor:
    """Return ``(B, D, *shape)`` input voxel positions sampled by each output voxel under ``params``.

    Channel k of a coordinate image contains the voxel index along axis k, so linear
    interpolation of it returns the sampling position itself.
    """
    axes = [torch.arange(n, dtype=torch.float32) for n in shape]
    coordinates = torch.stack(torch.meshgrid(*axes, indexing="ij")).expand(batch_size, len(shape), *shape).contiguous()
    border = Pipeline(pipeline.transforms, image_padding="border")
    return border.apply({"image": coordinates, "spacing": spacing}, params)["image"]


def well_inside(positions: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """``(B, 1, *shape)`` mask of output voxels that sample at least one voxel away from every border."""
    sizes = torch.tensor(shape, dtype=positions.dtype).view(1, -1, *(1,) * len(shape))
    return ((positions >= 1.0) & (positions <= sizes - 2.0)).all(dim=1, keepdim=True)


def label_mismatch(ours: torch.Tensor, theirs: torch.Tensor, mask: torch.Tensor) -> float:
    return float(((ours != theirs) & mask).sum()) / float(mask.sum())


# ---------------------------------------------------------------------------
# 2D: Kornia


def test_affine_2d_matches_kornia_warp_affine():
    shape = (40, 52)
    image = smooth_image(shape, 2, seed=0)
    label = block_label(shape, 2, seed=0)
    degrees, scales = [[12.0], [-20.0]], [1.1, 0.9]
    translation = [[2.0, -3.0], [-1.5, 0.5]]
    pipeline = Pipeline([RandomAffine()], image_padding="zeros")

    out = pipeline.apply({"image": image, "label": label}, [affine_params(degrees, scales, translation)])

    # Kornia works in (x, y) = (column, row) pixels about the centre of the corner
    # pixels. get_affine_matrix2d takes clockwise-positive angles and composes
    # translation after rotation and scaling, as RandomAffine's forward map does, so
    # medaug's angle about the plane normal is Kornia's angle negated.
    centre = torch.tensor([[(shape[1] - 1) / 2, (shape[0] - 1) / 2]] * 2)
    matrix = get_affine_matrix2d(
        torch.tensor(translation).flip(1),
        centre,
        torch.tensor(scales)[:, None].expand(2, 2),
        -torch.tensor(degrees)[:, 0],
    )[:, :2]
    kornia_image = warp_affine(image, matrix, shape, mode="bilinear", padding_mode="zeros", align_corners=True)
    kornia_label = warp_affine(label.float(), matrix, shape, mode="nearest", padding_mode="zeros", align_corners=True)

    # Both use zero padding and the same bilinear weights, so every voxel agrees. The
    # image spans about 4 units, and float32 grid coordinates that differ by 1e-6 of
    # the width move a sample by 5e-5 voxel, so 1e-4 covers the rounding.
    torch.testing.assert_close(out["image"], kornia_image, rtol=0.0, atol=1e-4)
    assert label_mismatch(out["label"], kornia_label.long(), torch.ones_like(label, dtype=torch.bool)) <= LABEL_MISMATCH_LIMIT
    assert not torch.equal(out["label"], label), "the affine map left the label unchanged"


def test_anisotropic_shear_2d_matches_kornia_pixel_matrix():
    # At 1 mm x 2.5 mm, an affine map A in millimetres is S^-1 A S in voxels, with S
    # the diagonal spacing matrix. Kornia warps with that voxel matrix directly.
    shape = (48, 30)
    spacing = torch.tensor([[1.0, 2.5]], dtype=torch.float64)
    image = smooth_image(shape, 1, seed=1)
    label = block_label(shape, 1, seed=1)
    shears = torch.tensor([[[0.0, 0.15], [-0.1, 0.0]]], dtype=torch.float64)
    params = affine_params([[25.0]], [1.05], [[3.0, -4.0]], shears=shears)
    transform = RandomAffine()
    pipeline = Pipeline([transform], image_padding="zeros")

    out = pipeline.apply({"image": image, "label": label, "spacing": spacing}, [params])

    forward_mm = transform.matrix(params, 2)[0]
    scale = torch.diag(spacing[0])
    linear = torch.linalg.inv(scale) @ forward_mm[:2, :2] @ scale
    centre = torch.tensor([(n - 1) / 2 for n in shape], dtype=torch.float64)
    offset = centre - linear @ centre + torch.linalg.inv(scale) @ forward_mm[:2, 2]
    # Swap (row, column) to Kornia's (x, y) = (column, row).
    swap = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    matrix = torch.cat([swap @ linear @ swap, (swap @ offset)[:, None]], dim=1)[None].float()
    kornia_image = warp_affine(image, matrix, shape, mode="bilinear", padding_mode="zeros", align_corners=True)
    kornia_label = warp_affine(label.float(), matrix, shape, mode="nearest", padding_mode="zeros", align_corners=True)

    # Same bound as the isotropic test above.
    torch.testing.assert_close(out["image"], kornia_image, rtol=0.0, atol=1e-4)
    assert label_mismatch(out["label"], kornia_label.long(), torch.ones_like(label, dtype=torch.bool)) <= LABEL_MISMATCH_LIMIT


def test_elastic_2d_matches_kornia_elastic_transform():
    shape = (40, 52)
    image = smooth_image(shape, 2, seed=2)
    label = block_label(shape, 2, seed=2)
    elastic = RandomElastic(max_displacement=3.0, control_points=5)
    params = elastic.sample(2, shape, torch.ones(2, 2, dtype=torch.float64), derive_generator(2))

    out = Pipeline([elastic], image_padding="zeros").apply({"image": image, "label": label}, [params])

    # Kornia adds its displacement, in normalised (x, y) units, to the identity grid.
    # A kernel of one tap leaves the field unsmoothed, so it receives medaug's field
    # interpolated to every pixel and divided by millimetres per normalised unit.
    field = upsample_linear(params["coarse_displacement"].float(), shape)
    millimetres_per_unit = torch.tensor([(n - 1) / 2 for n in shape]).view(1, 2, 1, 1)
    noise = (field / millimetres_per_unit).flip(1)
    kwargs = {"kernel_size": (1, 1), "sigma": (1.0, 1.0), "alpha": (1.0, 1.0), "align_corners": True, "padding_mode": "zeros"}
    kornia_image = elastic_transform2d(image, noise, mode="bilinear", **kwargs)
    kornia_label = elastic_transform2d(label.float(), noise, mode="nearest", **kwargs)

    # Same bound as the affine tests: only the order of float32 operations differs.
    torch.testing.assert_close(out["image"], kornia_image, rtol=0.0, atol=1e-4)
    assert label_mismatch(out["label"], kornia_label.long(), torch.ones_like(label, dtype=torch.bool)) <= LABEL_MISMATCH_LIMIT
    assert float(field.abs().amax()) > 1.0, "the elastic field moves no voxel by more than one voxel"


@pytest.mark.parametrize(("axis", "kornia_flip"), [(0, vflip), (1, hflip)], ids=["vflip", "hflip"])
def test_flip_2d_matches_kornia(axis, kornia_flip):
    image = smooth_image((6, 7), 1, seed=3)
    label = block_label((6, 7), 1, seed=3)
    flip = torch.zeros(1, 2, dtype=torch.bool)
    flip[0, axis] = True

    out = Pipeline([RandomFlip()]).apply({"image": image, "label": label}, [{"flip": flip}])

    assert torch.equal(out["image"], kornia_flip(image))
    assert torch.equal(out["label"], kornia_flip(label))


# ---------------------------------------------------------------------------
# 3D: TorchIO

SHAPE_3D = (28, 24, 20)
SPACING_3D = (1.0, 1.5, 2.0)
# TorchIO rotates about the RAS axes of the image's affine by the right-hand rule.
# With affine diag(spacing), tensor axes 0, 1 and 2 are R, A and S. medaug's rotation
# about axis 1 turns the other way (its matrix has -sin above the diagonal for every
# axis), so that one angle changes sign.
TORCHIO_ANGLE_SIGN = (1.0, -1.0, 1.0)


def torchio_affine(image: torch.Tensor, label: torch.Tensor, degrees, scale: float, translation) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply ``tio.Affine`` about the image centre to one ``(1, 1, *S)`` sample, image linear and label nearest."""
    affine = np.diag([*SPACING_3D, 1.0])
    subject = tio.Subject(
        image=tio.ScalarImage(tensor=image[0], affine=affine),
        label=tio.LabelMap(tensor=label[0], affine=affine),
    )
    transform = tio.Affine(
        scales=(scale,) * 3,
        degrees=tuple(degrees),
        translation=tuple(translation),
        default_pad_value=0.0,
        image_interpolation="linear",
        label_interpolation="nearest",
    )
    out = transform(subject)
    return out["image"].data[None].float(), out["label"].data[None].long()


def assert_matches_torchio(out: dict, theirs: tuple[torch.Tensor, torch.Tensor], pipeline: Pipeline, params: list) -> None:
    spacing = torch.tensor([SPACING_3D], dtype=torch.float64)
    inside = well_inside(sampled_positions(pipeline, params, SHAPE_3D, 1, spacing), SHAPE_3D)
    assert inside.float().mean() > 0.3, "too few voxels sample well inside the volume to compare"
    # SimpleITK interpolates in float64 from float32 voxels, and medaug's float32 grid
    # places samples within 1e-5 voxel of it, so images agree to about 1e-5 of their
    # 4-unit range inside the field of view.
    torch.testing.assert_close(out["image"][inside], theirs[0][inside], rtol=0.0, atol=1e-4)
    assert label_mismatch(out["label"], theirs[1], inside) <= LABEL_MISMATCH_LIMIT
    assert not torch.equal(out["label"], theirs[1].new_zeros(theirs[1].shape)), "TorchIO returned an empty label"


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_affine_3d_matches_torchio(axis):
    image = smooth_image(SHAPE_3D, 1, seed=10 + axis)
    label = block_label(SHAPE_3D, 1, seed=10 + axis)
    angle, scale, translation = 12.0, 1.1, [2.0, -1.0, 1.5]
    degrees = [0.0, 0.0, 0.0]
    degrees[axis] = angle
    # TorchIO translates before scaling about the centre (its forward map is
    # scale o (rotate + translate)), so the same motion is a translation of
    # scale * t after scaling, which is what RandomAffine applies.
    params = [affine_params([degrees], [scale], [[scale * t for t in translation]])]
    pipeline = Pipeline([RandomAffine()], image_padding="zeros")
    spacing = torch.tensor([SPACING_3D], dtype=torch.float64)

    out = pipeline.apply({"image": image, "label": label, "spacing": spacing}, params)

    torchio_degrees = [sign * d for sign, d in zip(TORCHIO_ANGLE_SIGN, degrees)]
    assert_matches_torchio(out, torchio_affine(image, label, torchio_degrees, scale, translation), pipeline, params)


def test_composed_rotation_3d_matches_torchio():
    # TorchIO (SimpleITK's Euler3DTransform) rotates about axis 1 first, then axis 0,
    # then axis 2. medaug composes spatial transforms in the order they are listed.
    image = smooth_image(SHAPE_3D, 1, seed=13)
    label = block_label(SHAPE_3D, 1, seed=13)
    degrees = [10.0, -8.0, 15.0]
    scale, translation = 0.9, [-2.0, 1.0, 3.0]
    params = [
        affine_params([[0.0, degrees[1], 0.0]], [1.0], [[0.0, 0.0, 0.0]]),
        affine_params([[degrees[0], 0.0, 0.0]], [1.0], [[0.0, 0.0, 0.0]]),
        affine_params([[0.0, 0.0, degrees[2]]], [scale], [[scale * t for t in translation]]),
    ]
    pipeline = Pipeline([RandomAffine(), RandomAffine(), RandomAffine()], image_padding="zeros")
    spacing = torch.tensor([SPACING_3D], dtype=torch.float64)

    out = pipeline.apply({"image": image, "label": label, "spacing": spacing}, params)

    torchio_degrees = [sign * d for sign, d in zip(TORCHIO_ANGLE_SIGN, degrees)]
    assert_matches_torchio(out, torchio_affine(image, label, torchio_degrees, scale, translation), pipeline, params)


@pytest.mark.parametrize("axes", [(0,), (1,), (2,), (0, 2), (0, 1, 2)], ids=lambda axes: "_".join(map(str, axes)))
def test_flip_3d_matches_torchio_and_torch(axes):
    image = smooth_image((5, 6, 7), 2, seed=20)
    label = block_label((5, 6, 7), 2, seed=20)
    flip = torch.zeros(2, 3, dtype=torch.bool)
    flip[:, list(axes)] = True

    out = Pipeline([RandomFlip()]).apply({"image": image, "label": label}, [{"flip": flip}])

    dims = [2 + axis for axis in axes]
    assert torch.equal(out["image"], torch.flip(image, dims))
    assert torch.equal(out["label"], torch.flip(label, dims))
    for b in range(2):
        subject = tio.Subject(image=tio.ScalarImage(tensor=image[b]), label=tio.LabelMap(tensor=label[b]))
        flipped = tio.Flip(axes=axes)(subject)
        assert torch.equal(out["image"][b], flipped["image"].data)
        assert torch.equal(out["label"][b], flipped["label"].data)


def test_warp_of_whole_voxel_translation_matches_torch_roll():
    # A translation by whole voxels is an index copy. Inside the field of view it
    # equals torch.roll, and the voxels rolled in from the other side are padding.
    image = smooth_image((9, 8, 7), 1, seed=21)
    forward = torch.eye(4, dtype=torch.float64)[None].clone()
    forward[0, :3, 3] = torch.tensor([2.0, -1.0, 3.0])

    out, _ = warp(image, None, torch.ones(1, 3, dtype=torch.float64), forward, image_padding="zeros")

    rolled = torch.roll(image, shifts=(2, -1, 3), dims=(2, 3, 4))
    assert torch.equal(out[..., 2:, :-1, 3:], rolled[..., 2:, :-1, 3:])
    assert torch.equal(out[..., :2, :, :], torch.zeros_like(out[..., :2, :, :]))


def test_otsu_padding_matches_torchio():
    # Dark background near 0.1 with a bright block on part of the border: the mean of
    # all border voxels would be pulled up by the block, the darker Otsu class is not.
    # The two clusters lie far apart, so SimpleITK's histogram bins and medaug's exact
    # split put the threshold between the same two values.
    generator = torch.Generator().manual_seed(22)
    image = torch.rand(1, 1, 12, 12, 12, generator=generator) * 0.2
    image[..., 6:, :5, :] = 5.0 + torch.rand(1, 1, 6, 5, 12, generator=generator) * 0.2
    params = [affine_params([[0.0, 0.0, 0.0]], [1.0], [[3.0, 0.0, 0.0]])]

    out = Pipeline([RandomAffine()], image_padding="otsu").apply({"image": image}, params)["image"]

    theirs = tio.Affine(scales=(1.0, 1.0, 1.0), degrees=(0.0, 0.0, 0.0), translation=(3.0, 0.0, 0.0), default_pad_value="otsu")(
        tio.ScalarImage(tensor=image[0])
    ).data
    # A whole-voxel translation copies voxels in both, so the only computed values are
    # the fill, a float32 mean of a few hundred values in both.
    torch.testing.assert_close(out[0], theirs, rtol=0.0, atol=1e-6)
    fill = out[0, 0, :3]
    assert float(fill.amax()) < 0.2, "the fill includes the bright block"
