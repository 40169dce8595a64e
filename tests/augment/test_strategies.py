"""Strategy names, mappings and YAML files are validated with the offending key named."""

from __future__ import annotations

import pytest
import torch

from augment import (
    Pipeline,
    RandomAffine,
    RandomElastic,
    RandomFlip,
    StrategyError,
    build_strategy,
    derive_generator,
)


def test_misspelled_preset_suggests_name():
    with pytest.raises(StrategyError) as raised:
        build_strategy("rigd")

    assert "'rigd'" in str(raised.value)
    assert "did you mean 'rigid'" in str(raised.value)


def test_unknown_transform_key_suggests_name():
    with pytest.raises(StrategyError) as raised:
        build_strategy({"transforms": [{"affine": {"degres": 10}}]})

    assert "'degres'" in str(raised.value)
    assert "did you mean 'degrees'" in str(raised.value)


def test_unknown_transform_name_suggests_name():
    with pytest.raises(StrategyError) as raised:
        build_strategy({"transforms": [{"elastc": {}}]})

    assert "'elastc'" in str(raised.value)
    assert "did you mean 'elastic'" in str(raised.value)


def test_unknown_top_level_key_suggests_name():
    with pytest.raises(StrategyError) as raised:
        build_strategy({"transforms": [], "label_mod": "onehot"})

    assert "'label_mod'" in str(raised.value)
    assert "did you mean 'label_mode'" in str(raised.value)


def test_out_of_range_probability_is_rejected():
    with pytest.raises(StrategyError) as raised:
        build_strategy({"transforms": [{"flip": {"p": 1.5}}]})

    message = str(raised.value)
    assert "transforms[0].flip" in message
    assert "probability p must be in [0, 1]" in message
    assert "1.5" in message


def test_invalid_padding_mode_is_rejected():
    with pytest.raises(StrategyError) as raised:
        build_strategy({"transforms": [], "image_padding": "reflect"})

    assert "'reflect'" in str(raised.value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), True, "5"], ids=["nan", "inf", "bool", "string"])
def test_invalid_padding_value_is_rejected(value):
    with pytest.raises(StrategyError) as raised:
        build_strategy({"transforms": [], "image_padding": value})

    assert str(raised.value).startswith("image_padding must be one of ('zeros', 'minimum', 'mean', 'border', 'otsu') or a finite number, got ")


@pytest.mark.parametrize(("value", "expected"), [(-1024, -1024.0), (0.5, 0.5), ("otsu", "otsu")])
def test_padding_number_or_otsu_is_accepted(value, expected):
    pipeline = build_strategy({"transforms": [], "image_padding": value})

    assert pipeline.image_padding == expected


def test_missing_strategy_file_is_rejected(tmp_path):
    missing = tmp_path / "absent.yaml"

    with pytest.raises(StrategyError) as raised:
        build_strategy(str(missing))

    assert "not found" in str(raised.value)
    assert str(missing) in str(raised.value)


def test_strategy_yaml_file_is_accepted(tmp_path):
    path = tmp_path / "strategy.yaml"
    path.write_text(
        "image_padding: mean\n"
        "label_mode: onehot\n"
        "transforms:\n"
        "  - flip: {p: 0.25, axes: [0, 2]}\n"
        "  - affine: {degrees: 10, translation: [-2, 3], p: 0.5}\n"
        "  - elastic: {max_displacement: 1.5, control_points: 4}\n"
    )

    pipeline = build_strategy(str(path))

    assert pipeline.image_padding == "mean"
    assert pipeline.label_mode == "onehot"
    assert [type(t) for t in pipeline.spatial] == [RandomFlip, RandomAffine, RandomElastic]
    flip, affine, elastic = pipeline.spatial
    assert flip.p == 0.25
    assert flip.axes == (0, 2)
    assert affine.degrees == (-10, 10)
    assert affine.translation == (-2.0, 3.0)
    assert affine.p == 0.5
    assert elastic.max_displacement == (1.5,)
    assert elastic.control_points == 4


def test_none_strategy_returns_batch_unchanged():
    image = torch.randn(2, 1, 5, 6, 7, generator=torch.Generator().manual_seed(0))
    batch = {"image": image, "label": (image > 0).to(torch.int64), "case_id": ["a", "b"]}

    pipeline = build_strategy("none")
    out = pipeline(batch, derive_generator(0))

    assert isinstance(pipeline, Pipeline)
    assert pipeline.spatial == []
    assert torch.equal(out["image"], batch["image"])
    assert torch.equal(out["label"], batch["label"])
    assert out["case_id"] == ["a", "b"]
    assert out["augmentation"] == []
