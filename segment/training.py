"""Train and validate one segmentation run and write its folder; used by ``medaug segment train`` and the study runner.

Layout of a run folder::

    config.json    resolved configuration, with the training and validation case ids
    model.pt       network weights and hyperparameters (loads with weights_only=True)
    per_case.csv   validation Dice and HD95 (mm) per case and class
    metrics.json   summary; written last, so its presence marks a finished run
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from augment import build_worker_transform

from .data.msd import Case
from .datamodule import SegmentationDataModule
from .distributed import is_global_zero
from .errors import DataError
from .files import atomic_write, write_csv, write_json
from .metrics import mean_over_cases
from .module import SegmentationModule
from .slices import predict_slices, slice_channels
from .train_config import TrainConfig, TrainingOptions, dataset_folder, open_dataset, run_id, select_cases, strategy_reference

logger = logging.getLogger(__name__)

COMPLETION_MARKER = "metrics.json"

FinishHook = Callable[[list[dict[str, Any]], dict[str, Any]], Mapping[str, Any]]


def describe_machine() -> str:
    """Device, CPU threads and versions, for reports next to wall times."""
    if torch.cuda.is_available():
        device = torch.cuda.get_device_name(0)
    else:
        device = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    return f"{device}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, Python {platform.python_version()}"


def is_finished(run_dir: Path) -> bool:
    return (run_dir / COMPLETION_MARKER).is_file()


class SliceSegmentationModule(SegmentationModule):
    """A 2D network trained on slices of 3D cases and validated on whole 3D cases, slice by slice.

    Validation Dice and HD95 are computed per 3D case with its 3D spacing.

    Args:
        slice_axis: spatial axis of the 3D cases that slices are taken along.
        slice_context: neighbouring slices on each side stacked as channels;
            ``in_channels`` must be ``slice_channels(image channels, slice_context)``.
        **kwargs: the arguments of ``SegmentationModule``, with a 2D ``model``.
    """

    def __init__(self, *, slice_axis: int, slice_context: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.net.spatial_dims != 2:
            raise ValueError(f"slice training needs a 2D model, got spatial_dims={self.net.spatial_dims}")
        self.slice_axis = slice_axis
        self.slice_context = slice_context

    def predict_volumes(self, image: Tensor) -> Tensor:
        return predict_slices(self.net, image, self.divisor, axis=self.slice_axis, context=self.slice_context)


def train_segmenter(
    train_cases: Sequence[Case],
    val_cases: Sequence[Case],
    *,
    num_classes: int,
    class_names: Sequence[str],
    model: Mapping[str, Any],
    augmentation: str | Mapping[str, Any],
    options: TrainingOptions,
    seed: int,
    output_dir: Path,
    run_id: str,
    config: Mapping[str, Any],
    summary: Mapping[str, Any] | None = None,
    lightning_logger: Any = None,
    callbacks: Sequence[L.Callback] = (),
    on_finish: FinishHook | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Train a network on ``train_cases``, validate it per case on ``val_cases`` and write the run folder.

    Args:
        train_cases: loaded cases to sample training patches (or slices) from.
        val_cases: loaded cases validated whole, with Dice and HD95 per case and class.
        num_classes: classes including background.
        class_names: names of the foreground classes ``1..K-1``.
        model: registry name and keyword arguments. ``spatial_dims`` is set from
            the cases, or 2 when ``options.slice_axis`` trains on slices.
        augmentation: strategy preset name, YAML path or mapping.
        options: training budget, patch size and optional slicing.
        seed: seeds the network initialisation, patch positions and augmentation.
        output_dir: run folder, created if missing; it must not hold a finished run.
        run_id: stored in the checkpoint and ``metrics.json``.
        config: written to ``config.json`` with the case ids added.
        summary: further keys of ``metrics.json``, placed after ``run_id``.
        lightning_logger: Lightning logger for curves (for example a ``WandbLogger``), or ``None``.
        callbacks: further Lightning callbacks.
        on_finish: called with the per-case rows and the metrics once ``model.pt``
            and ``per_case.csv`` are written. The mapping it returns is added to the
            metrics before ``metrics.json`` is written.

    Under DDP (``options.devices`` or ``options.num_nodes`` above 1), every
    process calls this function and gets the same per-case rows, each case
    once. Only global rank zero writes files and calls ``on_finish``.

    Returns:
        The metrics written to ``metrics.json`` and the per-case rows of ``per_case.csv``.
    """
    started = time.perf_counter()
    if is_finished(output_dir):
        raise DataError(f"{output_dir} already contains a finished run ({COMPLETION_MARKER}); give another output folder")
    if options.threads:
        torch.set_num_threads(options.threads)
        # Lightning's DDP launcher sets cpu_count / processes threads unless OMP_NUM_THREADS is set.
        os.environ.setdefault("OMP_NUM_THREADS", str(options.threads))
    output_dir.mkdir(parents=True, exist_ok=True)
    train_ids = [case.case_id for case in train_cases]
    val_ids = [case.case_id for case in val_cases]
    # Under DDP every process runs this function, and only global rank zero writes files.
    if is_global_zero():
        write_json(output_dir / "config.json", {"run_id": run_id, **config, "train_cases": train_ids, "val_cases": val_ids})

    # Seeds the network initialisation; augmentation and patches use their own derived seeds.
    L.seed_everything(seed, workers=True, verbose=False)
    module = _build_module(train_cases[0], num_classes, class_names, model, augmentation, options, seed)
    datamodule = SegmentationDataModule(
        train_cases,
        val_cases,
        patch_size=options.patch_size,
        # Each of the P processes loads batch_size / P patches per step. DistributedSampler gives
        # process r the patches r, r + P, ..., so together they load the patches one process
        # would. The patch set contains (max_steps * P) * (batch_size / P) = max_steps * batch_size.
        batch_size=options.batch_size // options.processes,
        max_steps=options.max_steps * options.processes,
        seed=seed,
        # MRI artifacts (TorchIO) run per sample while patches are loaded; the rest on the batch.
        worker_transform=build_worker_transform(augmentation),
        slice_axis=options.slice_axis,
        slice_context=options.slice_context,
    )
    trainer = L.Trainer(
        accelerator=options.accelerator,
        devices=options.devices,
        num_nodes=options.num_nodes,
        strategy=options.strategy,
        max_steps=options.max_steps,
        val_check_interval=options.val_every_steps or options.max_steps,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        logger=lightning_logger if lightning_logger is not None else False,
        log_every_n_steps=min(10, options.max_steps),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=list(callbacks),
    )
    trainer.fit(module, datamodule=datamodule)
    if module.validated_at_step != trainer.global_step:
        trainer.validate(module, datamodule=datamodule, verbose=False)

    per_case = module.validation_results
    metrics = {"run_id": run_id, **(summary or {})}
    metrics.update(_summarise(per_case, class_names, len(train_ids), trainer.global_step))
    metrics["wall_time_s"] = round(time.perf_counter() - started, 1)
    metrics["machine"] = describe_machine()
    if not trainer.is_global_zero:
        return metrics, per_case

    checkpoint = {"state_dict": module.net.state_dict(), "hyper_parameters": dict(module.hparams), "run_id": run_id}
    atomic_write(output_dir / "model.pt", lambda handle: torch.save(checkpoint, handle), binary=True)
    write_csv(output_dir / "per_case.csv", per_case)
    if on_finish is not None:
        metrics.update(on_finish(per_case, metrics))
    write_json(output_dir / COMPLETION_MARKER, metrics)
    return metrics, per_case


