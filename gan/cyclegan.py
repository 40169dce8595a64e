"""CycleGAN for unpaired translation between two image domains, as a Lightning module.

Losses follow Zhu et al., "Unpaired Image-to-Image Translation using
Cycle-Consistent Adversarial Networks" (ICCV 2017):

- adversarial, least squares: the generators push ``D(fake)`` to 1, each
  discriminator pushes ``D(real)`` to 1 and ``D(fake)`` to 0 (halved);
- cycle: ``|G_BA(G_AB(a)) - a|_1 + |G_AB(G_BA(b)) - b|_1``, weight ``cycle_weight`` (10);
- identity: ``|G_AB(b) - b|_1 + |G_BA(a) - a|_1``, weight ``identity_weight * cycle_weight``
  (0.5 x 10). It keeps a generator from changing images that already belong
  to its target domain, which preserves intensities and anatomy.

Fakes shown to the discriminators come from a history pool of 50 images per domain.

Learning-rate schedule: Adam (2e-4, betas 0.5 and 0.999) for generators and
discriminators, constant for the first ``decay_start`` fraction of ``max_steps``
(0.5) and then decreasing linearly, reaching 0 at step ``max_steps``. The
original schedule counts epochs (100 constant, 100 decaying). Steps are used here
because slice datasets have no natural epoch length.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import GanError
from .networks import PatchDiscriminator, build_generator
from .pool import ImagePool


def linear_decay(step: int, max_steps: int, decay_start: float) -> float:
    """Learning-rate factor at ``step``: 1 until ``decay_start * max_steps``, then linear to 0 at ``max_steps``."""
    start = int(round(decay_start * max_steps))
    if step < start:
        return 1.0
    return max(0.0, 1.0 - (step - start) / max(1, max_steps - start))


def least_squares_loss(scores: Tensor, target: float) -> Tensor:
    """Mean squared difference between discriminator scores and ``target`` (1 for real, 0 for fake)."""
    return F.mse_loss(scores, torch.full_like(scores, target))


def set_requires_grad(networks: list[nn.Module], flag: bool) -> None:
    """Switch gradients of all parameters of ``networks``; freezing discriminators saves the generator step's backward work."""
    for network in networks:
        for parameter in network.parameters():
            parameter.requires_grad_(flag)


