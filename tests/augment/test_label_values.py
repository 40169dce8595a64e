"""Label maps keep their class values through resampling transforms.

Every row of the label map is ``[1, 1, 3, 3, 9, 9]``. Linear interpolation between
neighbouring classes would create 2 (between 1 and 3), 5 (between 1 and 9) or
6 (between 3 and 9), so those values must never appear. Voxels sampled from
outside the field of view must be background 0.
"""

from __future__ import annotations

import pytest
import torch

from augment import Pipeline, RandomAffine, RandomElastic, derive_generator

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
    "rotation_30_degrees": lambda: RandomAffine(degrees=(30, 30)),
    "elastic": lambda: RandomElastic(max_displacement=2.0, control_points=3),
}
SHAPES = {"2d": (4, 6), "3d": (4, 6, 5)}


@pytest.mark.parametrize("dtype", [torch.int64, torch.uint8], ids=["int64", "uint8"])
@pytest.mark.parametrize("label_mode", ["nearest", "onehot"])
@pytest.mark.parametrize("transform_name", sorted(TRANSFORMS))
@pytest.mark.parametrize("shape_name", sorted(SHAPES))
def test_label_warp_keeps_class_values(shape_name, transform_name, label_mode, dtype):
    label = make_label(SHAPES[shape_name], dtype)
    batch = {"image": label.to(torch.float32), "label": label}
    pipeline = Pipeline([TRANSFORMS[transform_name]()], label_mode=label_mode)

    out = pipeline(batch, derive_generator(SEED))

    values = set(out["label"].unique().tolist())
    assert values <= ALLOWED_VALUES, f"label values {sorted(values)} are not all in {sorted(ALLOWED_VALUES)}"
    for value in INTERPOLATED_VALUES:
        assert value not in values, f"interpolated value {value} appeared in the label"
    assert out["label"].dtype == dtype
    assert out["label"].shape == label.shape
    # Without this the checks above would also pass for a transform that did nothing.
    assert not torch.equal(out["label"], label), "the transform left the label unchanged"
