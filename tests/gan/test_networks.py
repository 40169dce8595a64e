"""Generator shapes and ranges, upsampling without transposed convolutions, PatchGAN receptive field."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gan.errors import GanError
from gan.networks import PatchDiscriminator, build_generator, receptive_field


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    torch.manual_seed(0)


@pytest.mark.parametrize("name", ["resnet", "unet"])
@pytest.mark.parametrize("size", [(17, 23), (32, 32), (35, 50), (9, 64)])
def test_generator_keeps_odd_sizes(name, size):
    kwargs = {"features": 4, "blocks": 1} if name == "resnet" else {"features": 4, "depth": 4}
    generator = build_generator(name, 3, 1, **kwargs)
    output = generator(torch.randn(2, 3, *size))
    assert output.shape == (2, 1, *size)
    assert output.abs().max() <= 1.0


def test_generator_multichannel_output():
    generator = build_generator("resnet", 5, 5, features=4, blocks=1)
    assert generator(torch.randn(1, 5, 20, 21)).shape == (1, 5, 20, 21)


@pytest.mark.parametrize("name", ["resnet", "unet"])
def test_generators_have_no_transposed_convolution(name):
    generator = build_generator(name, 1, 1)
    kinds = {type(module) for module in generator.modules()}
    assert nn.ConvTranspose2d not in kinds
    assert nn.Upsample in kinds


def test_resnet_default_layout():
    generator = build_generator("resnet", 1, 1)
    blocks = [m for m in generator.modules() if type(m).__name__ == "ResidualBlock"]
    assert len(blocks) == 9
    widths = [m.out_channels for m in generator.modules() if isinstance(m, nn.Conv2d)]
    assert max(widths) == 256


def test_generator_records_its_config():
    generator = build_generator("unet", 6, 1, features=8, depth=3, dropout=0.0)
    assert generator.generator_config == {"name": "unet", "in_channels": 6, "out_channels": 1, "features": 8, "depth": 3, "dropout": 0.0}


def test_build_generator_rejects_bad_settings():
    with pytest.raises(GanError, match="unknown generator 'vnet'"):
        build_generator("vnet", 1, 1)
    with pytest.raises(GanError, match="invalid settings"):
        build_generator("resnet", 1, 1, width=3)
    with pytest.raises(GanError, match="norm"):
        build_generator("unet", 1, 1, norm="layer")
    with pytest.raises(GanError, match="in_channels"):
        build_generator("resnet", 0, 1)


def test_receptive_field_formula():
    assert receptive_field(3) == 70
    assert receptive_field(1) == 16
    assert receptive_field(2) == 34
    assert PatchDiscriminator().receptive_field == 70


def _gradient_footprint(discriminator: nn.Module, size: int) -> tuple[int, int]:
    image = torch.randn(1, 1, size, size, requires_grad=True)
    scores = discriminator(image)
    centre = (scores.shape[-2] // 2, scores.shape[-1] // 2)
    scores[0, 0, centre[0], centre[1]].backward()
    touched = image.grad[0, 0].abs() > 0
    rows = touched.any(dim=1).nonzero()
    columns = touched.any(dim=0).nonzero()
    return int(rows.max() - rows.min() + 1), int(columns.max() - columns.min() + 1)


def test_patch_discriminator_sees_70_pixels():
    # Without normalisation each output depends only on its own patch; instance norm would couple all pixels.
    discriminator = PatchDiscriminator(1, features=4, norm="none")
    footprint = _gradient_footprint(discriminator, 160)
    assert footprint == (70, 70)


def test_patch_discriminator_output_shape():
    discriminator = PatchDiscriminator(3, features=4)
    # Three stride-2 layers and two 4x4 stride-1 convolutions: 128 -> 64 -> 32 -> 16 -> 15 -> 14.
    assert discriminator(torch.randn(2, 3, 128, 128)).shape == (2, 1, 14, 14)