class CycleGAN(L.LightningModule):
    """Two generators (A to B, B to A) and two PatchGAN discriminators, trained with manual optimisation.

    Batches are ``{"a": {"image": (B, C, X, Y)}, "b": {"image": (B, C, X, Y)}}`` in
    ``[-1, 1]`` with ``C = 2 * context + 1``. Generators map C channels to C channels,
    so 2.5D stacks go through the cycle whole. Exports use the centre channel.

    Args:
        channels: image channels of both domains.
        generator: registry name and keyword arguments, e.g. ``{"name": "resnet", "features": 32}``.
        discriminator: keyword arguments of ``PatchDiscriminator`` (``features``, ``layers``, ``norm``).
        max_steps: training steps, for the learning-rate schedule.
        learning_rate: Adam learning rate of all four networks.
        betas: Adam betas.
        cycle_weight: weight of the cycle loss.
        identity_weight: identity loss weight as a fraction of ``cycle_weight``.
        decay_start: fraction of ``max_steps`` after which the learning rate decays.
        pool_size: generated images kept per domain for discriminator updates.
        seed: seed of the pools' swap decisions.
    """

    def __init__(
        self,
        *,
        channels: int = 1,
        generator: Mapping[str, Any] | None = None,
        discriminator: Mapping[str, Any] | None = None,
        max_steps: int = 1000,
        learning_rate: float = 2e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        cycle_weight: float = 10.0,
        identity_weight: float = 0.5,
        decay_start: float = 0.5,
        pool_size: int = 50,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if max_steps < 1:
            raise GanError(f"max_steps must be at least 1, got {max_steps}")
        if not 0.0 <= decay_start <= 1.0:
            raise GanError(f"decay_start must be a fraction in [0, 1], got {decay_start}")
        self.save_hyperparameters()
        self.automatic_optimization = False

        settings = dict(generator or {"name": "resnet"})
        name = settings.pop("name")
        self.generator_ab = build_generator(name, channels, channels, **settings)
        self.generator_ba = build_generator(name, channels, channels, **settings)
        self.discriminator_a = PatchDiscriminator(channels, **dict(discriminator or {}))
        self.discriminator_b = PatchDiscriminator(channels, **dict(discriminator or {}))
        self.pool_a = ImagePool(pool_size, seed=seed)
        self.pool_b = ImagePool(pool_size, seed=seed + 1)
        self.history: list[dict[str, float]] = []

    def configure_optimizers(self):
        betas = tuple(self.hparams.betas)
        rate = self.hparams.learning_rate
        generators = list(self.generator_ab.parameters()) + list(self.generator_ba.parameters())
        discriminators = list(self.discriminator_a.parameters()) + list(self.discriminator_b.parameters())
        optimizer_g = torch.optim.Adam(generators, lr=rate, betas=betas)
        optimizer_d = torch.optim.Adam(discriminators, lr=rate, betas=betas)
        schedule = lambda step: linear_decay(step, self.hparams.max_steps, self.hparams.decay_start)  # noqa: E731
        schedulers = [torch.optim.lr_scheduler.LambdaLR(optimizer, schedule) for optimizer in (optimizer_g, optimizer_d)]
        return [optimizer_g, optimizer_d], schedulers

    def generator_losses(self, real_a: Tensor, real_b: Tensor) -> tuple[Tensor, dict[str, Tensor], Tensor, Tensor]:
        """Return the generators' total loss, its parts, and the fakes ``G_BA(b)`` and ``G_AB(a)``."""
        fake_b = self.generator_ab(real_a)
        fake_a = self.generator_ba(real_b)
        cycle = F.l1_loss(self.generator_ba(fake_b), real_a) + F.l1_loss(self.generator_ab(fake_a), real_b)
        adversarial = least_squares_loss(self.discriminator_b(fake_b), 1.0) + least_squares_loss(self.discriminator_a(fake_a), 1.0)
        parts = {"adversarial": adversarial, "cycle": cycle}
        total = adversarial + self.hparams.cycle_weight * cycle
        if self.hparams.identity_weight > 0:
            identity = F.l1_loss(self.generator_ab(real_b), real_b) + F.l1_loss(self.generator_ba(real_a), real_a)
            parts["identity"] = identity
            total = total + self.hparams.identity_weight * self.hparams.cycle_weight * identity
        return total, parts, fake_a, fake_b

    def discriminator_loss(self, discriminator: nn.Module, real: Tensor, fake: Tensor) -> Tensor:
        """Least-squares loss of one discriminator on a real batch and a (pooled, detached) fake batch, halved."""
        return 0.5 * (least_squares_loss(discriminator(real), 1.0) + least_squares_loss(discriminator(fake.detach()), 0.0))

    def training_step(self, batch: Mapping[str, Any], batch_index: int) -> None:
        real_a = batch["a"]["image"]
        real_b = batch["b"]["image"]
        optimizer_g, optimizer_d = self.optimizers()
        scheduler_g, scheduler_d = self.lr_schedulers()

        set_requires_grad([self.discriminator_a, self.discriminator_b], False)
        optimizer_g.zero_grad(set_to_none=True)
        generator_loss, parts, fake_a, fake_b = self.generator_losses(real_a, real_b)
        self.manual_backward(generator_loss)
        optimizer_g.step()

        set_requires_grad([self.discriminator_a, self.discriminator_b], True)
        optimizer_d.zero_grad(set_to_none=True)
        loss_a = self.discriminator_loss(self.discriminator_a, real_a, self.pool_a.query(fake_a))
        loss_b = self.discriminator_loss(self.discriminator_b, real_b, self.pool_b.query(fake_b))
        self.manual_backward(loss_a + loss_b)
        optimizer_d.step()

        learning_rate = float(optimizer_g.param_groups[0]["lr"])
        scheduler_g.step()
        scheduler_d.step()

        record = {
            "step": len(self.history) + 1,
            "generator": float(generator_loss.detach()),
            **{name: float(value.detach()) for name, value in parts.items()},
            "discriminator_a": float(loss_a.detach()),
            "discriminator_b": float(loss_b.detach()),
            "learning_rate": learning_rate,
        }
        self.history.append(record)
        self.log_dict({f"train/{key}": value for key, value in record.items() if key != "step"}, batch_size=real_a.shape[0])
