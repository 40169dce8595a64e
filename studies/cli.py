"""The ``medaug`` command: ``medaug study run FILE``, ``medaug study report DIR``."""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from augment import StrategyError
from augment.cli import app as augment_app
from gan.cli import app as gan_app
from segment.cli import app as segment_app
from segment.data.cli import app as data_app
from segment.errors import DataError

from .errors import SpecError

app = typer.Typer(name="medaug", help="Measure which data augmentation helps medical image segmentation.", no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False)
study_app = typer.Typer(help="Run augmentation ablation studies and report them.", no_args_is_help=True)
app.add_typer(study_app, name="study")
app.add_typer(segment_app, name="segment")
app.add_typer(augment_app, name="augment")
app.add_typer(gan_app, name="gan")
app.add_typer(data_app, name="data")

console = Console(stderr=True)

# Errors that carry a complete, user-facing message: shown as one line, no traceback.
USER_ERRORS = (DataError, SpecError, StrategyError)


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False, show_time=False)],
        force=True,
    )
    # Lightning and wandb announce hardware and tips on every run; keep the display to progress and results.
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "wandb"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="lightning")
    warnings.filterwarnings("ignore", message=".*treespec.*")


class _ProgressListener:
    """Shows one bar for the runs of the study and one for the steps of the current run."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.runs_task = None
        self.steps_task = None

    def study_started(self, runs, finished) -> None:
        self.runs_task = self.progress.add_task("runs", total=len(runs), completed=0)
        if finished:
            console.log(f"{len(finished)} of {len(runs)} runs already finished; skipping them")

    def run_started(self, run, max_steps) -> None:
        if self.steps_task is not None:
            self.progress.remove_task(self.steps_task)
        self.steps_task = self.progress.add_task(run.run_id, total=max_steps)

    def run_step(self, run, step) -> None:
        self.progress.update(self.steps_task, completed=step)

    def run_finished(self, run, result) -> None:
        self.progress.advance(self.runs_task)
        if result.status == "failed":
            console.log(f"[red]run {run.run_id} failed[/red]: {result.error}")
        elif result.status == "finished":
            console.log(f"run {run.run_id}: mean Dice {result.metrics['dice_mean']:.4f} in {result.metrics['wall_time_s']:.0f} s")


@study_app.command("run")
def run_command(
    study_file: Annotated[str, typer.Argument(help="Study YAML file, or the name of a shipped study such as hippocampus-quick.")],
    data_root: Annotated[Optional[Path], typer.Option("--data-root", help="Folder that contains the datasets; default: $MEDAUG_DATA.")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for results; the study writes <output>/<study name>/.")] = Path("results"),
    tracking: Annotated[Optional[str], typer.Option(help="Override the study's W&B mode: offline, online or disabled.")] = None,
    workers: Annotated[int, typer.Option(help="Train this many runs at once in local processes; CPU threads are divided among them.")] = 1,
    launcher: Annotated[str, typer.Option(help="Launcher that trains the runs: local (this machine), ray (a Ray cluster) or slurm (Slurm jobs through submitit).")] = "local",
    address: Annotated[Optional[str], typer.Option(help="Ray cluster to connect to, e.g. auto or ray://HOST:10001; default: start a local Ray cluster.")] = None,
    cpus_per_run: Annotated[Optional[int], typer.Option(help="Ray and Slurm: CPUs reserved for each run, also its torch threads; default: training.threads, else 1.")] = None,
    gpus_per_run: Annotated[Optional[float], typer.Option(help="Ray and Slurm: GPUs reserved for each run (Ray accepts fractions such as 0.5); default: Ray 1 when the cluster has GPUs, Slurm 0.")] = None,
    slurm_time: Annotated[Optional[int], typer.Option(help="Slurm: time limit of each run's job in minutes (required with --launcher slurm).")] = None,
    slurm_partition: Annotated[Optional[str], typer.Option(help="Slurm: partition; default: the cluster's default partition.")] = None,
    slurm_mem: Annotated[Optional[float], typer.Option(help="Slurm: memory of each run's job in GB; default: the partition's default.")] = None,
    slurm_account: Annotated[Optional[str], typer.Option(help="Slurm: account to charge.")] = None,
    slurm_max_parallel: Annotated[Optional[int], typer.Option(help="Slurm: maximum number of the study's array jobs that run at once; default: 256, submitit's default.")] = None,
    slurm_setup: Annotated[Optional[list[str]], typer.Option(help="Slurm: shell line to run in each job before training, e.g. 'source /path/venv/bin/activate'; repeatable.")] = None,
    slurm_option: Annotated[Optional[list[str]], typer.Option(help="Slurm: further sbatch option as KEY=VALUE without dashes, e.g. qos=high; repeatable.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages.")] = False,
) -> None:
    """Train every run of a study that has not finished yet, then write its report."""
    _configure_logging(verbose)
    from .launchers import make_launcher
    from .runner import run_study
    from .spec import TrackingSpec, find_study_file, load_spec

    run_launcher = make_launcher(
        launcher,
        workers=workers,
        address=address,
        cpus_per_run=cpus_per_run,
        gpus_per_run=gpus_per_run,
        slurm_time=slurm_time,
        slurm_partition=slurm_partition,
        slurm_mem=slurm_mem,
        slurm_account=slurm_account,
        slurm_max_parallel=slurm_max_parallel,
        slurm_setup=slurm_setup or (),
        slurm_options=slurm_option or (),
    )

    spec = load_spec(study_file)
    if output.exists() and not output.is_dir():
        raise SpecError(f"--output {output} is a file; give a folder for the results")
    if tracking is not None:
        if tracking not in ("offline", "online", "disabled"):
            raise SpecError(f"--tracking must be offline, online or disabled, got {tracking!r}")
        spec = spec.model_copy(update={"tracking": TrackingSpec(**{**spec.tracking.model_dump(), "mode": tracking})})

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console) as progress:
        results = run_study(spec, study_path=find_study_file(study_file), data_root=data_root, output_dir=output, listener=_ProgressListener(progress), workers=workers, launcher=run_launcher)

    study_dir = output / spec.name
    console.log(f"report: {study_dir / 'report.md'}")
    failed = [r for r in results if r.status == "failed"]
    if failed:
        console.log(f"[red]{len(failed)} run(s) failed[/red]; see error.txt in their folders, then rerun to retry them")
        raise typer.Exit(1)


@study_app.command("plan")
def plan_command(
    study_file: Annotated[str, typer.Argument(help="Study YAML file, or the name of a shipped study.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Results folder, to tell finished runs from pending ones.")] = Path("results"),
) -> None:
    """List the runs of a study and estimate their training time on this machine, without training."""
    _configure_logging(False)
    from rich.table import Table

    from .plan import OVERHEAD_PER_RUN_S, plan_study
    from .spec import find_study_file, load_spec

    spec = load_spec(study_file)
    console.log("timing a few training steps and each strategy's augmentation on this machine...")
    planned = plan_study(spec, study_path=find_study_file(study_file), output_dir=output)

    table = Table(title=f"study {spec.name}: {len(planned)} runs")
    table.add_column("run", overflow="fold")
    for column in ("strategy", "fraction", "fold", "seed", "status", "estimate (min)"):
        table.add_column(column)
    for item in planned:
        run = item.run
        status = "finished" if item.finished else "pending"
        table.add_row(run.run_id, run.strategy, f"{run.train_fraction:g}", str(run.fold), str(run.seed), status, f"{item.estimated_s / 60:.1f}")
    Console().print(table)
    pending = sum(item.estimated_s for item in planned if not item.finished)
    Console().print(f"estimated time for the pending runs: {pending / 60:.0f} min on this machine (training steps timed here, plus about {OVERHEAD_PER_RUN_S:.0f} s per run)")
    if any(definition.synthetic is not None and definition.synthetic.dataset is None for definition in spec.definitions.values()):
        Console().print("synthetic strategies also train a GAN per fold and training fraction; that time is not in the estimate")


@study_app.command("report")
def report_command(
    study_dir: Annotated[Path, typer.Argument(help="Study results folder, e.g. results/hippocampus-quick.")],
    wandb: Annotated[Optional[str], typer.Option("--wandb", help="Log the report as the study's W&B summary run: offline, online or disabled; default: the study's tracking mode.")] = None,
    data_root: Annotated[Optional[Path], typer.Option("--data-root", help="Folder that contains the study's dataset, for the augmented samples; default: $MEDAUG_DATA.")] = None,
) -> None:
    """Rebuild report.md, report.html, the tables and plots from finished runs, without training."""
    _configure_logging(False)
    from .report import log_report_summary, write_report

    if not (study_dir / "study.json").is_file():
        raise SpecError(f"{study_dir} is not a study results folder (no study.json); give the folder that `medaug study run` wrote")
    if wandb is not None and wandb not in ("offline", "online", "disabled"):
        raise SpecError(f"--wandb must be offline, online or disabled, got {wandb!r}")
    path = write_report(study_dir, data_root=data_root)
    console.log(f"report: {path} and {path.with_suffix('.html')}" if path else f"no finished runs in {study_dir}")
    if path is not None:
        folder = log_report_summary(study_dir, mode=wandb)
        if folder is not None:
            console.log(f"W&B summary run: {folder}")


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit status 2."""
    try:
        app()
    except USER_ERRORS as error:
        # markup=False: paths and YAML snippets may contain square brackets.
        console.print(f"error: {error}", markup=False, highlight=False, soft_wrap=True, style="bold red")
        sys.exit(2)


if __name__ == "__main__":
    main()
