"""Launchers: train the pending runs of a study on a Ray cluster or as Slurm jobs.

The local launcher (the default) trains runs in this process or in a pool of
local processes and lives in ``studies.runner``. The launchers here hand each
pending run to a distributed engine instead. Every run calls the same worker
entry point as a local worker process, ``studies.runner._train_in_worker``, so
it writes the same ``<study>/<run id>/`` folder and resume, reports and W&B work
unchanged whichever launcher trained it.

Workers on other machines read the dataset and write the results through the
absolute paths that the driver resolved. Both must therefore be on a file
system that every node mounts at the same path.

Ray and submitit are optional extras: ``pip install 'medaug[ray]'`` or
``pip install 'medaug[slurm]'``.
"""

from __future__ import annotations

import importlib
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from segment.data import resolve_data_root

from .errors import SpecError
from .runner import RunResult, StudyListener, _train_in_worker
from .spec import RunSpec, StudySpec

logger = logging.getLogger(__name__)

LAUNCHERS = ("local", "ray", "slurm")


class LauncherError(SpecError):
    """A launcher is missing its optional dependency, is misconfigured, or cannot reach its cluster."""


def _import_extra(module: str, extra: str, launcher: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise LauncherError(f"--launcher {launcher} needs the {module} package, which is not installed; install it with: pip install 'medaug[{extra}]'") from error


def _absolute_locations(spec: StudySpec, study_dir: Path, data_root: str | Path | None) -> tuple[Path, Path | None]:
    """Study folder and data root as absolute paths, because workers start in other working directories."""
    if spec.dataset.path is None:
        data_root = resolve_data_root(data_root).resolve()
    return Path(study_dir).resolve(), data_root


def _failed(run: RunSpec, reason: str) -> RunResult:
    logger.error("run %s failed: %s", run.run_id, reason)
    return RunResult(run, "failed", error=reason)


def _describe(error: BaseException) -> str:
    """Return ``Type: first line of the message`` of an exception, for a one-line run status."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


class Launcher(ABC):
    """Trains pending runs somewhere other than this process and collects their results."""

    name: str

    @abstractmethod
    def train(
        self,
        spec: StudySpec,
        pending: Sequence[RunSpec],
        study_dir: Path,
        data_root: str | Path | None,
        listener: StudyListener,
    ) -> dict[str, RunResult]:
        """Train ``pending`` runs into ``study_dir/<run id>/``, calling ``listener.run_finished`` as each ends.

        A run that fails, or whose worker dies, is returned with status
        ``failed``, and the other runs go on.
        """


@dataclass(frozen=True)
class RayOptions:
    """Cluster address and resources of the Ray tasks that train a study's runs.

    Args:
        address: cluster to connect to, in any form ``ray.init`` accepts
            (``auto``, ``HOST:6379``, ``ray://HOST:10001``); ``None`` starts a
            local cluster on this machine, reachable on 127.0.0.1 only.
        cpus_per_run: CPUs reserved for each run, also its torch threads;
            default ``training.threads`` of the study, else 1.
        gpus_per_run: GPUs reserved for each run; a fraction such as 0.5
            shares one GPU between runs. Default: 1 when the cluster has GPUs, else 0.
        local_cpus: CPUs of a local cluster; default: all cores of this machine.
        poll_s: seconds between checks for finished runs.
    """

    address: str | None = None
    cpus_per_run: int | None = None
    gpus_per_run: float | None = None
    local_cpus: int | None = None
    poll_s: float = 5.0


def _train_on_ray(spec: StudySpec, run: RunSpec, run_dir: Path, data_root: Path | None, threads: int, gpus: float) -> RunResult:
    """Ray task of one run: hide the node's GPUs when the run reserved none, then train like a local worker."""
    if gpus == 0:
        # Ray 2.60 leaves CUDA_VISIBLE_DEVICES alone for tasks without GPUs, and
        # Lightning's accelerator="auto" would then train on a GPU that Ray gave to another task.
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    return _train_in_worker(spec, run, run_dir, data_root, threads)


class RayLauncher(Launcher):
    """Each pending run becomes one Ray task that reserves its CPUs and GPU share.

    Tasks are not retried: a run whose task fails or whose worker dies is
    recorded as failed, and rerunning the study trains it again. Each task
    runs in a fresh worker process (``max_calls=1``), so no torch, CUDA or W&B
    state carries over between runs.
    """

    name = "ray"

    def __init__(self, options: RayOptions | None = None) -> None:
        self.options = options or RayOptions()
        if self.options.cpus_per_run is not None and self.options.cpus_per_run < 1:
            raise LauncherError(f"--cpus-per-run must be at least 1, got {self.options.cpus_per_run}")
        if self.options.gpus_per_run is not None and self.options.gpus_per_run < 0:
            raise LauncherError(f"--gpus-per-run must be 0 or more, got {self.options.gpus_per_run}")

    def train(self, spec, pending, study_dir, data_root, listener) -> dict[str, RunResult]:
        ray = _import_extra("ray", "ray", self.name)
        study_dir, data_root = _absolute_locations(spec, study_dir, data_root)
        threads = self.options.cpus_per_run or spec.training.threads or 1

        self._connect(ray)
        try:
            gpus = self._gpus_per_run(ray)
            self._check_feasible(ray, threads, gpus)
            task = ray.remote(num_cpus=threads, num_gpus=gpus, max_retries=0, max_calls=1)(_train_on_ray)
            references = {task.remote(spec, run, study_dir / run.run_id, data_root, threads, gpus): run for run in pending}
            logger.info("submitted %d runs to Ray, each with %d CPUs and %g GPUs", len(references), threads, gpus)
            return self._collect(ray, references, listener)
        finally:
            ray.shutdown()

    def _connect(self, ray: ModuleType) -> None:
        if self.options.address is not None:
            try:
                ray.init(address=self.options.address, logging_level=logging.WARNING, log_to_driver=False)
            except (ConnectionError, ImportError, RuntimeError, ValueError) as error:
                raise LauncherError(f"cannot connect to the Ray cluster at --address {self.options.address}: {error}") from error
            return
        # A cluster of this machine only: no usage statistics, no dashboard, services on the loopback address.
        os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
        # Ray 2.60 on Linux replaces a node address of 127.0.0.1 by the machine's network
        # address, and its servers then listen on every interface. The single-machine mode
        # it uses on macOS and Windows keeps 127.0.0.1; that mode is a module constant.
        from ray._private import ray_constants

        cluster_mode = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
        if cluster_mode is None:
            logger.warning("this Ray version has no single-machine mode constant; the local cluster may listen on every network interface")
        ray_constants.ENABLE_RAY_CLUSTER = False
        try:
            ray.init(
                address="local",
                num_cpus=self.options.local_cpus,
                include_dashboard=False,
                logging_level=logging.WARNING,
                log_to_driver=False,
                _node_ip_address="127.0.0.1",
            )
        finally:
            if cluster_mode is None:
                del ray_constants.ENABLE_RAY_CLUSTER
            else:
                ray_constants.ENABLE_RAY_CLUSTER = cluster_mode

    def _gpus_per_run(self, ray: ModuleType) -> float:
        if self.options.gpus_per_run is not None:
            return self.options.gpus_per_run
        return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0

    @staticmethod
    def _check_feasible(ray: ModuleType, threads: int, gpus: float) -> None:
        # Ray keeps a task that no node can hold pending forever, so reject it here.
        nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
        if not any(node.get("CPU", 0) >= threads and node.get("GPU", 0) >= gpus for node in nodes):
            largest = max(nodes, key=lambda node: (node.get("GPU", 0), node.get("CPU", 0)), default={})
            raise LauncherError(
                f"no node of the Ray cluster has {threads} CPUs and {gpus:g} GPUs for one run "
                f"(largest node: {largest.get('CPU', 0):g} CPUs, {largest.get('GPU', 0):g} GPUs); lower --cpus-per-run or --gpus-per-run"
            )

    def _collect(self, ray: ModuleType, references: dict[Any, RunSpec], listener: StudyListener) -> dict[str, RunResult]:
        results: dict[str, RunResult] = {}
        waiting = list(references)
        while waiting:
            done, waiting = ray.wait(waiting, num_returns=1, timeout=self.options.poll_s)
            for reference in done:
                run = references[reference]
                try:
                    result = ray.get(reference)
                except ray.exceptions.RayError as error:
                    # Worker crashes and errors raised outside _train_safely (e.g. a bad case file) end here.
                    result = _failed(run, _describe(getattr(error, "cause", None) or error))
                results[run.run_id] = result
                listener.run_finished(run, result)
        return results


@dataclass(frozen=True)
class SlurmOptions:
    """Resources of the Slurm job of each run; one job array contains all pending runs of a study.

    Args:
        time_min: time limit of one run's job, in minutes.
        partition: Slurm partition; default: the cluster's default partition.
        cpus_per_run: CPUs per job (``--cpus-per-task``), also the run's torch
            threads; default ``training.threads`` of the study, else 1.
        gpus_per_run: GPUs per job (``--gpus-per-node``).
        mem_gb: memory per job in GB (``--mem``); default: the partition's default.
        account: Slurm account to charge (``--account``).
        max_parallel: maximum number of the array's jobs that run at once; default: 256 (submitit 1.5's default).
        setup: shell lines run in the job before training, e.g. ``source /path/venv/bin/activate``.
        extra: further ``#SBATCH`` options without the leading dashes, e.g. ``{"qos": "high"}``.
        poll_s: seconds between checks for finished jobs.
    """

    time_min: int
    partition: str | None = None
    cpus_per_run: int | None = None
    gpus_per_run: int = 0
    mem_gb: float | None = None
    account: str | None = None
    max_parallel: int | None = None
    setup: tuple[str, ...] = ()
    extra: Mapping[str, str] = field(default_factory=dict)
    poll_s: float = 30.0


class SlurmLauncher(Launcher):
    """Submits each pending run as one task of a Slurm job array through submitit and waits for them.

    submitit keeps the job scripts, pickled calls and logs under
    ``<study>/slurm/``. If this process stops while jobs are queued or
    running, the jobs go on. Wait for them (``squeue``) before rerunning the
    study, because a rerun trains unfinished runs again from the start.

    Args:
        options: resources of each job.
        cluster: submitit executor; ``"slurm"``, or ``"local"`` to run the
            jobs as processes of this machine through the same submission path.
    """

    name = "slurm"

    def __init__(self, options: SlurmOptions, *, cluster: str = "slurm") -> None:
        if options.time_min < 1:
            raise LauncherError(f"--slurm-time must be at least 1 minute, got {options.time_min}")
        if options.cpus_per_run is not None and options.cpus_per_run < 1:
            raise LauncherError(f"--cpus-per-run must be at least 1, got {options.cpus_per_run}")
        if options.gpus_per_run < 0 or options.gpus_per_run != int(options.gpus_per_run):
            raise LauncherError(f"--gpus-per-run must be a whole number of GPUs for Slurm jobs, got {options.gpus_per_run}")
        if options.mem_gb is not None and options.mem_gb <= 0:
            raise LauncherError(f"--slurm-mem must be positive (GB), got {options.mem_gb}")
        if options.max_parallel is not None and options.max_parallel < 1:
            raise LauncherError(f"--slurm-max-parallel must be at least 1, got {options.max_parallel}")
        if cluster not in ("slurm", "local"):
            raise ValueError(f"cluster must be 'slurm' or 'local', got {cluster!r}")
        self.options = options
        self.cluster = cluster

    def parameters(self, spec: StudySpec) -> dict[str, Any]:
        """Return the submitit ``AutoExecutor`` parameters of every job of ``spec``."""
        options = self.options
        parameters: dict[str, Any] = {
            "name": f"medaug-{spec.name}",
            "timeout_min": options.time_min,
            "cpus_per_task": options.cpus_per_run or spec.training.threads or 1,
            "gpus_per_node": int(options.gpus_per_run),
            "tasks_per_node": 1,
            "nodes": 1,
        }
        if options.mem_gb is not None:
            parameters["mem_gb"] = options.mem_gb
        slurm = {
            "slurm_partition": options.partition,
            "slurm_account": options.account,
            "slurm_array_parallelism": options.max_parallel,
            "slurm_setup": list(options.setup) or None,
            "slurm_additional_parameters": dict(options.extra) or None,
        }
        parameters.update({key: value for key, value in slurm.items() if value is not None})
        return parameters

    def submit(self, spec: StudySpec, pending: Sequence[RunSpec], study_dir: Path, data_root: str | Path | None) -> list[tuple[RunSpec, Any]]:
        """Submit ``pending`` runs as one job array and return each run with its submitit job, without waiting."""
        submitit = _import_extra("submitit", "slurm", self.name)
        study_dir, data_root = _absolute_locations(spec, study_dir, data_root)
        try:
            executor = submitit.AutoExecutor(folder=study_dir / "slurm" / "%j", cluster=self.cluster)
        except RuntimeError as error:
            raise LauncherError(f"--launcher slurm needs Slurm's sbatch and srun on PATH ({error}); run medaug on a login node of the cluster") from error
        parameters = self.parameters(spec)
        executor.update_parameters(**parameters)

        threads = parameters["cpus_per_task"]
        with executor.batch():
            jobs = [executor.submit(_train_in_worker, spec, run, study_dir / run.run_id, data_root, threads) for run in pending]
        logger.info("submitted %d runs as Slurm job %s", len(jobs), jobs[0].job_id.split("_")[0] if jobs else "-")
        return list(zip(pending, jobs))

    def train(self, spec, pending, study_dir, data_root, listener) -> dict[str, RunResult]:
        submitit = _import_extra("submitit", "slurm", self.name)
        submitted = self.submit(spec, pending, study_dir, data_root)
        runs = {id(job): run for run, job in submitted}

        results: dict[str, RunResult] = {}
        for job in submitit.helpers.as_completed([job for _, job in submitted], poll_frequency=self.options.poll_s):
            run = runs[id(job)]
            try:
                result = job.result()
            except submitit.core.utils.FailedJobError as error:
                result = _failed(run, f"job {job.job_id} failed: {_raised_in_job(error)}; log: {job.paths.stderr}")
            except Exception as error:  # noqa: BLE001 - a cancelled, timed-out or lost job must not stop the study
                result = _failed(run, f"job {job.job_id} did not finish: {_describe(error)}; log: {job.paths.stderr}")
            results[run.run_id] = result
            listener.run_finished(run, result)
        return results


def _raised_in_job(error: BaseException) -> str:
    """Return the exception line of the job's traceback from submitit's ``FailedJobError`` message."""
    # submitit 1.5 puts the traceback between two lines of dashes.
    parts = str(error).split("----------------------\n")
    trace = parts[1] if len(parts) > 2 else ""
    lines = [line.strip() for line in trace.splitlines() if line.strip()]
    return lines[-1] if lines else _describe(error)


def make_launcher(
    name: str,
    *,
    workers: int = 1,
    address: str | None = None,
    cpus_per_run: int | None = None,
    gpus_per_run: float | None = None,
    slurm_time: int | None = None,
    slurm_partition: str | None = None,
    slurm_mem: float | None = None,
    slurm_account: str | None = None,
    slurm_max_parallel: int | None = None,
    slurm_setup: Sequence[str] = (),
    slurm_options: Sequence[str] = (),
) -> Launcher | None:
    """Build the launcher named on the command line from its options; ``None`` means the local launcher.

    Raises:
        LauncherError: for an unknown launcher, or an option that the chosen launcher does not use.
    """
    if name not in LAUNCHERS:
        raise LauncherError(f"--launcher must be one of {', '.join(LAUNCHERS)}, got {name!r}")
    slurm_given = {
        "--slurm-time": slurm_time,
        "--slurm-partition": slurm_partition,
        "--slurm-mem": slurm_mem,
        "--slurm-account": slurm_account,
        "--slurm-max-parallel": slurm_max_parallel,
        "--slurm-setup": list(slurm_setup) or None,
        "--slurm-option": list(slurm_options) or None,
    }
    misplaced = [option for option, value in slurm_given.items() if value is not None and name != "slurm"]
    if address is not None and name != "ray":
        misplaced.append("--address")
    if name == "local":
        misplaced += [option for option, value in (("--cpus-per-run", cpus_per_run), ("--gpus-per-run", gpus_per_run)) if value is not None]
    if misplaced:
        raise LauncherError(f"{', '.join(misplaced)} do not apply to --launcher {name}; remove them or choose the launcher they belong to")
    if workers != 1 and name != "local":
        raise LauncherError(f"--workers applies to --launcher local only; --launcher {name} runs as many runs at once as the cluster has resources for")

    if name == "local":
        return None
    if name == "ray":
        return RayLauncher(RayOptions(address=address, cpus_per_run=cpus_per_run, gpus_per_run=gpus_per_run))
    if slurm_time is None:
        raise LauncherError("--launcher slurm needs --slurm-time MINUTES, the time limit of one run's job")
    if gpus_per_run is not None and gpus_per_run != int(gpus_per_run):
        raise LauncherError(f"--gpus-per-run must be a whole number of GPUs for Slurm jobs, got {gpus_per_run}")
    options = SlurmOptions(
        time_min=slurm_time,
        partition=slurm_partition,
        cpus_per_run=cpus_per_run,
        gpus_per_run=int(gpus_per_run or 0),
        mem_gb=slurm_mem,
        account=slurm_account,
        max_parallel=slurm_max_parallel,
        setup=tuple(slurm_setup),
        extra=_parse_sbatch_options(slurm_options),
    )
    return SlurmLauncher(options)


def _parse_sbatch_options(items: Sequence[str]) -> dict[str, str]:
    options = {}
    for item in items:
        key, separator, value = item.partition("=")
        key = key.strip().lstrip("-")
        if not separator or not key:
            raise LauncherError(f"--slurm-option must be KEY=VALUE, an sbatch option without its dashes such as qos=high, got {item!r}")
        options[key] = value
    return options
