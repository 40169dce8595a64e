"""Run every training run of a study, skipping finished ones, and record their results.

Layout of ``<output>/<study>/``::

    study.json              the validated study file, resolved
    <run id>/config.json    resolved run configuration and its case lists
    <run id>/model.pt       network weights and hyperparameters (loads with weights_only=True)
    <run id>/per_case.csv   validation Dice per case and class
    <run id>/metrics.json   summary; written last, so its presence marks a finished run
    <run id>/wandb/         the W&B run files (offline mode)
    report.md, results.csv, dice.png

A run folder without ``metrics.json`` is left over from an interrupted run; it is
removed and the run trains again from the start.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import platform
import shutil
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch

from augment import build_worker_transform
from segment import SegmentationDataModule, SegmentationModule, mean_over_cases
from segment.data import MSDDataset, kfold_split, nnunet_split, resolve_data_root, training_subset
from segment.data.png import PNGDataset
from segment.errors import DataError

from segment.files import atomic_write, write_csv, write_json
from .errors import SpecError
from .report import write_report
from .spec import RunSpec, StudySpec, expand_runs, model_arguments
from .tracking import finish_wandb, make_wandb_logger

logger = logging.getLogger(__name__)

COMPLETION_MARKER = "metrics.json"


class StudyListener:
    """Receives progress events from ``run_study``; the default ignores them."""

    def study_started(self, runs: list[RunSpec], finished: set[str]) -> None: ...

    def run_started(self, run: RunSpec, max_steps: int) -> None: ...

    def run_step(self, run: RunSpec, step: int) -> None: ...

    def run_finished(self, run: RunSpec, result: RunResult) -> None: ...


@dataclass
class RunResult:
    run: RunSpec
    status: str  # "finished", "skipped" (finished earlier) or "failed"
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


class _StepCallback(L.Callback):
    def __init__(self, listener: StudyListener, run: RunSpec) -> None:
        self.listener = listener
        self.run = run

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.listener.run_step(self.run, trainer.global_step)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        # Lightning turns Ctrl-C into a silent exit with status 1, so log the interrupted run and how to resume.
        if isinstance(exception, KeyboardInterrupt):
            logger.warning("run %s interrupted at step %d; rerun the study to resume (finished runs are kept)", self.run.run_id, trainer.global_step)


def dataset_folder(spec: StudySpec, data_root: str | Path | None) -> Path:
    """Folder of the study's dataset: ``dataset.path`` if set, else ``<data root>/<dataset.name>``."""
    if spec.dataset.path is not None:
        folder = Path(spec.dataset.path)
    else:
        folder = resolve_data_root(data_root) / spec.dataset.name
    if not folder.is_dir():
        raise DataError(f"dataset folder not found: {folder}; check dataset.name in the study file and the data root (--data-root or MEDAUG_DATA)")
    return folder


def open_dataset(spec: StudySpec, folder: Path) -> MSDDataset | PNGDataset:
    if spec.dataset.format == "png":
        return PNGDataset(
            folder,
            images=spec.dataset.images,
            mask_suffix=spec.dataset.mask_suffix,
            spacing_csv=spec.dataset.spacing_csv,
            target_spacing=spec.dataset.target_spacing,
            group_pattern=spec.dataset.group_pattern,
        )
    return MSDDataset(folder)


def make_splits(spec: StudySpec, dataset: MSDDataset | PNGDataset) -> list[dict[str, list[str]]]:
    case_ids = [c.case_id for c in dataset.cases]
    if spec.split.scheme == "nnunet":
        return nnunet_split(case_ids, spec.split.splits_file)
    groups = {c: dataset.group(c) for c in case_ids} if isinstance(dataset, PNGDataset) else None
    return kfold_split(case_ids, folds=spec.split.folds, seed=spec.split.seed, groups=groups)


def run_cases(spec: StudySpec, run: RunSpec, splits: list[dict[str, list[str]]]) -> tuple[list[str], list[str]]:
    """Training and validation case ids of one run.

    The training subset depends on the split seed and fold only, so every
    strategy and seed of a fold trains on the same cases and results pair up.
    """
    fold = splits[run.fold]
    train = training_subset(fold["train"], run.train_fraction, seed=spec.split.seed + run.fold)
    return train, fold["val"]


def is_finished(run_dir: Path) -> bool:
    return (run_dir / COMPLETION_MARKER).is_file()


