"""Weights & Biases tracking: training runs through Lightning's ``WandbLogger``, and the study summary run."""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Any

from segment import mean_over_cases

from .spec import TrackingSpec

logger = logging.getLogger(__name__)


def _configure_process(mode: str) -> None:
    """Set the process-wide wandb environment that a run in ``mode`` needs."""
    # Keep wandb's own console output and its stored console log out of the CLI display.
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_CONSOLE", "off")
    if mode == "offline":
        # wandb 0.31 starts its usage telemetry (an OpenTelemetry exporter that posts
        # to W&B's servers) from the process-wide settings, not from the run's
        # mode=offline, and reports crashes to Sentry; both stay off only when the
        # whole process is offline.
        os.environ["WANDB_MODE"] = "offline"
        os.environ["WANDB_ERROR_REPORTING"] = "false"


def make_wandb_logger(tracking: TrackingSpec, *, study: str, run_id: str, run_dir: Path, config: dict[str, Any]):
    """Return a ``WandbLogger`` for one training run, or ``None`` when tracking is disabled.

    Runs are grouped by study and named by run id, with the resolved run
    configuration as their config, so W&B's run table can group and filter by
    strategy, fraction, fold and seed. Offline runs are written under
    ``run_dir/wandb`` and never contact the network; ``wandb sync`` uploads them.
    """
    if tracking.mode == "disabled":
        return None
    from lightning.pytorch.loggers import WandbLogger

    _configure_process(tracking.mode)
    run_dir.mkdir(parents=True, exist_ok=True)
    return WandbLogger(
        project=tracking.project,
        entity=tracking.entity,
        group=study,
        name=run_id,
        job_type="train",
        tags=[str(config.get("strategy", ""))],
        save_dir=str(run_dir),
        mode=tracking.mode,
        config={"study": study, "run_id": run_id, **config},
        log_model=False,
    )


def finish_wandb(wandb_logger, *, per_case: list[dict[str, Any]], summary: dict[str, Any]) -> str | None:
    """Log the final per-case table and summary of a run, close the W&B run, and return its folder."""
    if wandb_logger is None:
        return None
    experiment = wandb_logger.experiment
    if per_case:
        columns = list(per_case[0])
        wandb_logger.log_table(key="val/per_case", columns=columns, data=[[row[c] for c in columns] for row in per_case])
    for key, value in summary.items():
        experiment.summary[key] = value
    hd95 = [row["hd95_mean"] for row in per_case if "hd95_mean" in row]
    if hd95 and "hd95_mean" not in summary:
        experiment.summary["hd95_mean"] = mean_over_cases(hd95)[0]
    folder = str(Path(experiment.dir).parent)
    experiment.finish()
    logger.debug("closed W&B run %s in %s", experiment.id, folder)
    return folder


# Report files logged as W&B tables, by W&B key.
SUMMARY_TABLES = {"summary/strategies": "summary.csv", "summary/paired": "paired.csv", "summary/per_case": "results.csv"}
# Columns of the report tables that are also stored as summary values of the W&B run, per strategy and fraction.
SUMMARY_VALUES = {
    "summary.csv": ["dice_mean", "dice_mean_ci_low", "dice_mean_ci_high", "dice_median", "hd95_mean", "hd95_median", "cases"],
    "paired.csv": ["dice_delta_mean", "p_wilcoxon", "p_holm"],
}


def log_study_summary(study_dir: Path, tracking: TrackingSpec, *, study: str, config: dict[str, Any]) -> str | None:
    """Log a built study report as one W&B run of job type ``summary`` in the study's group, and return its folder.

    The run contains the report tables (``summary.csv``, ``paired.csv``,
    ``results.csv``) as W&B tables, the report's PNG plots as images,
    ``report.html``, and the key figures of each strategy and training fraction
    as summary values named ``<column>/<strategy>/frac<fraction>``. Offline
    runs are written under ``study_dir/wandb``. Returns ``None`` when tracking
    is disabled or W&B fails to start the run (logged as an error).
    """
    if tracking.mode == "disabled":
        return None
    import wandb

    _configure_process(tracking.mode)
    try:
        run = wandb.init(
            project=tracking.project,
            entity=tracking.entity,
            group=study,
            name=f"{study}-summary",
            job_type="summary",
            tags=["summary"],
            dir=str(study_dir),
            mode=tracking.mode,
            config=config,
        )
    except wandb.errors.Error as error:
        logger.error("W&B summary run of study %s failed to start: %s; rebuild it with `medaug study report %s --wandb offline`", study, error, study_dir)
        return None

    try:
        payload: dict[str, Any] = {}
        for key, name in SUMMARY_TABLES.items():
            columns, rows = _read_table(study_dir / name)
            payload[key] = wandb.Table(columns=columns, data=rows)
        for png in sorted(study_dir.glob("*.png")):
            payload[f"plots/{png.stem}"] = wandb.Image(str(png))
        if (study_dir / "report.html").is_file():
            payload["report"] = wandb.Html(study_dir / "report.html", inject=False)
        run.log(payload)
        for name, columns in SUMMARY_VALUES.items():
            header, rows = _read_table(study_dir / name)
            for row in rows:
                values = dict(zip(header, row))
                for column in columns:
                    run.summary[f"{column}/{values['strategy']}/frac{values['train_fraction']:g}"] = values[column]
        folder = str(Path(run.dir).parent)
    finally:
        run.finish()
        # NOTE: in wandb 0.31, finish() can return before wandb-core has written the
        # offline run file (seen for the first run of a process). teardown() waits
        # for the service to exit, so the file is complete when this function returns.
        wandb.teardown()
    logger.info("logged the W&B summary run of study %s (%s) in %s", study, tracking.mode, folder)
    return folder


# Report columns that stay text even when they look like numbers (a case id such as "001").
TEXT_COLUMNS = {"run_id", "strategy", "case_id"}


def _read_table(path: Path) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of a report CSV file, with numbers parsed so W&B can plot them."""
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        columns = next(reader, [])
        rows = [[cell if column in TEXT_COLUMNS else _parse(cell) for column, cell in zip(columns, row)] for row in reader]
    return columns, rows


def _parse(cell: str) -> Any:
    for kind in (int, float):
        try:
            return kind(cell)
        except ValueError:
            continue
    return cell
