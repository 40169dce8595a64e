"""Conditional GAN from label map to image (pix2pix style), as a Lightning module, and sampling from it.

The design follows Isola et al., "Image-to-Image Translation with Conditional
Adversarial Networks" (CVPR 2017). A U-Net generator maps the one-hot label map
to an image, and a PatchGAN discriminator scores (label map, image) pairs. The
generator minimises the adversarial loss plus ``l1_weight`` (100) times the L1
distance to the real image. Dropout in the generator's decoder, and optional noise channels
appended to its input, make repeated samples of one label map differ.

``generate_from_labels`` deforms a label volume with an ``augment`` pipeline (for
example the ``rigid`` or ``nonrigid`` strategy) and then generates the matching
image slice by slice, so new anatomies come with images.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from augment import Pipeline, build_strategy, derive_generator

from .cyclegan import least_squares_loss, linear_decay, set_requires_grad
from .errors import GanError
from .intensity import Intensity, Percentiles, intensity_from_state
from .networks import PatchDiscriminator, build_generator
from .slices import map_slices

GAN_LOSSES = ("vanilla", "lsgan")


def label_channels(labels: Tensor, num_classes: int) -> Tensor:
    """One-hot encode ``(B, S, X, Y)`` integer labels of ``S`` slices into ``(B, num_classes * S, X, Y)`` float32.

    Channels are grouped by slice: the classes of slice 0, then of slice 1, and so on.

    Raises:
        GanError: when a label is negative or not below ``num_classes``.
    """
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise GanError(f"label values must lie in [0, {num_classes - 1}], got {int(labels.min())}..{int(labels.max())}; check num_classes")
    one_hot = F.one_hot(labels.long(), num_classes)  # (B, S, X, Y, K)
    batch, slices, size_x, size_y, _ = one_hot.shape
    return one_hot.permute(0, 1, 4, 2, 3).reshape(batch, slices * num_classes, size_x, size_y).float()


def adversarial_loss(scores: Tensor, target: float, kind: str) -> Tensor:
    """``vanilla``: binary cross-entropy on logits (pix2pix's default); ``lsgan``: least squares."""
    if kind == "lsgan":
        return least_squares_loss(scores, target)
    return F.binary_cross_entropy_with_logits(scores, torch.full_like(scores, target))


class ConditionalGAN(L.LightningModule):
    """pix2pix-style GAN from one-hot label maps to images, trained with manual optimisation.

    Batches are ``{"image": (B, S, X, Y), "label": (B, S, X, Y)}`` with
    ``S = 2 * context + 1`` slices. The generator's input is the one-hot labels of all
    ``S`` slices (plus ``noise_channels`` of Gaussian noise), and it generates the
    centre slice. The discriminator's input is those label channels and one image channel.

    Args:
        num_classes: label classes including background.
        context: neighbouring label slices on each side given to the generator.
        generator: registry name and keyword arguments, e.g. ``{"name": "unet", "features": 32}``.
        discriminator: keyword arguments of ``PatchDiscriminator``.
        noise_channels: channels of N(0, 1) noise appended to the generator input.
        l1_weight: weight of the L1 loss against the real image.
        gan_loss: ``"vanilla"`` (cross-entropy) or ``"lsgan"`` (least squares).
        max_steps: training steps, for the learning-rate schedule.
        learning_rate: Adam learning rate of both networks.
        betas: Adam betas.
        decay_start: fraction of ``max_steps`` after which the learning rate decays linearly to 0.
        seed: seed of the noise channels.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        context: int = 0,
        generator: Mapping[str, Any] | None = None,
        discriminator: Mapping[str, Any] | None = None,
        noise_channels: int = 0,
        l1_weight: float = 100.0,
        gan_loss: str = "vanilla",
        max_steps: int = 1000,
        learning_rate: float = 2e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        decay_start: float = 0.5,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise GanError(f"num_classes must be at least 2 (background and one class), got {num_classes}")
        if gan_loss not in GAN_LOSSES:
            raise GanError(f"gan_loss must be one of {list(GAN_LOSSES)}, got {gan_loss!r}")
        if max_steps < 1:
            raise GanError(f"max_steps must be at least 1, got {max_steps}")
        if noise_channels < 0:
            raise GanError(f"noise_channels must be non-negative, got {noise_channels}")
        self.save_hyperparameters()
        self.automatic_optimization = False

        slices = 2 * context + 1
        settings = dict(generator or {"name": "unet"})
        self.generator = build_generator(settings.pop("name"), num_classes * slices + noise_channels, 1, **settings)
        self.discriminator = PatchDiscriminator(num_classes * slices + 1, **dict(discriminator or {}))
        self.noise = torch.Generator().manual_seed(seed)
        self.history: list[dict[str, float]] = []

    def configure_optimizers(self):
        betas = tuple(self.hparams.betas)
        optimizer_g = torch.optim.Adam(self.generator.parameters(), lr=self.hparams.learning_rate, betas=betas)
        optimizer_d = torch.optim.Adam(self.discriminator.parameters(), lr=self.hparams.learning_rate, betas=betas)
        schedule = lambda step: linear_decay(step, self.hparams.max_steps, self.hparams.decay_start)  # noqa: E731
        schedulers = [torch.optim.lr_scheduler.LambdaLR(optimizer, schedule) for optimizer in (optimizer_g, optimizer_d)]
        return [optimizer_g, optimizer_d], schedulers

    def training_step(self, batch: Mapping[str, Any], batch_index: int) -> None:
        context = self.hparams.context
        real = batch["image"][:, context : context + 1]
        condition = label_channels(batch["label"], self.hparams.num_classes)
        inputs = append_noise(condition, self.hparams.noise_channels, self.noise)
        kind = self.hparams.gan_loss
        optimizer_g, optimizer_d = self.optimizers()
        scheduler_g, scheduler_d = self.lr_schedulers()

        fake = self.generator(inputs)
        set_requires_grad([self.discriminator], True)
        optimizer_d.zero_grad(set_to_none=True)
        real_scores = self.discriminator(torch.cat([condition, real], dim=1))
        fake_scores = self.discriminator(torch.cat([condition, fake.detach()], dim=1))
        discriminator_loss = 0.5 * (adversarial_loss(real_scores, 1.0, kind) + adversarial_loss(fake_scores, 0.0, kind))
        self.manual_backward(discriminator_loss)
        optimizer_d.step()

        set_requires_grad([self.discriminator], False)
        optimizer_g.zero_grad(set_to_none=True)
        adversarial = adversarial_loss(self.discriminator(torch.cat([condition, fake], dim=1)), 1.0, kind)
        l1 = F.l1_loss(fake, real)
        generator_loss = adversarial + self.hparams.l1_weight * l1
        self.manual_backward(generator_loss)
        optimizer_g.step()
        set_requires_grad([self.discriminator], True)

        learning_rate = float(optimizer_g.param_groups[0]["lr"])
        scheduler_g.step()
        scheduler_d.step()

        record = {
            "step": len(self.history) + 1,
            "generator": float(generator_loss.detach()),
            "adversarial": float(adversarial.detach()),
            "l1": float(l1.detach()),
            "discriminator": float(discriminator_loss.detach()),
            "learning_rate": learning_rate,
        }
        self.history.append(record)
        self.log_dict({f"train/{key}": value for key, value in record.items() if key != "step"}, batch_size=real.shape[0])


def append_noise(inputs: Tensor, channels: int, generator: torch.Generator) -> Tensor:
    """Append ``channels`` of N(0, 1) noise drawn on the CPU from ``generator`` (reproducible on every device)."""
    if channels == 0:
        return inputs
    noise = torch.randn((inputs.shape[0], channels, *inputs.shape[2:]), generator=generator)
    return torch.cat([inputs, noise.to(inputs.device, inputs.dtype)], dim=1)


def _deform_labels(labels: np.ndarray, pipeline: Pipeline, spacing: np.ndarray | None, seed: int) -> np.ndarray:
    """Warp a 3D label volume with the spatial transforms of ``pipeline`` (nearest neighbour or one-hot, as it is set)."""
    label = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))[None, None]
    batch = {
        "image": torch.zeros(label.shape, dtype=torch.float32),
        "label": label,
        "spacing": torch.as_tensor(np.ones(3) if spacing is None else spacing, dtype=torch.float64)[None],
    }
    warped = pipeline(batch, derive_generator(seed, 0))
    return warped["label"][0, 0].numpy().astype(np.int64)


def generate_from_labels(
    generator: nn.Module,
    labels: np.ndarray,
    config: Mapping[str, Any],
    *,
    pipeline: Pipeline | str | Mapping[str, Any] | None = None,
    spacing: np.ndarray | None = None,
    seed: int = 0,
    batch_size: int = 16,
    stochastic: bool = False,
    output_intensity: Intensity | None = None,
    device: torch.device | str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Generate an image volume for a label volume, slice by slice, optionally after deforming the labels.

    Args:
        generator: a conditional generator, e.g. from ``gan.checkpoint.load_generator``.
        labels: integer label map ``(X, Y, Z)`` (or ``(X, Y)``) in the file's voxel order.
        config: the generator's checkpoint config (``num_classes``, ``context``,
            ``axis``, ``intensity``, ``noise_channels``).
        pipeline: an ``augment.Pipeline``, strategy name (``"rigid"``, ``"nonrigid"``) or
            strategy mapping; its spatial transforms deform the label volume in 3D
            first. Its intensity transforms have no effect on the output.
        spacing: voxel spacing in mm of ``labels`` in the same axis order, for the pipeline (1 mm if omitted).
        seed: seed of the deformation, the noise channels and, with ``stochastic``, the dropout masks.
        batch_size: slices per generator call.
        stochastic: keep the generator's dropout active, as pix2pix samples do, so
            different seeds give different images for the same labels.
        output_intensity: mapping back to physical intensities; defaults to
            ``config["intensity"]`` (for MR: the median percentile intensities of the training volumes).
        device: where to run; defaults to the generator's device.

    Returns:
        ``(image, labels)``: the float32 image in physical intensities and the int64
        label map it was generated from (deformed when a pipeline is given), both
        of the input's shape.

    Raises:
        GanError: for labels outside ``[0, num_classes - 1]`` or a config without a fitted output mapping.
    """
    labels = np.asarray(labels)
    if labels.ndim not in (2, 3):
        raise GanError(f"labels must be a 2D or 3D label map, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer) and not np.all(labels == np.round(labels)):
        raise GanError("labels must be whole class numbers; convert them with segment.data.io.label_to_integer")
    flat = labels.ndim == 2
    volume = labels[..., None] if flat else labels.astype(np.int64)
    volume = volume.astype(np.int64)
    mapping = output_intensity if output_intensity is not None else intensity_from_state(dict(config["intensity"]))
    if isinstance(mapping, Percentiles):
        raise GanError("the output intensity mapping has no fitted range; pass output_intensity or use a checkpoint from train_conditional")

    if pipeline is not None:
        pipeline = pipeline if isinstance(pipeline, Pipeline) else build_strategy(pipeline)
        volume = _deform_labels(volume, pipeline, spacing, seed)

    num_classes = int(config["num_classes"])
    context = int(config.get("context", 0))
    axis = int(config.get("axis", 2)) if not flat else 2
    device = device if device is not None else next(generator.parameters()).device
    noise = torch.Generator().manual_seed(seed)

    was_training = generator.training
    generator.eval()
    if stochastic:
        for module in generator.modules():
            if isinstance(module, nn.Dropout):
                module.train()

    def generate(batch: Tensor) -> Tensor:
        inputs = append_noise(label_channels(batch, num_classes), int(config.get("noise_channels", 0)), noise)
        return generator(inputs)

    try:
        # Dropout draws from the global generator of the device, so seed it inside a fork.
        cuda_devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
        with torch.no_grad(), torch.random.fork_rng(devices=cuda_devices):
            torch.manual_seed(seed)
            model_space = map_slices(np.moveaxis(volume, axis, -1), generate, context=context, batch_size=batch_size, device=device)
    finally:
        generator.train(was_training)

    image = np.moveaxis(mapping.from_model(model_space), -1, axis)
    if flat:
        return image[..., 0], volume[..., 0]
    return image, volume
