"""Label maps keep their class values through resampling transforms.

Every row of the label map is ``[1, 1, 3, 3, 9, 9]``. Linear interpolation between
neighbouring classes would create 2 (between 1 and 3), 5 (between 1 and 9) or
6 (between 3 and 9), so those values must never appear. Voxels sampled from
outside the field of view must be background 0.
"""

from __future__ import annotations

import pytest
import torch

from augment import Pipeline, RandomAffine, RandomElastic, RandomFlip, RandomRot90, derive_generator

ALLOWED_VALUES = {0, 1, 3, 9}
INTERPOLATED_VALUES = (2, 5, 6)
SEED = 7


def make_label(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """Return a ``(1, 1, *shape)`` label map whose values along axis 1 are ``[1, 1, 3, 3, 9, 9]``."""
    row = torch.tensor([1, 1, 3, 3, 9, 9], dtype=dtype)
    view_shape = [1] * len(shape)
    view_shape[1] = 6
    return row.view(view_shape).expand(shape).reshape(1, 1, *shape).clone()


TRANSFORMS = {
    "rotation_30_degrees": lambda: [RandomAffine(degrees=(30, 30))],
    "elastic": lambda: [RandomElastic(max_displacement=2.0, control_points=3)],
    "zoom_shear_translation": lambda: [RandomAffine(scale=(0.7, 1.3), isotropic=False, shear=0.2, translation=1.3)],
    "flip_rot90_affine_elastic": lambda: [
        RandomFlip(p=0.5),
        RandomRot90(axes=(0, 1), p=1.0),
        RandomAffine(degrees=20, scale=0.2, translation=0.7),
        RandomElastic(max_displacement=1.5, control_points=4),
    ],
}
SHAPES = {"2d": (4, 6), "3d": (4, 6, 5)}


@pytest.mark.parametrize("dtype", [torch.int64, torch.uint8], ids=["int64", "uint8"])
@pytest.mark.parametrize("label_mode", ["nearest", "onehot"])
@pytest.mark.parametrize("transform_name", sorted(TRANSFORMS))
@pytest.mark.parametrize("shape_name", sorted(SHAPES))
def test_label_warp_keeps_class_values(shape_name, transform_name, label_mode, dtype):
    label = make_label(SHAPES[shape_name], dtype)
    batch = {"image": label.to(torch.float32), "label": label}
    pipeline = Pipeline(TRANSFORMS[transform_name](), label_mode=label_mode)

    out = pipeline(batch, derive_generator(SEED))

    values = set(out["label"].unique().tolist())
    assert values <= ALLOWED_VALUES, f"label values {sorted(values)} are not all in {sorted(ALLOWED_VALUES)}"
    for value in INTERPOLATED_VALUES:
        assert value not in values, f"interpolated value {value} appeared in the label"
    assert out["label"].dtype == dtype
    assert out["label"].shape == label.shape
    # Without this the checks above would also pass for a transform that did nothing.
    assert not torch.equal(out["label"], label), "the transform left the label unchanged"


@pytest.mark.parametrize("image_padding", ["zeros", "minimum", "mean", "border", "otsu", 5.0])
@pytest.mark.parametrize("label_mode", ["nearest", "onehot"])
@pytest.mark.parametrize("transform_name", sorted(TRANSFORMS))
@pytest.mark.parametrize("shape_name", sorted(SHAPES))
def test_background_only_from_outside(shape_name, transform_name, label_mode, image_padding):
    # The label has no background, so 0 may only appear where the warp sampled outside
    # the field of view. Replaying the same parameters on a label of ones marks those
    # voxels with 0, whatever the image padding.
    label = make_label(SHAPES[shape_name], torch.int64)
    batch = {"image": label.to(torch.float32), "label": label}
    pipeline = Pipeline(TRANSFORMS[transform_name](), label_mode=label_mode, image_padding=image_padding)

    out = pipeline(batch, derive_generator(SEED))
    ones = pipeline.apply(dict(batch, label=torch.ones_like(label)), out["augmentation"])["label"]

    assert set(ones.unique().tolist()) <= {0, 1}
    background = out["label"] == 0
    assert torch.equal(background, ones == 0), "background appeared inside the field of view, or outside voxels kept a class"


@pytest.mark.parametrize("label_mode", ["nearest", "onehot"])
def test_zoom_by_two_gives_four_column_stripes(label_mode):
    # The 4x6 stripe label [1, 1, 3, 3, 9, 9] sits in rows 2-5 and columns 3-8 of an
    # 8x12 canvas. A zoom by 2 about the centre (3.5, 5.5) makes output voxel (i, j)
    # sample (3.5 + (i - 3.5) / 2, 5.5 + (j - 5.5) / 2). That position lies a quarter
    # voxel from one stripe voxel and never on a tie, so the stripes fill the canvas.
    label = torch.zeros(1, 1, 8, 12, dtype=torch.int64)
    label[0, 0, 2:6, 3:9] = make_label((4, 6), torch.int64)[0, 0]
    batch = {"image": label.to(torch.float32), "label": label}
    pipeline = Pipeline([RandomAffine(scale=(2.0, 2.0))], label_mode=label_mode)

    out = pipeline(batch, derive_generator(SEED))

    expected = torch.tensor([1] * 4 + [3] * 4 + [9] * 4).expand(8, 12)
    assert out["label"].dtype == torch.int64
    assert torch.equal(out["label"][0, 0], expected)
    for value in (1, 3, 9):
        assert int((out["label"] == value).sum()) == 32, f"class {value} does not cover 32 voxels"
