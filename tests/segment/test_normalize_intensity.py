"""normalize_intensity: constant volumes give zeros, any real dtype works, large maxima stay finite."""

from __future__ import annotations

import numpy as np
import pytest

from segment.data import normalize_intensity


@pytest.mark.parametrize(
    ("name", "image"),
    [
        ("constant 7.0 volume", np.full((1, 6, 7, 8), 7.0, dtype=np.float32)),
        ("zero volume", np.zeros((1, 6, 7, 8), dtype=np.float32)),
        ("constant -1024 2D slice", np.full((1, 16, 16), -1024, dtype=np.int16)),
    ],
)
def test_constant_image_becomes_zeros(name, image):
    out = normalize_intensity(image)

    assert out.dtype == np.float32
    assert out.shape == image.shape
    assert not np.isnan(out).any(), name
    assert np.all(out == 0.0), name


def test_uint8_input_matches_float64():
    image = np.random.default_rng(0).integers(0, 256, size=(1, 10, 11, 12), dtype=np.uint8)

    out = normalize_intensity(image)

    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, normalize_intensity(image.astype(np.float64)))
    assert abs(out.astype(np.float64).mean()) < 1e-6
    assert abs(out.astype(np.float64).std() - 1.0) < 1e-6


def test_million_scale_float32_is_finite():
    # Hippocampus images reach maxima of about 1.7 million in float32.
    rng = np.random.default_rng(1)
    image = np.zeros((1, 20, 20, 20), dtype=np.float32)
    image[0, 5:15, 5:15, 5:15] = rng.normal(1.2e6, 1.5e5, size=(10, 10, 10))
    image[0, 10, 10, 10] = 1.7e6

    out = normalize_intensity(image).astype(np.float64)

    assert np.isfinite(out).all()
    # Tolerance 1e-5: the z-score is computed in float64 and only rounded to float32 (relative error about 6e-8).
    assert abs(out.mean()) < 1e-5
    assert abs(out.std() - 1.0) < 1e-5


def test_outliers_clipped_at_percentiles():
    image = np.arange(1000, dtype=np.float64).reshape(1, 10, 10, 10)
    image[0, 9, 9, 9] = 1e9

    out = normalize_intensity(image)

    low, high = np.percentile(image[0], [0.5, 99.5])
    clipped = np.clip(image[0], low, high)
    expected = (clipped - clipped.mean()) / clipped.std()
    np.testing.assert_allclose(out[0], expected, rtol=0, atol=1e-6)


def test_channels_normalised_separately():
    rng = np.random.default_rng(2)
    image = np.stack([rng.normal(0.0, 1.0, size=(8, 8, 8)), rng.normal(5e4, 1e4, size=(8, 8, 8))])

    out = normalize_intensity(image)

    np.testing.assert_array_equal(out[0], normalize_intensity(image[:1])[0])
    np.testing.assert_array_equal(out[1], normalize_intensity(image[1:])[0])
