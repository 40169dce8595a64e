"""DiceLoss, DiceCELoss and DeepSupervisionLoss: perfect and wrong logits, gradients, target layouts, per-output weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from segment import DiceCELoss, DiceLoss
from segment.losses import DeepSupervisionLoss, deep_supervision_weights


def _target(shape=(2, 6, 6, 6), num_classes=3, seed=0) -> torch.Tensor:
    return torch.randint(0, num_classes, shape, generator=torch.Generator().manual_seed(seed))


def _perfect_logits(target: torch.Tensor, num_classes=3, margin=30.0) -> torch.Tensor:
    return margin * F.one_hot(target, num_classes).movedim(-1, 1).float()


def test_dice_loss_near_zero_when_perfect():
    target = _target()

    loss = DiceLoss()(_perfect_logits(target), target)

    assert 0.0 <= float(loss) < 1e-6


def test_dice_ce_loss_near_zero_when_perfect():
    target = _target()

    loss = DiceCELoss()(_perfect_logits(target), target)

    assert 0.0 <= float(loss) < 1e-6


def test_dice_loss_near_one_when_wrong():
    target = _target()
    wrong = (target + 1) % 3

    loss = DiceLoss()(_perfect_logits(wrong), target)

    assert float(loss) > 1.0 - 1e-6


def test_gradient_reaches_logits():
    target = _target()
    logits = torch.randn(2, 3, 6, 6, 6, generator=torch.Generator().manual_seed(1), requires_grad=True)

    DiceCELoss()(logits, target).backward()

    assert logits.grad is not None
    assert torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0


@pytest.mark.parametrize("loss_class", [DiceLoss, DiceCELoss])
def test_channel_and_plain_targets_agree(loss_class):
    target = _target()
    logits = torch.randn(2, 3, 6, 6, 6, generator=torch.Generator().manual_seed(2))

    with_channel = loss_class()(logits, target[:, None])
    plain = loss_class()(logits, target)

    assert with_channel.shape == ()
    assert torch.equal(with_channel, plain)


@pytest.mark.parametrize("loss_class", [DiceLoss, DiceCELoss])
def test_plain_target_with_unit_first_axis(loss_class):
    # A (B, *S) target whose first spatial size is 1 looks like (B, 1, *S)
    # unless the loss compares it with the logits.
    target = _target(shape=(2, 1, 5, 5))
    logits = torch.randn(2, 3, 1, 5, 5, generator=torch.Generator().manual_seed(3))

    plain = loss_class()(logits, target)
    with_channel = loss_class()(logits, target[:, None])

    assert torch.equal(plain, with_channel)


@pytest.mark.parametrize("loss_class", [DiceLoss, DiceCELoss])
def test_one_hot_target_rejected(loss_class):
    target = _target()
    one_hot = F.one_hot(target, 3).movedim(-1, 1)

    with pytest.raises(ValueError, match=r"target shape \(2, 3, 6, 6, 6\) has 3 channels"):
        loss_class()(torch.zeros(2, 3, 6, 6, 6), one_hot)


def test_deep_supervision_weights_halve_and_sum_to_one():
    weights = deep_supervision_weights(4)

    assert weights == pytest.approx([8 / 15, 4 / 15, 2 / 15, 1 / 15])
    assert sum(weights) == pytest.approx(1.0)
    assert deep_supervision_weights(1) == [1.0]


def test_deep_supervision_passes_single_tensor_through():
    target = _target()
    logits = torch.randn(2, 3, 6, 6, 6, generator=torch.Generator().manual_seed(4))

    wrapped = DeepSupervisionLoss(DiceCELoss())(logits, target)

    assert torch.equal(wrapped, DiceCELoss()(logits, target))


def test_deep_supervision_full_resolution_outputs():
    target = _target()
    generator = torch.Generator().manual_seed(5)
    outputs = [torch.randn(2, 3, 6, 6, 6, generator=generator) for _ in range(3)]

    loss = DeepSupervisionLoss(DiceCELoss())(outputs, target[:, None])
    expected = sum(w * DiceCELoss()(output, target) for w, output in zip([4 / 7, 2 / 7, 1 / 7], outputs))

    assert torch.allclose(loss, expected)


def test_deep_supervision_nearest_target_is_slice():
    target = _target(shape=(2, 8, 8, 8))
    generator = torch.Generator().manual_seed(6)
    outputs = [torch.randn(2, 3, 8 // 2**level, 8 // 2**level, 8 // 2**level, generator=generator) for level in range(3)]
    wrapper = DeepSupervisionLoss(DiceCELoss())

    loss = wrapper(outputs, target)
    expected = sum(
        w * DiceCELoss()(output, target[:, :: 2**level, :: 2**level, :: 2**level])
        for level, (w, output) in enumerate(zip([4 / 7, 2 / 7, 1 / 7], outputs))
    )

    assert torch.equal(wrapper.resize_target(target, outputs[1]), target[:, ::2, ::2, ::2])
    assert torch.equal(wrapper.resize_target(target, outputs[2]), target[:, ::4, ::4, ::4])
    assert torch.allclose(loss, expected)


def test_deep_supervision_max_keeps_small_structure():
    # One foreground voxel at an odd index: slicing by 2 skips it, max-pooling keeps it.
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, 1, 3] = 2
    output = torch.zeros(1, 3, 2, 2)

    nearest = DeepSupervisionLoss(DiceCELoss()).resize_target(target, output)
    pooled = DeepSupervisionLoss(DiceCELoss(), target_downsampling="max").resize_target(target, output)

    assert torch.equal(nearest, torch.zeros(1, 2, 2, dtype=torch.long))
    assert torch.equal(pooled, torch.tensor([[[0, 2], [0, 0]]]))


def test_deep_supervision_explicit_weights_normalised():
    target = _target()
    generator = torch.Generator().manual_seed(7)
    outputs = [torch.randn(2, 3, 6, 6, 6, generator=generator), torch.randn(2, 3, 3, 3, 3, generator=generator)]

    # Weight 0 skips the second output, as nnU-Net v2 does for its coarsest one.
    loss = DeepSupervisionLoss(DiceCELoss(), weights=[2.0, 0.0])(outputs, target)

    assert torch.allclose(loss, DiceCELoss()(outputs[0], target))


def test_deep_supervision_gradient_reaches_every_output():
    target = _target(shape=(2, 8, 8, 8))
    outputs = [torch.randn(2, 3, 8 // 2**level, 8 // 2**level, 8 // 2**level, requires_grad=True) for level in range(3)]

    DeepSupervisionLoss(DiceCELoss(), target_downsampling="max")(outputs, target).backward()

    for output in outputs:
        assert output.grad is not None
        assert output.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("options", "outputs_shapes", "message"),
    [
        ({"weights": [1.0, 1.0]}, [(6, 6, 6)] * 3, "got 3 outputs but 2 deep supervision weights"),
        ({}, [(6, 6, 6), (12, 12, 12)], r"output spatial shape \(12, 12, 12\) must not exceed the target's \(6, 6, 6\)"),
        ({"target_downsampling": "max"}, [(6, 6, 6), (4, 4, 4)], "max-pooling needs the target shape"),
    ],
)
def test_deep_supervision_invalid_outputs_rejected(options, outputs_shapes, message):
    outputs = [torch.zeros(2, 3, *shape) for shape in outputs_shapes]

    with pytest.raises(ValueError, match=message):
        DeepSupervisionLoss(DiceCELoss(), **options)(outputs, _target())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"target_downsampling": "linear"}, "target_downsampling must be one of"),
        ({"weights": [1.0, -1.0]}, "weights must be non-negative with a positive sum"),
        ({"weights": [0.0]}, "weights must be non-negative with a positive sum"),
    ],
)
def test_deep_supervision_invalid_options_rejected(options, message):
    with pytest.raises(ValueError, match=message):
        DeepSupervisionLoss(DiceCELoss(), **options)