def _build_module(
    first_case: Case,
    num_classes: int,
    class_names: Sequence[str],
    model: Mapping[str, Any],
    augmentation: str | Mapping[str, Any],
    options: TrainingOptions,
    seed: int,
) -> SegmentationModule:
    """Build the Lightning module for volume patches, or for 2D slices when ``options.slice_axis`` is set."""
    in_channels = first_case.image.shape[0]
    common = {
        "num_classes": num_classes,
        "class_names": list(class_names),
        "augmentation": augmentation,
        "learning_rate": options.learning_rate,
        "max_steps": options.max_steps,
        "seed": seed,
    }
    if options.slice_axis is None:
        arguments = {**model, "spatial_dims": first_case.image.ndim - 1}
        return SegmentationModule(in_channels=in_channels, model=arguments, **common)
    arguments = {**model, "spatial_dims": 2}
    return SliceSegmentationModule(
        in_channels=slice_channels(in_channels, options.slice_context),
        model=arguments,
        slice_axis=options.slice_axis,
        slice_context=options.slice_context,
        **common,
    )


def _summarise(per_case: list[dict[str, Any]], class_names: Sequence[str], n_train: int, steps: int) -> dict[str, Any]:
    """Return case counts, steps, and Dice and HD95 averaged over validation cases (overall and per class)."""
    mean, std, count = mean_over_cases([row["dice_mean"] for row in per_case])
    metrics: dict[str, Any] = {
        "train_cases": n_train,
        "val_cases": count,
        "steps": steps,
        "dice_mean": mean,
        "dice_std": std,
        "hd95_mean": mean_over_cases([row["hd95_mean"] for row in per_case])[0],
    }
    for index, name in enumerate(class_names, start=1):
        metrics[f"dice_{name}"] = mean_over_cases([row[f"dice_{index}"] for row in per_case])[0]
    return metrics