def run_study(
    spec: StudySpec,
    *,
    study_path: Path | None = None,
    data_root: str | Path | None = None,
    output_dir: str | Path = "results",
    listener: StudyListener | None = None,
    workers: int = 1,
) -> list[RunResult]:
    """Train every unfinished run of ``spec`` and write the study report.

    All cases the study needs are loaded and checked before the first run, so
    a bad file stops the study before any training. A run that fails is
    recorded in ``<run id>/error.txt`` and the study goes on with the next one.
    With ``workers > 1``, runs train in that many local processes, each with
    ``training.threads`` torch threads, or the CPU cores divided among them.
    """
    if workers < 1:
        raise SpecError(f"--workers must be at least 1, got {workers}")
    listener = listener or StudyListener()
    study_dir = Path(output_dir) / spec.name
    runs = expand_runs(spec, study_path)

    dataset = open_dataset(spec, dataset_folder(spec, data_root))
    splits = make_splits(spec, dataset)
    needed = sorted({case for run in runs for part in run_cases(spec, run, splits) for case in part})
    logger.info("loading %d cases of %s", len(needed), dataset.folder)
    cases = {case_id: dataset.load(case_id) for case_id in needed}
    channels = {case_id: case.image.shape[0] for case_id, case in cases.items()}
    if len(set(channels.values())) > 1:
        odd = min(channels, key=lambda c: list(channels.values()).count(channels[c]))
        raise DataError(f"case {odd} has {channels[odd]} image channels but other cases have {sorted(set(channels.values()) - {channels[odd]})}; every case needs the same channels")

    # The run ids let the report leave out runs of an earlier version of the study file.
    write_json(study_dir / "study.json", {**spec.model_dump(), "run_ids": [run.run_id for run in runs]})
    finished = {run.run_id for run in runs if is_finished(study_dir / run.run_id)}
    listener.study_started(runs, finished)

    results: dict[str, RunResult] = {}
    for run in runs:
        if run.run_id in finished:
            results[run.run_id] = RunResult(run, "skipped", _read_metrics(study_dir / run.run_id))
            listener.run_finished(run, results[run.run_id])

    pending = [run for run in runs if run.run_id not in finished]
    if workers > 1 and len(pending) > 1:
        results.update(_train_in_processes(spec, pending, study_dir, data_root, workers, listener))
    else:
        for run in pending:
            results[run.run_id] = _train_safely(spec, run, study_dir / run.run_id, dataset, splits, cases, listener)
            listener.run_finished(run, results[run.run_id])

    write_report(study_dir)
    return [results[run.run_id] for run in runs]


def _train_in_processes(spec, pending, study_dir, data_root, workers, listener) -> dict[str, RunResult]:
    """Train ``pending`` runs in ``workers`` spawned processes.

    A worker that raises or dies marks its run as failed; the other runs go on.
    """
    threads = spec.training.threads or max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")
    results = {}
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {pool.submit(_train_in_worker, spec, run, study_dir / run.run_id, data_root, threads): run for run in pending}
        for future in as_completed(futures):
            run = futures[future]
            try:
                result = future.result()
            except Exception as error:  # noqa: BLE001 - a worker killed by the OS must not stop the study
                logger.error("worker for run %s failed: %s", run.run_id, error)
                result = RunResult(run, "failed", error=f"{type(error).__name__}: {error}")
            results[run.run_id] = result
            listener.run_finished(run, result)
    return results


def _train_in_worker(spec: StudySpec, run: RunSpec, run_dir: Path, data_root, threads: int) -> RunResult:
    """Entry point of a worker process: load this run's cases and train it with ``threads`` torch threads."""
    torch.set_num_threads(threads)
    dataset = open_dataset(spec, dataset_folder(spec, data_root))
    splits = make_splits(spec, dataset)
    train_ids, val_ids = run_cases(spec, run, splits)
    cases = {case_id: dataset.load(case_id) for case_id in train_ids + val_ids}
    return _train_safely(spec, run, run_dir, dataset, splits, cases, StudyListener())


def _read_metrics(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / COMPLETION_MARKER).read_text())


