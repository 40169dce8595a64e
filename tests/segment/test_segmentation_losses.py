"""DiceLoss and DiceCELoss: near zero on confident correct logits, gradients, both target layouts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from segment import DiceCELoss, DiceLoss


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
