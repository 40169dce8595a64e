"""Property-based tests of the augmentation pipeline over shapes, dtypes, label sets and transform parameters.

Invariants checked for random inputs, including size-1 axes, 2D and 3D batches,
uint8, int16 and float images and anisotropic spacing:

- spatial transforms output only label values of the input, or 0 from outside the
  field of view, in every label mode and image padding mode;
- image and label are resampled with the same parameters;
- flips and square 90 degree rotations alone move voxels without interpolation;
- intensity transforms leave labels bit-identical;
- outputs are finite.
"""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from augment import (
    INTENSITY_TRANSFORMS,
    Pipeline,
    RandomAffine,
    RandomElastic,
    RandomFlip,
    RandomRot90,
)
from augment.warp import IMAGE_PADDING_MODES, LABEL_MODES

FUZZ = settings(max_examples=40, deadline=None)

IMAGE_DTYPES = [torch.uint8, torch.int16, torch.float32, torch.float64]
LABEL_DTYPES = [torch.uint8, torch.int32, torch.int64]


@st.composite
def geometry(draw, *, max_size: int = 9) -> tuple[tuple[int, ...], torch.Tensor]:
    """A batch shape ``(B, C, *S)`` with 2 or 3 spatial axes of 1 to ``max_size`` voxels, and a ``(B, D)`` spacing in mm."""
    dims = draw(st.sampled_from([2, 3]))
    batch = draw(st.integers(1, 3))
    channels = draw(st.integers(1, 2))
    spatial = tuple(draw(st.lists(st.integers(1, max_size), min_size=dims, max_size=dims)))
    spacing = draw(st.lists(st.floats(0.5, 3.0), min_size=dims, max_size=dims))
    return (batch, channels, *spatial), torch.tensor([spacing] * batch, dtype=torch.float64)


def random_image(shape: tuple[int, ...], dtype: torch.dtype, seed: int, constant: bool) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    if constant:
        return torch.full(shape, 7, dtype=dtype)
    if dtype == torch.uint8:
        return torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8)
    if dtype == torch.int16:
        return torch.randint(-1024, 1501, shape, generator=generator, dtype=torch.int16)
    return (100 * torch.randn(shape, generator=generator, dtype=torch.float64)).to(dtype)


def random_label(shape: tuple[int, ...], classes: list[int], dtype: torch.dtype, seed: int) -> torch.Tensor:
    """A ``(B, 1, *S)`` label map drawing every voxel from ``classes``."""
    generator = torch.Generator().manual_seed(seed + 1)
    choice = torch.randint(0, len(classes), (shape[0], 1, *shape[2:]), generator=generator)
    return torch.tensor(classes, dtype=dtype)[choice]


@st.composite
def spatial_transform(draw, dims: int):
    kind = draw(st.sampled_from(["flip", "rot90", "affine", "elastic"]))
    p = draw(st.sampled_from([0.0, 0.5, 1.0]))
    if kind == "flip":
        axes = draw(st.none() | st.lists(st.integers(0, dims - 1), min_size=1, max_size=dims, unique=True))
        return RandomFlip(axes=axes, p=p)
    if kind == "rot90":
        axes = draw(st.lists(st.integers(0, dims - 1), min_size=2, max_size=2, unique=True))
        return RandomRot90(axes=tuple(axes), p=p)
    if kind == "affine":
        return RandomAffine(
            degrees=draw(st.floats(0.0, 45.0)),
            scale=draw(st.floats(0.0, 0.4)),
            isotropic=draw(st.booleans()),
            shear=draw(st.floats(0.0, 0.3)),
            translation=draw(st.floats(0.0, 5.0)),
            p=p,
        )
    return RandomElastic(
        max_displacement=draw(st.floats(0.0, 4.0)),
        control_points=draw(st.integers(2, 6)),
        smoothing_sigma=draw(st.floats(0.0, 2.0)),
        p=p,
    )


@st.composite
def spatial_pipeline(draw, dims: int, *, padding: str | None = None) -> Pipeline:
    transforms = draw(st.lists(spatial_transform(dims), min_size=1, max_size=3))
    return Pipeline(
        transforms,
        image_padding=padding or draw(st.sampled_from(IMAGE_PADDING_MODES)),
        label_mode=draw(st.sampled_from(LABEL_MODES)),
    )


