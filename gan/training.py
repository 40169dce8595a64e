"""Train CycleGAN and conditional GAN generators on slices of 3D volumes, and apply them to whole volumes.

``train_cyclegan`` and ``train_conditional`` write into an output folder:

- ``generator_AB.pt`` and ``generator_BA.pt`` (CycleGAN) or ``generator.pt``
  (conditional GAN), written with ``gan.checkpoint.save_generator``;
- ``training_log.json``: settings, cases, slice counts, per-step losses, wall
  time and the SHA-256 of each checkpoint. It is written last, so a folder
  without it contains an unfinished training.

``translate_volume`` runs a CycleGAN generator over a volume slice by slice, and
``generate_from_labels`` (from ``gan.conditional``) does the same for a
conditional generator and a label map.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from segment.data.msd import MSDDataset
from segment.errors import DataError
from segment.files import write_json

from .checkpoint import save_generator
from .conditional import ConditionalGAN, generate_from_labels
from .cyclegan import CycleGAN
from .errors import GanError
from .intensity import FittedPercentiles, Intensity, Percentiles, intensity_from_state, make_intensity
from .slices import RandomSlices, SliceDataset, SliceVolume, UnpairedSlices, load_domain, map_slices

logger = logging.getLogger(__name__)

__all__ = ["Domain", "generate_from_labels", "train_conditional", "train_cyclegan", "translate_volume"]

TRAINING_LOG = "training_log.json"
# Smallest training slice for the default discriminator: three stride-2 layers leave size / 8,
# the stride-1 layer one pixel less, and instance norm needs more than one value per channel.
MIN_IMAGE_SIZE = 32


@dataclass(frozen=True)
class Domain:
    """Location of a domain's images and the settings to read them.

    Args:
        path: dataset folder, folder of NIfTI files, glob pattern or single file (see ``gan.slices``).
        intensity: ``"ct"``, ``"mr"`` or ``"zscore"``, a mapping's ``state()``, or a mapping object.
        channel: modality index of multi-channel cases.
        labels: label file template for folders and patterns, e.g. ``"{stem}_seg.nii.gz"``.
        mask: mask file template; slices are then kept by their mask coverage.
    """

    path: str | Path
    intensity: str | Mapping[str, Any] | Intensity = "mr"
    channel: int = 0
    labels: str | None = None
    mask: str | None = None

    def mapping(self) -> Intensity:
        """Build the intensity mapping object this domain names."""
        if isinstance(self.intensity, str):
            return make_intensity(self.intensity)
        if isinstance(self.intensity, Mapping):
            return intensity_from_state(dict(self.intensity))
        return self.intensity

    def load(self, cases: Sequence[str] | None, axis: int) -> list[SliceVolume]:
        return load_domain(self.path, self.mapping(), channel=self.channel, labels=self.labels, mask=self.mask, cases=cases, axis=axis)


def _as_domain(domain: Domain | str | Path) -> Domain:
    return domain if isinstance(domain, Domain) else Domain(domain)


def reference_intensity(mapping: Intensity, volumes: Sequence[SliceVolume]) -> Intensity:
    """Return the mapping that turns generated images of this domain back into physical intensities.

    Fixed mappings (CT window, z-score clip) are returned as they are. For
    per-volume percentiles, a generated volume has no real volume to take its
    range from, so the medians of the training volumes' fitted ``low`` and
    ``high`` are used.
    """
    if not isinstance(mapping, Percentiles):
        return mapping
    lows = [volume.intensity["low"] for volume in volumes]
    highs = [volume.intensity["high"] for volume in volumes]
    return FittedPercentiles(statistics.median(lows), statistics.median(highs), lower=mapping.lower, upper=mapping.upper)


def _image_size(image_size: int | Sequence[int]) -> tuple[int, int]:
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(int(n) for n in image_size)
    if len(size) != 2 or min(size) < 1:
        raise GanError(f"image_size must be a positive integer or two of them, got {image_size!r}")
    if min(size) < MIN_IMAGE_SIZE:
        raise GanError(
            f"image_size {image_size!r} is too small: the PatchGAN discriminator halves slices three times and "
            f"normalises what is left, which needs at least {MIN_IMAGE_SIZE} pixels per side"
        )
    return size


def _check_counts(steps: int, batch_size: int) -> None:
    if not isinstance(steps, int) or steps < 1:
        raise GanError(f"steps must be a positive integer, got {steps!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise GanError(f"batch_size must be a positive integer, got {batch_size!r}")


class _ProgressLog(L.Callback):
    """Log the latest losses about ten times per training."""

    def __init__(self, steps: int, name: str) -> None:
        self.every = max(1, steps // 10)
        self.name = name

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_index) -> None:
        if (batch_index + 1) % self.every == 0 and module.history:
            losses = ", ".join(f"{key} {value:.4g}" for key, value in module.history[-1].items() if key not in ("step", "learning_rate"))
            logger.info("%s step %d: %s", self.name, batch_index + 1, losses)


def _fit(module: L.LightningModule, dataset, *, steps: int, batch_size: int, accelerator: str, name: str) -> str:
    """Train ``module`` for ``steps`` batches with Lightning; return the device description."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    # With manual optimisation Lightning counts every optimizer.step() as a global step,
    # so the length of one epoch (``steps`` batches) sets the training length instead of max_steps.
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        max_epochs=1,
        max_steps=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[_ProgressLog(steps, name)],
    )
    trainer.fit(module, train_dataloaders=loader)
    return str(trainer.strategy.root_device)


