"""Every registered model: training steps in 2D and 3D, shapes, divisors, deep supervision, 1-voxel bottlenecks."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from segment.inference import predict_labels
from segment.losses import DeepSupervisionLoss, DiceCELoss, deep_supervision_weights
from segment.models import MODELS, SPATIAL_DIMS, UNetPlusPlus, build_model


# On a shared 2-core machine a tiny 3D U-Net step took about 0.02 s with one
# torch thread and 1.6 s with two, so these tests pin torch to one thread.
@pytest.fixture(autouse=True, scope="module")
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


CASES = [(name, dims) for name in MODELS for dims in SPATIAL_DIMS[name]]
CASE_IDS = [f"{name}-{dims}d" for name, dims in CASES]
TRAIN_SHAPE = {2: (32, 32), 3: (16, 16, 16)}
ODD_SHAPE = {2: (19, 23), 3: (19, 23, 17)}


def _train_steps(model: torch.nn.Module, batches, *, learning_rate: float = 1e-3) -> list[float]:
    """Run one optimiser step per ``(image, label)`` batch with deeply supervised Dice + CE, and return the losses."""
    loss_function = DeepSupervisionLoss(DiceCELoss())
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    model.train()
    losses = []
    for image, label in batches:
        loss = loss_function(model(image), label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_registry_names():
    assert sorted(MODELS) == sorted(["unet", "resunet", "attention-unet", "se-unet", "unet++", "deeplabv3+"])
    assert sorted(SPATIAL_DIMS) == sorted(MODELS)


@pytest.mark.parametrize(("name", "dims"), CASES, ids=CASE_IDS)
def test_model_trains_and_predicts_odd_shape(name, dims):
    torch.manual_seed(0)
    model = build_model(name, 1, 3, spatial_dims=dims, features=(4, 8, 16))
    generator = torch.Generator().manual_seed(1)
    image = torch.randn(2, 1, *TRAIN_SHAPE[dims], generator=generator)
    label = torch.randint(0, 3, (2, 1, *TRAIN_SHAPE[dims]), generator=generator)
    before = [parameter.detach().clone() for parameter in model.parameters()]

    losses = _train_steps(model, [(image, label), (image, label)])

    assert len(losses) == 2
    assert all(math.isfinite(loss) for loss in losses), losses
    assert any(not torch.equal(old, new) for old, new in zip(before, model.parameters()))

    model.eval()
    odd = torch.randn(1, 1, *ODD_SHAPE[dims], generator=generator)
    prediction = predict_labels(model, odd, model.divisor)
    assert prediction.shape == (1, *ODD_SHAPE[dims])
    assert prediction.dtype == torch.int64


@pytest.mark.parametrize(("name", "dims"), CASES, ids=CASE_IDS)
def test_model_output_matches_input_shape(name, dims):
    model = build_model(name, 2, 4, spatial_dims=dims, features=(4, 8, 16, 32)).eval()
    shape = (8, 24, 16) if dims == 3 else (8, 24)

    with torch.no_grad():
        output = model(torch.randn(1, 2, *shape))

    assert model.divisor == 8
    assert output.shape == (1, 4, *shape)


@pytest.mark.parametrize("name", list(MODELS))
def test_model_rejects_size_not_multiple(name):
    dims = SPATIAL_DIMS[name][-1]
    model = build_model(name, 1, 2, spatial_dims=dims, features=(4, 8, 16))

    with pytest.raises(ValueError, match="must be multiples of 4"):
        model(torch.randn(1, 1, *(8,) * (dims - 1), 6))


def test_deeplab_rejects_3d():
    with pytest.raises(ValueError, match=r"deeplabv3\+ supports only 2D images: spatial_dims must be 2, got 3"):
        build_model("deeplabv3+", 1, 2, spatial_dims=3)


def test_deeplab_needs_three_levels():
    with pytest.raises(ValueError, match="at least three levels"):
        build_model("deeplabv3+", 1, 2, features=(4, 8))


@pytest.mark.parametrize("name", list(MODELS))
def test_invalid_norm_names_model(name):
    with pytest.raises(ValueError, match=r"norm must be one of \('instance', 'batch', 'none'\), got 'group'"):
        build_model(name, 1, 2, spatial_dims=SPATIAL_DIMS[name][0], norm="group")


@pytest.mark.parametrize(("name", "dims"), CASES, ids=CASE_IDS)
def test_model_without_norm_trains(name, dims):
    model = build_model(name, 1, 2, spatial_dims=dims, features=(4, 8, 16), norm="none")
    image = torch.randn(1, 1, *TRAIN_SHAPE[dims])
    label = torch.randint(0, 2, (1, *TRAIN_SHAPE[dims]))

    losses = _train_steps(model, [(image, label)])

    assert math.isfinite(losses[0])


def test_unet_deep_supervision_halves_resolution():
    model = build_model("unet", 1, 3, features=(4, 8, 16, 32), deep_supervision=True).train()

    outputs = model(torch.randn(1, 1, 16, 16, 16))

    assert [tuple(output.shape) for output in outputs] == [(1, 3, 16, 16, 16), (1, 3, 8, 8, 8), (1, 3, 4, 4, 4)]
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 16, 16, 16)).shape == (1, 3, 16, 16, 16)


@pytest.mark.parametrize("dims", [2, 3])
def test_unet_plus_plus_returns_one_output_per_depth(dims):
    torch.manual_seed(0)
    model = UNetPlusPlus(1, 3, spatial_dims=dims, features=(4, 8, 16, 32)).train()
    shape = TRAIN_SHAPE[dims]
    image = torch.randn(2, 1, *shape)
    label = torch.randint(0, 3, (2, *shape))

    outputs = model(image)
    loss = DeepSupervisionLoss(DiceCELoss())(outputs, label)
    expected = sum(weight * DiceCELoss()(output, label) for weight, output in zip([4 / 7, 2 / 7, 1 / 7], outputs))

    assert isinstance(outputs, list)
    assert len(outputs) == model.max_depth == 3
    assert all(output.shape == (2, 3, *shape) for output in outputs)
    assert deep_supervision_weights(3) == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    assert torch.allclose(loss, expected)
    loss.backward()
    assert all(parameter.grad is not None for parameter in model.deep_heads.parameters())


def test_unet_plus_plus_pruned_inference_uses_shallow_output():
    torch.manual_seed(0)
    # Instance norm uses per-sample statistics in both modes, so training and
    # evaluation outputs agree and can be compared.
    model = UNetPlusPlus(1, 2, features=(4, 8, 16, 32), norm="instance")
    image = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        depth_outputs = model.train()(image)
    deepest_level_calls = []
    model.encoder[3].register_forward_hook(lambda module, inputs, output: deepest_level_calls.append(output.shape))

    model.eval()
    model.inference_depth = 1
    with torch.no_grad():
        pruned = model(image)

    assert torch.allclose(pruned, depth_outputs[-1], atol=1e-6)
    assert deepest_level_calls == []
    model.inference_depth = None
    with torch.no_grad():
        full = model(image)
    assert torch.allclose(full, depth_outputs[0], atol=1e-6)
    assert len(deepest_level_calls) == 1


def test_unet_plus_plus_pruning_needs_deep_supervision():
    with pytest.raises(ValueError, match="inference_depth 1 needs deep_supervision=True"):
        UNetPlusPlus(1, 2, features=(4, 8, 16), deep_supervision=False, inference_depth=1)
    with pytest.raises(ValueError, match="inference_depth must be between 1 and 2"):
        UNetPlusPlus(1, 2, features=(4, 8, 16), inference_depth=3)


def test_unet_plus_plus_without_deep_supervision_returns_tensor():
    model = UNetPlusPlus(1, 2, spatial_dims=2, features=(4, 8, 16), deep_supervision=False).train()

    output = model(torch.randn(1, 1, 16, 16))

    assert isinstance(output, torch.Tensor)
    assert output.shape == (1, 2, 16, 16)


# Four downsamplings take 16^3 (16^2 for the 2D-only DeepLabV3+) to a 1-voxel
# bottleneck. Five volumes in batches of 4 without drop_last leave a last batch
# of one sample, where batch norm has one value per channel at the bottleneck.
BOTTLENECK_CASES = [(name, SPATIAL_DIMS[name][-1]) for name in MODELS]


@pytest.mark.parametrize(("name", "dims"), BOTTLENECK_CASES, ids=[f"{name}-{dims}d" for name, dims in BOTTLENECK_CASES])
def test_one_voxel_bottleneck_batch_norm_epoch(name, dims):
    torch.manual_seed(0)
    model = build_model(name, 1, 2, spatial_dims=dims, features=(2, 4, 8, 8, 8), norm="batch")
    shape = (16,) * dims
    generator = torch.Generator().manual_seed(2)
    images = torch.randn(5, 1, *shape, generator=generator)
    labels = torch.randint(0, 2, (5, 1, *shape), generator=generator)
    loader = DataLoader(TensorDataset(images, labels), batch_size=4, shuffle=False, drop_last=False)

    batch_sizes = [len(image) for image, _ in loader]
    losses = _train_steps(model, loader)

    assert model.divisor == 16
    assert batch_sizes == [4, 1]
    assert len(losses) == 2
    assert all(math.isfinite(loss) for loss in losses), losses
