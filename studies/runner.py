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
import shutil
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import torch

from segment.data import MSDDataset, kfold_split, nnunet_split, resolve_data_root, training_subset
from segment.data.png import PNGDataset
from segment.errors import DataError

from segment.files import atomic_write, write_json
from segment.train_config import TrainingOptions
from segment.training import train_segmenter
from .errors import SpecError
from .report import write_report
from .spec import RunSpec, StudySpec, expand_runs, model_arguments
from .synthetic import SyntheticSpec, prepare_synthetic_cases
from .tracking import finish_wandb, make_wandb_logger

if TYPE_CHECKING:
    from .launchers import Launcher

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
    launcher: Launcher | None = None,
) -> list[RunResult]:
    """Train every unfinished run of ``spec`` and write the study report.

    All cases the study needs are loaded and checked before the first run, so
    a bad file stops the study before any training. A run that fails is
    recorded in ``<run id>/error.txt`` and the study goes on with the next one.
    With ``workers > 1``, runs train in that many local processes, each with
    ``training.threads`` torch threads, or the CPU cores divided among them.
    A ``launcher`` (see ``studies.launchers``) trains the pending runs on a Ray
    cluster or as Slurm jobs instead; their folders are the same.
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
    if launcher is not None and pending:
        results.update(launcher.train(spec, pending, study_dir, data_root, listener))
    elif workers > 1 and len(pending) > 1:
        results.update(_train_in_processes(spec, pending, study_dir, data_root, workers, listener))
    else:
        for run in pending:
            results[run.run_id] = _train_safely(spec, run, study_dir / run.run_id, dataset, splits, cases, listener)
            listener.run_finished(run, results[run.run_id])

    if write_report(study_dir, data_root=data_root) is not None:
        from .report import log_report_summary

        log_report_summary(study_dir)
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
    """Train one run; a failure other than invalid data or settings is logged and recorded in ``error.txt`` with the run id."""
    import sys

    from .spec import check_case_shapes

    # Invalid data or settings fail every run alike, so they stop the study before training.
    run_case_ids = [case_id for part in run_cases(spec, run, splits) for case_id in part]
    check_case_shapes(spec, {case_id: cases[case_id].image.shape[1:] for case_id in run_case_ids}, dataset.folder)
    if run_dir.exists():
        logger.warning("removing unfinished run folder %s and training the run again", run_dir)
        shutil.rmtree(run_dir)
    try:
        metrics = train_run(spec, run, run_dir, dataset, splits, cases, listener)
    except (KeyboardInterrupt, DataError, SpecError):
        raise
    except Exception as error:  # noqa: BLE001 - one failed run must not stop the study
        lines = [line for line in str(error).splitlines() if line.strip()] or [""]
        summary = f"{type(error).__name__}: {lines[0]}"
        if len(lines) > 1:
            # An error re-raised from a DataLoader worker ends with the original exception.
            summary += f" ({lines[-1].strip()})"
        if isinstance(error, torch.OutOfMemoryError):
            summary += "; reduce training.batch_size or training.patch_size"
        logger.error("run %s failed: %s; see %s", run.run_id, summary, run_dir / "error.txt")
        details = traceback.format_exc()
        atomic_write(run_dir / "error.txt", lambda handle: handle.write(f"run {run.run_id} failed: {summary}\n\n{details}"))
        # Free what the failed run held, so that the next run starts clean.
        if isinstance(error, torch.OutOfMemoryError) and torch.cuda.is_available():
            torch.cuda.empty_cache()
        wandb = sys.modules.get("wandb")
        if wandb is not None and wandb.run is not None:
            wandb.run.finish(exit_code=1)
        return RunResult(run, "failed", error=summary)
    return RunResult(run, "finished", metrics)


def _synthetic_cases(spec, run: RunSpec, dataset, train_ids: list[str], val_ids: list[str], study_dir: Path) -> list:
    """Generated training cases of a synthetic strategy (none for the others); see ``studies.synthetic``."""
    settings = run.config.get("synthetic")
    if settings is None:
        return []
    return prepare_synthetic_cases(
        SyntheticSpec.model_validate(settings),
        dataset_folder=dataset.folder,
        train_ids=train_ids,
        val_ids=val_ids,
        seed=run.seed,
        study_dir=study_dir,
        threads=spec.training.threads,
    )


def train_run(spec, run, run_dir: Path, dataset: MSDDataset, splits, cases, listener: StudyListener) -> dict[str, Any]:
    """Train and validate one run with ``segment.training.train_segmenter``, writing its folder; returns the run's metrics."""
    train_ids, val_ids = run_cases(spec, run, splits)
    run_dir.mkdir(parents=True)
    foreground_names = [dataset.classes[c] for c in range(1, dataset.num_classes) if c in dataset.classes]
    wandb_logger = make_wandb_logger(spec.tracking, study=spec.name, run_id=run.run_id, run_dir=run_dir, config=run.config)

    synthetic_cases = _synthetic_cases(spec, run, dataset, train_ids, val_ids, run_dir.parent)

    def finish(per_case: list[dict[str, Any]], metrics: dict[str, Any]) -> dict[str, Any]:
        dice = {key: value for key, value in metrics.items() if key.startswith("dice")}
        # train_cases counts real cases only, so Dice-against-training-size curves stay comparable.
        extra = {"train_cases": len(train_ids), "synthetic_cases": len(synthetic_cases)}
        return {**extra, "wandb_dir": finish_wandb(wandb_logger, per_case=per_case, summary=dice)}

    listener.run_started(run, spec.training.max_steps)
    metrics, _ = train_segmenter(
        [cases[c] for c in train_ids] + synthetic_cases,
        [cases[c] for c in val_ids],
        num_classes=dataset.num_classes,
        class_names=foreground_names,
        model=model_arguments(run.config["model"], dataset.spatial_dims),
        augmentation=run.config["strategy_config"],
        options=TrainingOptions(**spec.training.model_dump()),
        seed=run.seed,
        output_dir=run_dir,
        run_id=run.run_id,
        config=run.config,
        summary={"strategy": run.strategy, "train_fraction": run.train_fraction, "fold": run.fold, "seed": run.seed},
        lightning_logger=wandb_logger,
        callbacks=[_StepCallback(listener, run)],
        on_finish=finish,
    )
    return metrics