def check_image(out: torch.Tensor, image: torch.Tensor) -> None:
    """Same shape, finite, and float: integer images become float32, float images keep their dtype."""
    assert out.shape == image.shape
    assert out.dtype == (image.dtype if image.is_floating_point() else torch.float32)
    assert torch.isfinite(out).all()


@FUZZ
@given(data=st.data(), geometry=geometry(), seed=st.integers(0, 2**31 - 1))
def test_spatial_labels_stay_in_input_classes(data, geometry, seed):
    shape, spacing = geometry
    classes = data.draw(st.lists(st.integers(0, 255), min_size=1, max_size=5, unique=True), label="classes")
    label = random_label(shape, classes, data.draw(st.sampled_from(LABEL_DTYPES), label="label dtype"), seed)
    image = random_image(shape, data.draw(st.sampled_from(IMAGE_DTYPES), label="image dtype"), seed, data.draw(st.booleans(), label="constant"))
    pipeline = data.draw(spatial_pipeline(len(shape) - 2), label="pipeline")

    out = pipeline({"image": image, "label": label, "spacing": spacing}, torch.Generator().manual_seed(seed))

    check_image(out["image"], image)
    assert out["label"].shape == label.shape
    assert out["label"].dtype == label.dtype
    assert set(out["label"].unique().tolist()) <= set(classes) | {0}


@FUZZ
@given(data=st.data(), geometry=geometry(), seed=st.integers(0, 2**31 - 1))
def test_swapped_labels_stay_in_declared_pairs(data, geometry, seed):
    shape, spacing = geometry
    dims = len(shape) - 2
    classes = data.draw(st.lists(st.integers(1, 6), min_size=1, max_size=4, unique=True), label="classes")
    label = random_label(shape, [0, *classes], torch.int64, seed)
    swap = {1: 2, 3: 4}
    axis = data.draw(st.integers(0, dims - 1), label="left-right axis")
    pipeline = Pipeline([RandomFlip(p=0.5, label_swap=swap, left_right_axis=axis)], label_mode=data.draw(st.sampled_from(LABEL_MODES)))

    out = pipeline({"image": torch.zeros(shape), "label": label, "spacing": spacing}, torch.Generator().manual_seed(seed))

    partners = {**swap, **{right: left for left, right in swap.items()}}
    allowed = {0, *classes, *(partners[c] for c in classes if c in partners)}
    assert set(out["label"].unique().tolist()) <= allowed


@FUZZ
@given(data=st.data(), geometry=geometry(), seed=st.integers(0, 2**31 - 1))
def test_image_and_label_share_parameters(data, geometry, seed):
    # The image is the label map itself, resampled linearly with zero padding. Where it
    # comes out exactly 0 or 1, every voxel it interpolates has that value, so the
    # label, sampled at the same point, must have it too.
    shape, spacing = geometry
    shape = (shape[0], 1, *shape[2:])
    label = random_label(shape, [0, 1], torch.int64, seed)
    pipeline = data.draw(spatial_pipeline(len(shape) - 2, padding="zeros"), label="pipeline")

    out = pipeline({"image": label.to(torch.float32), "label": label, "spacing": spacing}, torch.Generator().manual_seed(seed))

    image, warped = out["image"], out["label"]
    assert torch.equal(warped[image == 1.0], torch.ones_like(warped[image == 1.0]))
    assert torch.equal(warped[image == 0.0], torch.zeros_like(warped[image == 0.0]))


