"""Every preset builds and runs in 2D and 3D. Strategies with intensity transforms, compositions and artifacts are validated."""

from __future__ import annotations

import pytest
import torch

from augment import (
    PRESETS,
    MRIArtifacts,
    OneOf,
    RandomAffine,
    RandomFlip,
    RandomGamma,
    RandomGaussianBlur,
    RandomGaussianNoise,
    StrategyError,
    build_strategy,
    build_worker_transform,
    derive_generator,
)

BATCH_SHAPES = {"3d": (2, 1, 16, 16, 16), "2d": (2, 1, 32, 32)}


def make_batch(shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(shape, generator=generator)
    label = torch.randint(0, 3, (shape[0], 1, *shape[2:]), generator=generator)
    spacing = torch.ones(shape[0], len(shape) - 2, dtype=torch.float64)
    return {"image": image, "label": label, "spacing": spacing}


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("shape_name", sorted(BATCH_SHAPES))
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_runs(preset, shape_name, seed):
    batch = make_batch(BATCH_SHAPES[shape_name])

    out = build_strategy(preset)(batch, derive_generator(seed))

    assert out["image"].shape == batch["image"].shape
    assert out["image"].dtype == torch.float32
    assert torch.isfinite(out["image"]).all()
    assert out["label"].shape == batch["label"].shape
    assert out["label"].dtype == batch["label"].dtype
    assert set(out["label"].unique().tolist()) <= {0, 1, 2}


@pytest.mark.parametrize("shape_name", sorted(BATCH_SHAPES))
@pytest.mark.parametrize("preset", ["mri-artifacts", "all"])
def test_preset_worker_transform_runs(preset, shape_name):
    batch = make_batch(BATCH_SHAPES[shape_name])
    worker_transform = build_worker_transform(preset)

    for index in range(batch["image"].shape[0]):
        image = batch["image"][index]
        out = worker_transform(image, spacing=batch["spacing"][index], seed=0, index=index)
        assert out.shape == image.shape, index
        assert out.dtype == torch.float32, index
        assert torch.isfinite(out).all(), index


def test_preset_names():
    assert set(PRESETS) == {"none", "rigid", "nonrigid", "intensity", "mri-artifacts", "nnunet", "all"}


def test_spatial_presets_keep_their_definitions():
    # These mappings are hashed into run ids, so a change would orphan finished runs.
    assert PRESETS["none"] == {"transforms": []}
    assert PRESETS["rigid"] == {
        "transforms": [
            {"flip": {"p": 0.5}},
            {"affine": {"degrees": 15.0, "translation": 4.0, "p": 0.5}},
        ]
    }
    assert PRESETS["nonrigid"] == {
        "transforms": [
            {"flip": {"p": 0.5}},
            {"affine": {"degrees": 15.0, "translation": 4.0, "scale": [0.85, 1.15], "shear": 0.1, "p": 0.5}},
            {"elastic": {"max_displacement": 2.0, "control_points": 5, "p": 0.3}},
        ]
    }


def test_nnunet_preset_probabilities():
    pipeline = build_strategy("nnunet")

    probabilities = [(type(t).__name__, t.p) for t in pipeline.transforms]

    assert probabilities == [
        ("RandomAffine", 0.2),
        ("RandomAffine", 0.2),
        ("RandomFlip", 0.5),
        ("RandomGaussianNoise", 0.1),
        ("RandomGaussianBlur", 0.2),
        ("RandomMultiplicativeBrightness", 0.15),
        ("RandomContrast", 0.15),
        ("RandomLowResolution", 0.25),
        ("RandomGamma", 0.1),
        ("RandomGamma", 0.3),
    ]


def test_nnunet_preset_ranges():
    rotation, scaling, _, noise, blur, brightness, contrast, low_resolution, inverted_gamma, gamma = build_strategy("nnunet").transforms

    assert rotation.degrees == (-30.0, 30.0)
    assert scaling.scale == pytest.approx((1 / 1.4, 1 / 0.7))
    assert noise.std == (0.0, 0.1)
    assert blur.sigma == (0.5, 1.0)
    assert blur.units == "voxel"
    assert blur.p_per_channel == 0.5
    assert brightness.factor == (0.75, 1.25)
    assert contrast.factor == (0.75, 1.25)
    assert contrast.preserve_range
    assert low_resolution.scale == (0.5, 1.0)
    assert low_resolution.p_per_channel == 0.5
    assert inverted_gamma.invert
    assert not gamma.invert
    assert inverted_gamma.gamma == gamma.gamma == (0.7, 1.5)
    assert inverted_gamma.retain_stats and gamma.retain_stats


def test_worker_transform_of_presets():
    assert build_worker_transform("none") is None
    assert build_worker_transform("nnunet") is None
    assert isinstance(build_worker_transform("mri-artifacts"), MRIArtifacts)
    assert isinstance(build_worker_transform("all"), MRIArtifacts)


def test_strategy_yaml_with_intensity_and_artifacts(tmp_path):
    path = tmp_path / "strategy.yaml"
    path.write_text(
        "label_mode: onehot\n"
        "transforms:\n"
        "  - flip: {p: 0.5}\n"
        "  - one_of:\n"
        "      transforms:\n"
        "        - gaussian_noise: {std: [0, 0.05]}\n"
        "        - gaussian_blur: {sigma: 1.0, units: voxel}\n"
        "      weights: [2, 1]\n"
        "      p: 0.4\n"
        "  - gamma: {gamma: [0.8, 1.2], invert: true, p: 0.2}\n"
        "worker_transforms:\n"
        "  - motion: {degrees: 3, translation: 2, p: 0.1}\n"
        "  - bias_field: {coefficients: 0.2}\n"
    )

    pipeline = build_strategy(str(path))
    worker = build_worker_transform(str(path))

    assert [type(t) for t in pipeline.transforms] == [RandomFlip, OneOf, RandomGamma]
    one_of = pipeline.transforms[1]
    assert [type(t) for t in one_of.transforms] == [RandomGaussianNoise, RandomGaussianBlur]
    assert one_of.weights == (2.0, 1.0)
    assert one_of.p == 0.4
    assert one_of.transforms[0].std == (0.0, 0.05)
    assert one_of.transforms[1].sigma == (0.0, 1.0)
    assert pipeline.transforms[2].invert
    assert pipeline.spatial == [pipeline.transforms[0]]
    assert [type(t).__name__ for t in worker.transforms] == ["RandomMotion", "RandomBiasField"]
    assert worker.transforms[0].probability == 0.1


@pytest.mark.parametrize(
    "strategy, expected",
    [
        ({"transforms": [{"gama": {}}]}, "unknown transform 'gama' at transforms[0] (did you mean 'gamma'?)"),
        ({"transforms": [{"gamma": {"gama": 1.0}}]}, "unknown key 'gama' for transform 'gamma' (did you mean 'gamma'?)"),
        (
            {"transforms": [{"contrast": {"factor": [1.5, 0.5]}}]},
            "invalid value in transforms[0].contrast: factor must have min <= max, got [1.5, 0.5]",
        ),
        (
            {"transforms": [{"gaussian_blur": {"p_per_channel": 2}}]},
            "invalid value in transforms[0].gaussian_blur: p_per_channel must be a probability in [0, 1], got 2",
        ),
        (
            {"transforms": [{"flip": {}}, {"one_of": {"transforms": [{"gamma": {}}, {"noise": {}}]}}]},
            "unknown transform 'noise' at transforms[1].one_of.transforms[1]",
        ),
        (
            {"transforms": [{"some_of": {"transforms": [{"gamma": {}}], "n": 3}}]},
            "invalid value in transforms[0].some_of: n must satisfy 0 <= min <= max <= 1 (the number of transforms), got 3",
        ),
        ({"transforms": [{"one_of": {"p": 0.5}}]}, "transforms[0].one_of is missing its 'transforms' list"),
        ({"transforms": [{"one_of": {"transforms": [], "wieghts": []}}]}, "unknown key 'wieghts' for transform 'one_of' (did you mean 'weights'?)"),
        ({"worker_transforms": [{"motoin": {}}]}, "unknown MRI artifact 'motoin' at worker_transforms[0] (did you mean 'motion'?)"),
        ({"worker_transforms": [{"ghosting": {"num_ghost": 3}}]}, "unknown key 'num_ghost' for transform 'ghosting' (did you mean 'num_ghosts'?)"),
        ({"worker_transforms": [{"spike": {"p": 3}}]}, "invalid value in worker_transforms[0].spike:"),
        ({"worker_transforms": {"motion": {}}}, "worker_transforms must be a list of transforms"),
        ({"transforms": [], "worker_transform": []}, "unknown strategy key 'worker_transform' (did you mean 'worker_transforms'?)"),
    ],
    ids=[
        "transform_name",
        "transform_key",
        "range_order",
        "p_per_channel",
        "nested_name",
        "some_of_n",
        "missing_children",
        "composition_key",
        "artifact_name",
        "artifact_key",
        "artifact_value",
        "worker_not_list",
        "top_level_key",
    ],
)
def test_invalid_strategy_names_the_key(strategy, expected):
    with pytest.raises(StrategyError) as raised:
        build_strategy(strategy)

    assert str(raised.value).startswith(expected)


def test_spatial_property_includes_composed_children():
    pipeline = build_strategy({"transforms": [{"one_of": {"transforms": [{"flip": {}}, {"affine": {"degrees": 5}}, {"gamma": {}}]}}]})

    assert [type(t) for t in pipeline.spatial] == [RandomFlip, RandomAffine]
    assert [type(t) for t in pipeline.intensity] == [RandomGamma]