def train_from_config(
    config: TrainConfig,
    *,
    config_path: Path,
    output_dir: Path,
    data_root: str | Path | None = None,
    callbacks: Sequence[L.Callback] = (),
) -> tuple[Path, dict[str, Any], bool]:
    """Train the run of a validated configuration into ``<output_dir>/<run id>/``.

    The run id is the configuration file's name and a hash of the resolved
    configuration, so a rerun of an unchanged configuration finds its finished
    run and returns its metrics without training. A run folder without
    ``metrics.json`` is left over from an interrupted run: it is removed and
    the run trains again.

    Returns:
        The run folder, its metrics, and whether it was trained now (``False``
        when it had finished before).
    """
    reference = strategy_reference(config.strategy, config_path)
    resolved = config.resolved(reference)
    identifier = run_id(resolved, config_path.stem)
    run_dir = output_dir / identifier
    if is_finished(run_dir):
        return run_dir, json.loads((run_dir / COMPLETION_MARKER).read_text()), False

    dataset = open_dataset(config.dataset, dataset_folder(config.dataset, data_root))
    train_ids, val_ids = select_cases(config, dataset)
    logger.info("loading %d training and %d validation cases of %s", len(train_ids), len(val_ids), dataset.folder)
    cases = {case_id: dataset.load(case_id) for case_id in train_ids + val_ids}
    _check_channels(cases)

    # Under DDP the other processes start while rank zero trains, and must keep its folder.
    if run_dir.exists() and is_global_zero():
        if not (run_dir / "config.json").is_file():
            raise DataError(f"{run_dir} exists but is not a run folder (no config.json); move it away or choose another --output")
        logger.warning("removing unfinished run folder %s and training the run again", run_dir)
        shutil.rmtree(run_dir)

    foreground_names = [dataset.classes[c] for c in range(1, dataset.num_classes) if c in dataset.classes]
    split = None if config.cases is not None else config.selected_split
    metrics, _ = train_segmenter(
        [cases[c] for c in train_ids],
        [cases[c] for c in val_ids],
        num_classes=dataset.num_classes,
        class_names=foreground_names,
        model=config.model.arguments(dataset.spatial_dims),
        augmentation=resolved["strategy_config"],
        options=config.training,
        seed=config.seed,
        output_dir=run_dir,
        run_id=identifier,
        config=resolved,
        summary={
            "strategy": config.strategy,
            "train_fraction": config.train_fraction,
            "fold": None if split is None else split.fold,
            "seed": config.seed,
        },
        callbacks=callbacks,
    )
    return run_dir, metrics, True


def _check_channels(cases: Mapping[str, Case]) -> None:
    channels = {case_id: case.image.shape[0] for case_id, case in cases.items()}
    if len(set(channels.values())) > 1:
        counts = list(channels.values())
        odd = min(channels, key=lambda case_id: counts.count(channels[case_id]))
        raise DataError(f"case {odd} has {channels[odd]} image channels but other cases have {sorted(set(counts) - {channels[odd]})}; every case needs the same channels")
