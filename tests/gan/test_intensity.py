"""Intensity mappings between physical units and the generator range [-1, 1]."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gan.errors import GanError
from gan.intensity import (
    CTWindow,
    FittedPercentiles,
    Percentiles,
    ZScoreClip,
    intensity_from_state,
    make_intensity,
)


@pytest.mark.parametrize(("output", "expected_hu"), [(-1.0, -1000.0), (0.0, 500.0), (1.0, 2000.0)])
def test_ct_window_maps_generator_output_to_hu(output, expected_hu):
    window = CTWindow(-1000.0, 2000.0)
    generated = torch.full((1, 1, 4, 4), output)
    hu = window.from_model(generated)
    assert hu.dtype == torch.float32
    assert torch.all((hu - expected_hu).abs() <= 1.0)
    assert np.all(np.abs(window.from_model(generated.numpy()) - expected_hu) <= 1.0)


def test_ct_window_uses_same_constants_for_every_volume():
    bright = np.full((4, 4, 3), 1500, dtype=np.int16)
    dark = np.linspace(-1000, 0, 48, dtype=np.float32).reshape(4, 4, 3)
    window_bright = make_intensity("ct").fit(bright)
    window_dark = make_intensity("ct").fit(dark)
    zeros = np.zeros((4, 4), dtype=np.float32)
    assert np.array_equal(window_bright.from_model(zeros), window_dark.from_model(zeros))
    assert window_bright.state() == window_dark.state() == {"name": "ct", "low": -1000.0, "high": 2000.0}


def test_ct_round_trip_within_one_hu():
    hu = np.arange(-1000, 2001, 7, dtype=np.int16)
    window = CTWindow()
    back = window.from_model(window.to_model(hu))
    assert back.dtype == np.float32
    assert np.max(np.abs(back - hu)) <= 1.0


def test_ct_clips_outside_window():
    window = CTWindow()
    hu = np.array([-3024, -1000, 2000, 3071], dtype=np.int16)
    model = window.to_model(hu)
    assert model.tolist() == [-1.0, -1.0, 1.0, 1.0]
    assert window.from_model(np.array([-1.7, 1.3])).tolist() == [-1000.0, 2000.0]


@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.float32, np.float64])
def test_outputs_are_float32(dtype):
    volume = np.arange(60, dtype=dtype).reshape(3, 4, 5)
    for mapping in (CTWindow(), Percentiles().fit(volume), ZScoreClip()):
        assert mapping.to_model(volume).dtype == np.float32
        assert mapping.to_model(torch.from_numpy(volume.astype(np.float32) if dtype == np.uint16 else volume)).dtype == torch.float32
        assert mapping.from_model(np.zeros(3, dtype=dtype)).dtype == np.float32


def test_percentiles_fit_per_volume():
    rng = np.random.default_rng(0)
    volume = rng.uniform(0, 1000, size=(20, 20, 20))
    fitted = Percentiles(1.0, 99.0).fit(volume)
    assert fitted.low == pytest.approx(np.percentile(volume, 1.0))
    assert fitted.high == pytest.approx(np.percentile(volume, 99.0))
    model = fitted.to_model(volume)
    assert model.min() == -1.0
    assert model.max() == 1.0
    inside = (volume >= fitted.low) & (volume <= fitted.high)
    assert np.allclose(fitted.from_model(model)[inside], volume[inside], atol=1e-3)


def test_percentiles_fit_inside_mask():
    volume = np.zeros((10, 10), dtype=np.float32)
    volume[2:8, 2:8] = np.linspace(100, 200, 36).reshape(6, 6)
    fitted = Percentiles(0.0, 100.0).fit(volume, mask=volume > 0)
    assert (fitted.low, fitted.high) == (100.0, 200.0)


def test_constant_volume_gives_finite_values():
    volume = np.full((4, 5, 6), 7, dtype=np.uint16)
    fitted = Percentiles().fit(volume)
    model = fitted.to_model(volume)
    assert np.all(np.isfinite(model))
    assert np.all(model == -1.0)
    assert np.all(fitted.from_model(np.array([-1.0, 0.0, 1.0])) == 7.0)
    assert torch.all(torch.isfinite(fitted.to_model(torch.from_numpy(volume.astype(np.int16)))))


def test_percentiles_reject_nan_volume():
    volume = np.array([1.0, np.nan, 3.0])
    with pytest.raises(GanError, match="NaN"):
        Percentiles().fit(volume)


def test_zscore_clip_maps_limit_to_unit_range():
    mapping = make_intensity("zscore", limit=4.0)
    values = np.array([-10.0, -4.0, 0.0, 2.0, 4.0, 10.0])
    assert mapping.to_model(values).tolist() == [-1.0, -1.0, 0.0, 0.5, 1.0, 1.0]
    assert mapping.from_model(np.array([-1.0, 0.5, 1.0])).tolist() == [-4.0, 2.0, 4.0]


@pytest.mark.parametrize(
    "mapping",
    [CTWindow(-500.0, 1500.0), Percentiles(2.0, 98.0), FittedPercentiles(3.0, 90.0, lower=1.0, upper=99.0), ZScoreClip(3.0)],
)
def test_state_round_trip(mapping):
    import json

    state = json.loads(json.dumps(mapping.state()))
    rebuilt = intensity_from_state(state)
    assert type(rebuilt) is type(mapping)
    assert rebuilt == mapping


def test_unknown_name_rejected():
    with pytest.raises(GanError, match="unknown intensity mapping 'pet'"):
        make_intensity("pet")
    with pytest.raises(GanError, match="invalid settings"):
        make_intensity("ct", width=3)
    with pytest.raises(GanError, match="'name'"):
        intensity_from_state({"low": 1})


def test_invalid_ranges_rejected():
    with pytest.raises(GanError, match="swap"):
        CTWindow(100.0, -100.0)
    with pytest.raises(GanError, match="wider than zero"):
        CTWindow(0.0, 0.0)
    with pytest.raises(GanError, match="lower < upper"):
        Percentiles(90.0, 10.0)
    with pytest.raises(GanError, match="positive"):
        ZScoreClip(0.0)