@FUZZ
@given(data=st.data(), seed=st.integers(0, 2**31 - 1))
def test_flips_and_square_rotations_are_exact(data, seed):
    dims = data.draw(st.sampled_from([2, 3]), label="dims")
    side = data.draw(st.integers(1, 7), label="side")
    sizes = [side, side, *data.draw(st.lists(st.integers(1, 7), min_size=dims - 2, max_size=dims - 2), label="other sizes")]
    batch = data.draw(st.integers(1, 3), label="batch")
    shape = (batch, 1, *sizes)
    count = batch * int(torch.tensor(sizes).prod())
    # Distinct whole numbers, exact in float32, so every output voxel names its source voxel.
    image = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).to(torch.float32).reshape(shape)
    modulus = data.draw(st.integers(2, 5), label="modulus")
    label = (image.to(torch.int64) % modulus).to(data.draw(st.sampled_from(LABEL_DTYPES), label="label dtype"))
    transforms = [RandomFlip(p=data.draw(st.sampled_from([0.5, 1.0]), label="flip p"))]
    if data.draw(st.booleans(), label="rotate"):
        transforms.append(RandomRot90(axes=(0, 1), p=1.0))
    pipeline = Pipeline(transforms, label_mode=data.draw(st.sampled_from(LABEL_MODES), label="label mode"))

    out = pipeline({"image": image, "label": label}, torch.Generator().manual_seed(seed))

    for sample in range(batch):
        assert torch.equal(out["image"][sample].flatten().sort().values, image[sample].flatten().sort().values)
    assert torch.equal(out["label"], (out["image"].to(torch.int64) % modulus).to(label.dtype))


def ordered_pair(draw, low: float, high: float) -> tuple[float, float]:
    first, second = draw(st.floats(low, high)), draw(st.floats(low, high))
    return (min(first, second), max(first, second))


INTENSITY_PARAMETERS = {
    "gaussian_noise": lambda draw: {"std": draw(st.floats(0.0, 2.0))},
    "rician_noise": lambda draw: {"std": draw(st.floats(0.0, 2.0))},
    "gamma": lambda draw: {"gamma": ordered_pair(draw, 0.3, 3.0), "invert": draw(st.booleans()), "retain_stats": draw(st.booleans())},
    "multiplicative_brightness": lambda draw: {"factor": ordered_pair(draw, 0.1, 2.0)},
    "additive_brightness": lambda draw: {"shift": draw(st.floats(0.0, 5.0))},
    "contrast": lambda draw: {"factor": ordered_pair(draw, 0.1, 2.0), "preserve_range": draw(st.booleans())},
    "gaussian_blur": lambda draw: {"sigma": draw(st.floats(0.0, 3.0)), "units": draw(st.sampled_from(["mm", "voxel"]))},
    "bias_field": lambda draw: {"coefficients": draw(st.floats(0.0, 1.0)), "order": draw(st.integers(1, 4))},
    "low_resolution": lambda draw: {"scale": draw(st.floats(0.2, 1.0)), "downsample_mode": draw(st.sampled_from(["nearest", "linear"]))},
    "zscore": lambda draw: {"mask": draw(st.sampled_from(["none", "nonzero"]))},
    "percentile_clip": lambda draw: {"lower": draw(st.floats(0.0, 40.0)), "upper": draw(st.floats(60.0, 100.0))},
    "minmax": lambda draw: {},
}


def test_every_intensity_transform_is_fuzzed():
    assert set(INTENSITY_PARAMETERS) == set(INTENSITY_TRANSFORMS)


@FUZZ
@given(data=st.data(), geometry=geometry(), seed=st.integers(0, 2**31 - 1))
def test_intensity_transforms_keep_labels(data, geometry, seed):
    shape, spacing = geometry
    names = data.draw(st.lists(st.sampled_from(sorted(INTENSITY_TRANSFORMS)), min_size=1, max_size=3), label="transforms")
    transforms = [INTENSITY_TRANSFORMS[name](**INTENSITY_PARAMETERS[name](data.draw), p=data.draw(st.sampled_from([0.5, 1.0]))) for name in names]
    classes = data.draw(st.lists(st.integers(0, 255), min_size=1, max_size=5, unique=True), label="classes")
    label = random_label(shape, classes, data.draw(st.sampled_from(LABEL_DTYPES), label="label dtype"), seed)
    probability = torch.rand(label.shape, generator=torch.Generator().manual_seed(seed))
    image = random_image(shape, data.draw(st.sampled_from(IMAGE_DTYPES), label="image dtype"), seed, data.draw(st.booleans(), label="constant"))
    batch = {"image": image, "label": label.clone(), "probability": probability.clone(), "spacing": spacing}

    out = Pipeline(transforms)(batch, torch.Generator().manual_seed(seed))

    check_image(out["image"], image)
    assert out["label"].dtype == label.dtype
    assert torch.equal(out["label"], label)
    assert torch.equal(out["probability"], probability)
