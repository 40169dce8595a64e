"""Weights & Biases tracking of training runs through Lightning's ``WandbLogger``."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from .spec import TrackingSpec

logger = logging.getLogger(__name__)


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

    # Keep wandb's own console output and its stored console log out of the CLI display.
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_CONSOLE", "off")
    if tracking.mode == "offline":
        # wandb 0.31 starts its usage telemetry (an OpenTelemetry exporter that posts
        # to W&B's servers) from the process-wide settings, not from the run's
        # mode=offline, and reports crashes to Sentry; both stay off only when the
        # whole process is offline.
        os.environ["WANDB_MODE"] = "offline"
        os.environ["WANDB_ERROR_REPORTING"] = "false"
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
    folder = str(Path(experiment.dir).parent)
    experiment.finish()
    logger.debug("closed W&B run %s in %s", experiment.id, folder)
    return folder
