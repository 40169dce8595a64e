"""Tests of UNet shapes and training steps, and of padding and cropping in pad_to_multiple and predict_labels."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segment import UNet, build_model, dice_per_class, pad_to_multiple, predict_labels
from segment.models import MODELS, SPATIAL_DIMS


# On a shared 2-core machine a tiny 3D U-Net step took about 0.02 s with one
# torch thread and 1.6 s with two, so these tests pin torch to one thread.
@pytest.fixture(autouse=True, scope="module")
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_unet_3d_output_shape():
    model = UNet(1, 3, features=(4, 8, 16, 32))

    out = model(torch.randn(2, 1, 16, 16, 16))

    assert model.divisor == 8
    assert out.shape == (2, 3, 16, 16, 16)


def test_unet_2d_output_shape():
    model = UNet(2, 4, spatial_dims=2, features=(4, 8, 16))

    out = model(torch.randn(3, 2, 20, 36))

    assert model.divisor == 4
    assert out.shape == (3, 4, 20, 36)


def test_unet_rejects_size_not_multiple():
    model = UNet(1, 3, features=(4, 8, 16, 32))

    with pytest.raises(ValueError, match="multiples of 8") as raised:
        model(torch.randn(1, 1, 16, 12, 16))

    assert "pad_to_multiple" in str(raised.value)


def test_unet_rejects_wrong_dimensions():
    model = UNet(1, 3, features=(4, 8))

    with pytest.raises(ValueError, match=r"3D U-Net expects input \(B, C, X, Y, Z\)"):
        model(torch.randn(1, 1, 16, 16))


def test_build_model_unknown_name():
    known = r"\['attention-unet', 'deeplabv3\+', 'resunet', 'se-unet', 'unet', 'unet\+\+'\]"
    with pytest.raises(ValueError, match=rf"unknown model 'vnet'; known models: {known}"):
        build_model("vnet", 1, 2)


def _train_one_step(model: nn.Module, image: torch.Tensor, target: torch.Tensor) -> float:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    model.train()
    loss = F.cross_entropy(model(image), target)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def test_batch_norm_unet_trains_on_single_sample():
    torch.manual_seed(0)
    model = UNet(1, 3, features=(4, 8, 16, 32), norm="batch")
    before = [parameter.detach().clone() for parameter in model.parameters()]

    loss = _train_one_step(model, torch.randn(1, 1, 16, 16, 16), torch.randint(0, 3, (1, 16, 16, 16)))

    assert math.isfinite(loss)
    assert any(not torch.equal(old, new) for old, new in zip(before, model.parameters()))


# With five levels a 16^3 input reaches a 1x1x1 bottleneck. Plain PyTorch norms
# raise there because each channel has one value, so the U-Net's norms return their bias.
@pytest.mark.parametrize("norm", ["batch", "instance"])
def test_unet_one_voxel_bottleneck_trains(norm):
    model = UNet(1, 3, features=(4, 8, 16, 32, 64), norm=norm)

    loss = _train_one_step(model, torch.randn(1, 1, 16, 16, 16), torch.randint(0, 3, (1, 16, 16, 16)))

    assert math.isfinite(loss)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 16, 16, 16)).shape == (1, 3, 16, 16, 16)


@pytest.mark.parametrize(
    ("shape", "padded_shape"),
    [((37, 50, 64), (40, 56, 64)), ((15, 33, 40), (16, 40, 40))],
)
def test_pad_then_crop_restores_input(shape, padded_shape):
    image = torch.randn(1, 2, *shape, generator=torch.Generator().manual_seed(0))

    padded, crop = pad_to_multiple(image, 8)

    assert padded.shape == (1, 2, *padded_shape)
    assert torch.equal(padded[crop], image)
    fill = float(image.min())
    padded[crop] = fill
    assert torch.all(padded == fill)


def test_pad_skips_multiples():
    image = torch.randn(1, 1, 16, 24, 8)

    padded, crop = pad_to_multiple(image, 8)

    assert padded is image
    assert torch.equal(padded[crop], image)


def test_pad_uses_given_value():
    padded, _ = pad_to_multiple(torch.ones(1, 1, 5, 8), 4, value=-3.0)

    assert torch.all(padded[..., 5:, :] == -3.0)
    assert torch.all(padded[..., :5, :] == 1.0)


class _LabelOracle(nn.Module):
    """Return one-hot logits of the label map passed in as the image.

    Sizes not divisible by ``divisor`` raise ValueError, as in UNet.
    """

    def __init__(self, num_classes: int, divisor: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.divisor = divisor

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if any(size % self.divisor for size in image.shape[2:]):
            raise ValueError(f"spatial sizes {tuple(image.shape[2:])} must be multiples of {self.divisor}")
        return F.one_hot(image[:, 0].long(), self.num_classes).movedim(-1, 1).float()


@pytest.mark.parametrize("shape", [(37, 50, 64), (15, 33, 40)])
def test_predict_labels_returns_oracle_mask(shape):
    label = torch.randint(0, 4, (2, *shape), generator=torch.Generator().manual_seed(1))

    prediction = predict_labels(_LabelOracle(num_classes=4, divisor=8), label[:, None].float(), 8)

    assert prediction.shape == label.shape
    assert torch.equal(prediction, label)
    for case_prediction, case_label in zip(prediction, label):
        assert dice_per_class(case_prediction, case_label, [1, 2, 3]) == {1: 1.0, 2: 1.0, 3: 1.0}


def test_predict_labels_with_unet_keeps_shape():
    model = UNet(1, 3, features=(4, 8, 16, 32)).eval()

    prediction = predict_labels(model, torch.randn(1, 1, 15, 33, 40), model.divisor)

    assert prediction.shape == (1, 15, 33, 40)
    assert prediction.dtype == torch.int64


@pytest.mark.parametrize("shape", [(37, 50, 64), (15, 33, 40)])
@pytest.mark.parametrize("name", [name for name in MODELS if 3 in SPATIAL_DIMS[name]])
def test_predict_labels_four_level_models_keep_shape(name, shape):
    model = build_model(name, 1, 2, features=(2, 4, 4, 4)).eval()

    prediction = predict_labels(model, torch.randn(1, 1, *shape), model.divisor)

    assert model.divisor == 8
    assert prediction.shape == (1, *shape)