def _summarise(history: list[dict[str, float]]) -> dict[str, float]:
    """Mean of each loss over the last tenth of the steps (at least one step)."""
    tail = history[-max(1, len(history) // 10) :]
    keys = [key for key in tail[0] if key not in ("step", "learning_rate")]
    return {key: float(np.mean([record[key] for record in tail])) for key in keys}


def _check_finite(history: list[dict[str, float]], output: Path) -> None:
    bad = next((record for record in history if not all(np.isfinite(value) for value in record.values())), None)
    if bad is not None:
        raise GanError(f"training diverged at step {bad['step']} (loss {bad}); nothing was saved to {output}. Lower the learning rate or change the seed")


class _Threads:
    """Set torch's intra-op thread count for a block and restore it afterwards."""

    def __init__(self, threads: int | None) -> None:
        self.threads = threads
        self.previous = torch.get_num_threads()

    def __enter__(self) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.previous)


def train_cyclegan(
    domain_a: Domain | str | Path,
    domain_b: Domain | str | Path,
    output: str | Path,
    *,
    steps: int = 1000,
    batch_size: int = 1,
    image_size: int | Sequence[int] = 128,
    context: int = 0,
    generator: str = "resnet",
    generator_features: int = 32,
    generator_options: Mapping[str, Any] | None = None,
    discriminator_features: int = 64,
    discriminator_options: Mapping[str, Any] | None = None,
    seed: int = 0,
    threads: int | None = None,
    train_cases: Sequence[str] | None = None,
    train_cases_b: Sequence[str] | None = None,
    axis: int = -1,
    min_foreground: float | None = 0.0,
    pool_size: int = 50,
    cycle_weight: float = 10.0,
    identity_weight: float = 0.5,
    learning_rate: float = 2e-4,
    accelerator: str = "auto",
) -> Path:
    """Train a CycleGAN between two domains on random 2D (or 2.5D) slices; return ``output``.

    Args:
        domain_a: first domain (``Domain``, or a path read as MR with per-volume percentiles).
        domain_b: second domain.
        output: folder for ``generator_AB.pt``, ``generator_BA.pt`` and ``training_log.json``.
        steps: training steps; each step draws ``batch_size`` random slices of each domain.
        batch_size: slices per domain and step.
        image_size: crop (or padding) size of training slices; translation runs on whole slices.
        context: neighbouring slices on each side stacked as channels (0: 2D).
        generator: ``"resnet"`` or ``"unet"``.
        generator_features: width of the generator's first layer.
        generator_options: further ``build_generator`` keywords, e.g. ``{"blocks": 6}``.
        discriminator_features: width of the discriminator's first layer.
        discriminator_options: further ``PatchDiscriminator`` keywords.
        seed: seeds weight initialisation, slice sampling and the image pools.
        threads: torch CPU threads during training (unchanged when ``None``).
        train_cases: case ids of domain A to train on (all when ``None``). A study passes
            its run's training cases here so the GAN never trains on validation cases.
        train_cases_b: case ids of domain B to train on (all when ``None``).
        axis: voxel axis that slices are taken across (default: the last).
        min_foreground: see ``SliceDataset``; ``None`` keeps every slice.
        pool_size, cycle_weight, identity_weight, learning_rate: see ``CycleGAN``.
        accelerator: Lightning accelerator (``"auto"`` uses a GPU when one is present).

    Both checkpoints' configs contain ``kind="cyclegan"``, ``direction`` (``"A->B"``
    or ``"B->A"``), ``intensity`` (output domain, fitted reference for MR),
    ``input_intensity`` (input domain, refitted per volume for MR), ``context``,
    ``axis``, ``seed``, ``train_cases`` (domain A ids) and ``train_cases_b`` (domain B ids).

    Raises:
        DataError: when a domain cannot be read or yields no slices.
        GanError: for invalid settings, or when a loss becomes NaN or infinite.
    """
    _check_counts(steps, batch_size)
    size = _image_size(image_size)
    domain_a, domain_b = _as_domain(domain_a), _as_domain(domain_b)
    output = Path(output)
    started = time.perf_counter()

    with _Threads(threads):
        volumes_a = domain_a.load(train_cases, axis)
        volumes_b = domain_b.load(train_cases_b, axis)
        slices_a = SliceDataset(volumes_a, context=context, size=size, min_foreground=min_foreground)
        slices_b = SliceDataset(volumes_b, context=context, size=size, min_foreground=min_foreground)
        logger.info("CycleGAN on %d slices of %d volumes (A) and %d slices of %d volumes (B)", len(slices_a), len(volumes_a), len(slices_b), len(volumes_b))

        L.seed_everything(seed, workers=True, verbose=False)
        generator_settings = {"name": generator, "features": generator_features, **dict(generator_options or {})}
        discriminator_settings = {"features": discriminator_features, **dict(discriminator_options or {})}
        module = CycleGAN(
            channels=2 * context + 1,
            generator=generator_settings,
            discriminator=discriminator_settings,
            max_steps=steps,
            learning_rate=learning_rate,
            cycle_weight=cycle_weight,
            identity_weight=identity_weight,
            pool_size=pool_size,
            seed=seed,
        )
        device = _fit(module, UnpairedSlices(slices_a, slices_b, steps * batch_size, seed), steps=steps, batch_size=batch_size, accelerator=accelerator, name="cyclegan")
    _check_finite(module.history, output)

    mapping_a, mapping_b = domain_a.mapping(), domain_b.mapping()
    shared = {
        "kind": "cyclegan",
        "context": context,
        "axis": axis % 3,
        "seed": seed,
        "steps": steps,
        "image_size": list(size),
        "train_cases": slices_a.case_ids,
        "train_cases_b": slices_b.case_ids,
        "domains": {"A": str(domain_a.path), "B": str(domain_b.path)},
    }
    hashes = {}
    for name, network, direction, source, target, target_volumes in (
        ("generator_AB.pt", module.generator_ab, "A->B", mapping_a, mapping_b, volumes_b),
        ("generator_BA.pt", module.generator_ba, "B->A", mapping_b, mapping_a, volumes_a),
    ):
        config = {
            **shared,
            "direction": direction,
            "generator": network.generator_config,
            "intensity": reference_intensity(target, target_volumes).state(),
            "input_intensity": source.state(),
        }
        hashes[name] = save_generator(output / name, network, config)

    write_json(output / TRAINING_LOG, {
        "kind": "cyclegan",
        "settings": {**shared, "batch_size": batch_size, "generator": generator_settings, "discriminator": discriminator_settings,
                     "pool_size": pool_size, "cycle_weight": cycle_weight, "identity_weight": identity_weight,
                     "learning_rate": learning_rate, "min_foreground": min_foreground, "threads": threads},
        "slices": {"A": len(slices_a), "B": len(slices_b)},
        "device": device,
        "wall_time_s": round(time.perf_counter() - started, 1),
        "final_losses": _summarise(module.history),
        "checkpoints": hashes,
        "history": module.history,
    })
    logger.info("CycleGAN generators written to %s", output)
    return output


def _num_classes(domain: Domain, volumes: Sequence[SliceVolume]) -> int:
    path = Path(domain.path)
    if path.is_dir() and (path / "dataset.json").is_file():
        return MSDDataset(path).num_classes
    return max(int(volume.label.max()) for volume in volumes) + 1


def train_conditional(
    dataset: Domain | str | Path,
    output: str | Path,
    *,
    steps: int = 1000,
    batch_size: int = 4,
    image_size: int | Sequence[int] = 64,
    context: int = 0,
    generator: str = "unet",
    generator_features: int = 32,
    generator_options: Mapping[str, Any] | None = None,
    discriminator_features: int = 64,
    discriminator_options: Mapping[str, Any] | None = None,
    noise_channels: int = 0,
    l1_weight: float = 100.0,
    gan_loss: str = "vanilla",
    num_classes: int | None = None,
    seed: int = 0,
    threads: int | None = None,
    train_cases: Sequence[str] | None = None,
    axis: int = -1,
    min_foreground: float | None = 0.0,
    learning_rate: float = 2e-4,
    accelerator: str = "auto",
) -> Path:
    """Train a conditional GAN from label-map slices to image slices; return ``output``.

    Args:
        dataset: labelled domain (``Domain``, or a path read as MR with per-volume percentiles);
            every case needs a label map.
        output: folder for ``generator.pt`` and ``training_log.json``.
        steps, batch_size, image_size, context, seed, threads, axis, min_foreground,
            accelerator: as in ``train_cyclegan``.
        generator: ``"unet"`` or ``"resnet"``.
        generator_features, generator_options, discriminator_features,
            discriminator_options: network widths and further keywords.
        noise_channels, l1_weight, gan_loss, learning_rate: see ``ConditionalGAN``.
        num_classes: label classes including background; by default from
            ``dataset.json``, else the largest label in the volumes plus one.
        train_cases: case ids to train on (all when ``None``); a study passes its run's training cases.

    The checkpoint config contains ``kind="conditional"``, ``direction="label->image"``,
    ``intensity`` (fitted reference for MR), ``num_classes``, ``context``, ``axis``,
    ``noise_channels``, ``seed`` and ``train_cases``.

    Raises:
        DataError: when the dataset cannot be read, has cases without labels, or yields no slices.
        GanError: for invalid settings, or when a loss becomes NaN or infinite.
    """
    _check_counts(steps, batch_size)
    size = _image_size(image_size)
    dataset = _as_domain(dataset)
    output = Path(output)
    started = time.perf_counter()

    with _Threads(threads):
        volumes = dataset.load(train_cases, axis)
        unlabelled = [volume.case_id for volume in volumes if volume.label is None]
        if unlabelled:
            raise DataError(f"cases {unlabelled[:5]} of {dataset.path} have no label map; a conditional GAN needs labels (set Domain.labels)")
        classes = num_classes if num_classes is not None else _num_classes(dataset, volumes)
        largest = max(int(volume.label.max()) for volume in volumes)
        if largest >= classes:
            raise DataError(f"{dataset.path} contains label {largest}, but num_classes is {classes}; raise num_classes")
        slices = SliceDataset(volumes, context=context, size=size, min_foreground=min_foreground)
        logger.info("conditional GAN on %d slices of %d volumes, %d classes", len(slices), len(volumes), classes)

        L.seed_everything(seed, workers=True, verbose=False)
        generator_settings = {"name": generator, "features": generator_features, **dict(generator_options or {})}
        discriminator_settings = {"features": discriminator_features, **dict(discriminator_options or {})}
        module = ConditionalGAN(
            num_classes=classes,
            context=context,
            generator=generator_settings,
            discriminator=discriminator_settings,
            noise_channels=noise_channels,
            l1_weight=l1_weight,
            gan_loss=gan_loss,
            max_steps=steps,
            learning_rate=learning_rate,
            seed=seed,
        )
        device = _fit(module, RandomSlices(slices, steps * batch_size, seed), steps=steps, batch_size=batch_size, accelerator=accelerator, name="conditional")
    _check_finite(module.history, output)

    config = {
        "kind": "conditional",
        "direction": "label->image",
        "generator": module.generator.generator_config,
        "intensity": reference_intensity(dataset.mapping(), volumes).state(),
        "num_classes": classes,
        "context": context,
        "axis": axis % 3,
        "noise_channels": noise_channels,
        "seed": seed,
        "steps": steps,
        "image_size": list(size),
        "train_cases": slices.case_ids,
        "domains": {"A": str(dataset.path)},
    }
    digest = save_generator(output / "generator.pt", module.generator, config)
    write_json(output / TRAINING_LOG, {
        "kind": "conditional",
        "settings": {**config, "batch_size": batch_size, "generator": generator_settings, "discriminator": discriminator_settings,
                     "l1_weight": l1_weight, "gan_loss": gan_loss, "learning_rate": learning_rate,
                     "min_foreground": min_foreground, "threads": threads},
        "slices": len(slices),
        "device": device,
        "wall_time_s": round(time.perf_counter() - started, 1),
        "final_losses": _summarise(module.history),
        "checkpoints": {"generator.pt": digest},
        "history": module.history,
    })
    logger.info("conditional generator written to %s", output)
    return output


def translate_volume(
    generator: nn.Module,
    config: Mapping[str, Any],
    volume: np.ndarray,
    *,
    batch_size: int = 16,
    output_intensity: Intensity | None = None,
    mask: np.ndarray | None = None,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Translate a whole volume with a CycleGAN generator, slice by slice, in physical intensities.

    Args:
        generator: from ``gan.checkpoint.load_generator``.
        config: its checkpoint config (``input_intensity``, ``intensity``, ``context``, ``axis``).
        volume: ``(X, Y, Z)`` (or ``(X, Y)``) image of the input domain in physical
            units (HU, MR intensities, z-scores), any numeric dtype, in the file's voxel order.
        batch_size: slices per generator call.
        output_intensity: mapping back to physical intensities; defaults to ``config["intensity"]``.
            For an MR output, passing the real counterpart's ``Percentiles().fit(...)`` compares like with like.
        mask: foreground of ``volume`` to fit MR percentiles inside, as training does for a
            ``Domain`` with a mask; ignored by fixed mappings.
        device: where to run; defaults to the generator's device.

    Returns:
        The translated float32 image, same shape and voxel order as ``volume``. Slices
        are processed at their full size, whatever crop size training used.

    Raises:
        GanError: when the volume is not 2D or 3D, or the config has no fitted output mapping.
    """
    volume = np.asarray(volume)
    if volume.ndim not in (2, 3):
        raise GanError(f"volume must be 2D or 3D, got shape {volume.shape}")
    flat = volume.ndim == 2
    volume = volume[..., None] if flat else volume
    if mask is not None and np.shape(mask) != volume.shape[: np.ndim(mask)]:
        raise GanError(f"mask has shape {np.shape(mask)} but the volume has shape {volume.shape}")
    input_mapping = intensity_from_state(dict(config["input_intensity"])).fit(volume, mask)
    output_mapping = output_intensity if output_intensity is not None else intensity_from_state(dict(config["intensity"]))
    if isinstance(output_mapping, Percentiles):
        raise GanError("the output intensity mapping has no fitted range; pass output_intensity or use a checkpoint from train_cyclegan")

    context = int(config.get("context", 0))
    axis = 2 if flat else int(config.get("axis", 2))
    device = device if device is not None else next(generator.parameters()).device
    centre = context if int(config["generator"]["out_channels"]) > 1 else 0

    def translate(batch: Tensor) -> Tensor:
        return generator(batch)[:, centre : centre + 1]

    was_training = generator.training
    generator.eval()
    try:
        with torch.no_grad():
            model_space = map_slices(np.moveaxis(input_mapping.to_model(volume), axis, -1), translate, context=context, batch_size=batch_size, device=device)
    finally:
        generator.train(was_training)
    translated = np.moveaxis(output_mapping.from_model(model_space), -1, axis)
    return translated[..., 0] if flat else translated
