"""Gaussian blur agrees with Kornia in 2D and SciPy in 3D, and honours the spacing in millimetres."""

from __future__ import annotations

import math

import kornia
import numpy as np
import pytest
import scipy.ndimage
import torch

from augment import Pipeline, RandomGaussianBlur, derive_generator, gaussian_blur


def blur(image: torch.Tensor, transform: RandomGaussianBlur, spacing: list[float] | None = None) -> torch.Tensor:
    batch = {"image": image}
    if spacing is not None:
        batch["spacing"] = torch.tensor([spacing] * image.shape[0], dtype=torch.float64)
    return Pipeline([transform])(batch, derive_generator(0))["image"]


def kernel_size(sigma: float) -> int:
    """Kernel size used by ``gaussian_blur``: radius ``ceil(4 * sigma)``."""
    return 2 * math.ceil(4 * sigma) + 1


@pytest.mark.parametrize("sigma", [0.7, 1.5])
def test_blur_2d_matches_kornia(sigma):
    image = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))

    out = blur(image, RandomGaussianBlur(sigma=(sigma, sigma), units="voxel"))

    size = kernel_size(sigma)
    expected = kornia.filters.gaussian_blur2d(image, (size, size), (sigma, sigma), border_type="reflect")
    torch.testing.assert_close(out, expected, rtol=0.0, atol=1e-5)


def test_blur_in_mm_divides_by_spacing():
    # 2 mm at spacing (2, 1) mm is 1 voxel along axis 0 and 2 voxels along axis 1.
    image = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(1))

    out = blur(image, RandomGaussianBlur(sigma=(2.0, 2.0), units="mm"), spacing=[2.0, 1.0])

    expected = kornia.filters.gaussian_blur2d(image, (kernel_size(1.0), kernel_size(2.0)), (1.0, 2.0), border_type="reflect")
    torch.testing.assert_close(out, expected, rtol=0.0, atol=1e-5)


def test_blur_3d_matches_scipy():
    # torch's "reflect" padding is SciPy's "mirror" mode, and truncate=4 gives SciPy radius 4 at sigma 1.
    image = torch.randn(1, 1, 12, 13, 14, generator=torch.Generator().manual_seed(2))

    out = blur(image, RandomGaussianBlur(sigma=(1.0, 1.0), units="voxel"))

    expected = scipy.ndimage.gaussian_filter(image[0, 0].double().numpy(), sigma=1.0, mode="mirror", truncate=4.0)
    np.testing.assert_allclose(out[0, 0].numpy(), expected, rtol=0.0, atol=1e-5)


def test_single_slice_volume_blurs_in_plane_only():
    image = torch.randn(1, 1, 1, 32, 32, generator=torch.Generator().manual_seed(3))

    out = blur(image, RandomGaussianBlur(sigma=(1.0, 1.0), units="voxel"))

    expected = kornia.filters.gaussian_blur2d(image[:, :, 0], (kernel_size(1.0), kernel_size(1.0)), (1.0, 1.0), border_type="reflect")
    torch.testing.assert_close(out[:, :, 0], expected, rtol=0.0, atol=1e-5)


def test_samples_get_their_own_sigma():
    image = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(4))
    sigma = torch.tensor([[[0.7, 0.7]], [[1.5, 1.5]]])

    out = gaussian_blur(image, sigma)

    # Both samples share the kernel size of the larger sigma, so the smaller one keeps its tiny outer taps.
    size = kernel_size(1.5)
    for index, value in enumerate((0.7, 1.5)):
        expected = kornia.filters.gaussian_blur2d(image[index : index + 1], (size, size), (value, value), border_type="reflect")
        torch.testing.assert_close(out[index : index + 1], expected, rtol=0.0, atol=1e-5)


def test_zero_sigma_keeps_sample():
    image = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(5))
    sigma = torch.tensor([[[0.0, 0.0]], [[1.0, 1.0]]])

    out = gaussian_blur(image, sigma)

    assert torch.equal(out[0], image[0])
    assert not torch.equal(out[1], image[1])


def test_blur_keeps_constant_image():
    image = torch.full((1, 1, 2, 3, 4), 5.0)

    out = blur(image, RandomGaussianBlur(sigma=(3.0, 3.0), units="voxel"))

    torch.testing.assert_close(out, image, rtol=0.0, atol=1e-6)