def _train_safely(spec, run, run_dir, dataset, splits, cases, listener) -> RunResult:
    if run_dir.exists():
        logger.warning("removing unfinished run folder %s and training the run again", run_dir)
        shutil.rmtree(run_dir)
    try:
        metrics = train_run(spec, run, run_dir, dataset, splits, cases, listener)
    except (KeyboardInterrupt, DataError):
        raise
    except Exception as error:  # noqa: BLE001 - one failed run must not stop the study
        logger.error("run %s failed: %s", run.run_id, error)
        atomic_write(run_dir / "error.txt", lambda handle: handle.write(traceback.format_exc()))
        return RunResult(run, "failed", error=f"{type(error).__name__}: {error}")
    return RunResult(run, "finished", metrics)


def train_run(spec, run, run_dir: Path, dataset: MSDDataset, splits, cases, listener: StudyListener) -> dict[str, Any]:
    """Train and validate one run, writing its folder; returns the run's metrics."""
    started = time.perf_counter()
    train_ids, val_ids = run_cases(spec, run, splits)
    training = spec.training
    if training.threads:
        torch.set_num_threads(training.threads)
    run_dir.mkdir(parents=True)
    write_json(run_dir / "config.json", {"run_id": run.run_id, **run.config, "train_cases": train_ids, "val_cases": val_ids})

    # Seeds the network initialisation; augmentation and patches use their own derived seeds.
    L.seed_everything(run.seed, workers=True, verbose=False)
    foreground_names = [dataset.classes[c] for c in range(1, dataset.num_classes) if c in dataset.classes]
    module = SegmentationModule(
        in_channels=cases[train_ids[0]].image.shape[0],
        num_classes=dataset.num_classes,
        class_names=foreground_names,
        model=model_arguments(run.config["model"], dataset.spatial_dims),
        augmentation=run.config["strategy_config"],
        learning_rate=training.learning_rate,
        max_steps=training.max_steps,
        seed=run.seed,
    )
    datamodule = SegmentationDataModule(
        [cases[c] for c in train_ids],
        [cases[c] for c in val_ids],
        patch_size=training.patch_size,
        batch_size=training.batch_size,
        max_steps=training.max_steps,
        seed=run.seed,
        # MRI artifacts (TorchIO) run per sample while patches are loaded; the rest on the batch.
        worker_transform=build_worker_transform(run.config["strategy_config"]),
    )
    wandb_logger = make_wandb_logger(spec.tracking, study=spec.name, run_id=run.run_id, run_dir=run_dir, config=run.config)
    trainer = L.Trainer(
        accelerator="auto",
        devices=1,
        max_steps=training.max_steps,
        val_check_interval=training.val_every_steps or training.max_steps,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        logger=wandb_logger if wandb_logger is not None else False,
        log_every_n_steps=min(10, training.max_steps),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[_StepCallback(listener, run)],
    )
    listener.run_started(run, training.max_steps)
    trainer.fit(module, datamodule=datamodule)
    if module.validated_at_step != trainer.global_step:
        trainer.validate(module, datamodule=datamodule, verbose=False)

    per_case = module.validation_results
    metrics = _summarise(run, per_case, foreground_names, len(train_ids), trainer.global_step)
    metrics["wall_time_s"] = round(time.perf_counter() - started, 1)
    metrics["machine"] = describe_machine()

    checkpoint = {"state_dict": module.net.state_dict(), "hyper_parameters": dict(module.hparams), "run_id": run.run_id}
    atomic_write(run_dir / "model.pt", lambda handle: torch.save(checkpoint, handle), binary=True)
    write_csv(run_dir / "per_case.csv", per_case)
    metrics["wandb_dir"] = finish_wandb(wandb_logger, per_case=per_case, summary={k: v for k, v in metrics.items() if k.startswith("dice")})
    write_json(run_dir / COMPLETION_MARKER, metrics)
    return metrics


def describe_machine() -> str:
    """Device, CPU threads and versions, for reports next to wall times."""
    if torch.cuda.is_available():
        device = torch.cuda.get_device_name(0)
    else:
        device = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    return f"{device}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, Python {platform.python_version()}"


def _summarise(run: RunSpec, per_case: list[dict[str, Any]], class_names: list[str], n_train: int, steps: int) -> dict[str, Any]:
    mean, std, count = mean_over_cases([row["dice_mean"] for row in per_case])
    metrics: dict[str, Any] = {
        "run_id": run.run_id,
        "strategy": run.strategy,
        "train_fraction": run.train_fraction,
        "fold": run.fold,
        "seed": run.seed,
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
