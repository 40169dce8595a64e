"""Ray and Slurm launchers: same per-case results as the local launcher, submission scripts, errors."""

from __future__ import annotations

import importlib
import ipaddress
import os
from pathlib import Path

import pytest
import yaml

from studies.launchers import LauncherError, RayLauncher, RayOptions, SlurmLauncher, SlurmOptions, make_launcher
from studies.runner import StudyListener, _train_in_worker, run_study
from studies.spec import expand_runs, load_spec
from tests.conftest import make_msd_dataset
from tests.studies.test_cli import error_line, medaug


def two_run_study(folder: Path) -> Path:
    dataset = make_msd_dataset(folder / "Synthetic", n_cases=4)
    study = {
        "name": "launch",
        "dataset": {"name": "Synthetic", "path": str(dataset)},
        "split": {"folds": 2},
        "strategies": ["none", "nonrigid"],
        "model": {"features": [4, 8]},
        "training": {"max_steps": 3, "batch_size": 2, "patch_size": [8, 8, 8], "threads": 1},
        "tracking": {"mode": "disabled"},
    }
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


@pytest.fixture(scope="module")
def local_study(tmp_path_factory) -> tuple[Path, Path]:
    """The two-run study file and the results folder of its runs trained by the local launcher."""
    folder = tmp_path_factory.mktemp("launchers")
    study_file = two_run_study(folder)
    results = run_study(load_spec(study_file), study_path=study_file, output_dir=folder / "local")
    assert [result.status for result in results] == ["finished", "finished"]
    return study_file, folder / "local" / "launch"


def assert_same_per_case(local_dir: Path, other_dir: Path, run_ids: list[str]) -> None:
    for run_id in run_ids:
        assert (other_dir / run_id / "metrics.json").is_file(), f"run {run_id} has no metrics.json"
        assert (other_dir / run_id / "per_case.csv").read_text() == (local_dir / run_id / "per_case.csv").read_text()


class RecordingListener(StudyListener):
    def __init__(self) -> None:
        self.finished: list[tuple[str, str]] = []

    def run_finished(self, run, result) -> None:
        self.finished.append((run.run_id, result.status))


@pytest.mark.slow
def test_ray_matches_local(local_study, tmp_path):
    study_file, local_dir = local_study
    spec = load_spec(study_file)
    listener = RecordingListener()

    results = run_study(spec, study_path=study_file, output_dir=tmp_path, listener=listener, launcher=RayLauncher(RayOptions(local_cpus=2, poll_s=1)))

    run_ids = [run.run_id for run in expand_runs(spec, study_file)]
    assert [result.status for result in results] == ["finished", "finished"]
    assert sorted(listener.finished) == sorted((run_id, "finished") for run_id in run_ids)
    assert_same_per_case(local_dir, tmp_path / "launch", run_ids)
    assert (tmp_path / "launch" / "report.md").is_file()

    # A rerun finds the runs that Ray finished and starts no cluster for them.
    again = run_study(spec, study_path=study_file, output_dir=tmp_path, launcher=RayLauncher(RayOptions(address="ray://127.0.0.1:1")))
    assert [result.status for result in again] == ["skipped", "skipped"]


@pytest.mark.slow
def test_ray_failures_and_infeasible_runs(local_study, tmp_path):
    study_file, _ = local_study
    spec = load_spec(study_file)
    runs = expand_runs(spec, study_file)

    with pytest.raises(LauncherError, match="no node of the Ray cluster has 1 CPUs and 1 GPUs"):
        RayLauncher(RayOptions(local_cpus=2, gpus_per_run=1)).train(spec, runs, tmp_path, None, StudyListener())

    # The workers cannot find the dataset: each run fails with the reason, and the study goes on.
    moved = spec.model_copy(update={"dataset": spec.dataset.model_copy(update={"path": str(tmp_path / "moved")})})
    results = RayLauncher(RayOptions(local_cpus=2, poll_s=1)).train(moved, runs, tmp_path, None, StudyListener())
    assert sorted(results) == sorted(run.run_id for run in runs)
    for result in results.values():
        assert result.status == "failed"
        assert result.error.startswith("DataError: dataset folder not found")


def listening_sockets() -> dict[str, tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]]:
    """Local address and port of every listening TCP socket of this machine by inode, from /proc/net/tcp and tcp6."""
    sockets = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            host, port = fields[1].split(":")
            # The kernel prints each 32-bit word of the address in host (little-endian) byte order.
            raw = b"".join(bytes.fromhex(host[i : i + 8])[::-1] for i in range(0, len(host), 8))
            sockets[fields[9]] = (ipaddress.ip_address(raw), int(port, 16))
    return sockets


def ray_socket_inodes() -> set[str]:
    """Inodes of the sockets held by Ray's processes (raylet, gcs_server, workers and agents)."""
    inodes = set()
    for process in Path("/proc").iterdir():
        try:
            command = (process / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if "ray" not in command or process.name == str(os.getpid()):
                continue
            links = [os.readlink(fd) for fd in (process / "fd").iterdir()]
        except OSError:  # not a process folder, or the process ended meanwhile
            continue
        inodes.update(link[len("socket:[") : -1] for link in links if link.startswith("socket:["))
    return inodes


def is_loopback(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/net/tcp").is_file(), reason="reads listening sockets from Linux's /proc/net/tcp")
def test_local_ray_cluster_listens_on_loopback_only():
    ray = pytest.importorskip("ray")

    RayLauncher(RayOptions(local_cpus=1))._connect(ray)
    try:
        listening = listening_sockets()
        opened = {listening[inode] for inode in ray_socket_inodes() if inode in listening}
        node_address = ray.util.get_node_ip_address()
        usage_stats = os.environ.get("RAY_USAGE_STATS_ENABLED")
    finally:
        ray.shutdown()

    assert node_address == "127.0.0.1"
    assert usage_stats == "0"
    assert len(opened) >= 2, f"expected the listening sockets of Ray's GCS and raylet, found {opened}"
    assert all(is_loopback(address) for address, _ in opened), sorted(map(str, opened))


@pytest.mark.slow
def test_slurm_local_executor_matches_local(local_study, tmp_path):
    study_file, local_dir = local_study
    spec = load_spec(study_file)
    launcher = SlurmLauncher(SlurmOptions(time_min=20, poll_s=1), cluster="local")

    results = run_study(spec, study_path=study_file, output_dir=tmp_path, launcher=launcher)

    assert [result.status for result in results] == ["finished", "finished"]
    assert_same_per_case(local_dir, tmp_path / "launch", [run.run_id for run in expand_runs(spec, study_file)])
    logs = sorted((tmp_path / "launch" / "slurm").rglob("*_log.out"))
    assert len(logs) == 2


@pytest.mark.slow
def test_slurm_failed_job_names_its_log(local_study, tmp_path):
    study_file, _ = local_study
    spec = load_spec(study_file)
    moved = spec.model_copy(update={"dataset": spec.dataset.model_copy(update={"path": str(tmp_path / "moved")})})
    run = expand_runs(spec, study_file)[0]

    results = SlurmLauncher(SlurmOptions(time_min=5, poll_s=1), cluster="local").train(moved, [run], tmp_path, None, StudyListener())

    result = results[run.run_id]
    assert result.status == "failed"
    assert "dataset folder not found" in result.error
    assert str(tmp_path / "slurm") in result.error


def test_slurm_submission_script(tmp_path):
    mocked_slurm = pytest.importorskip("submitit.slurm.test_slurm").mocked_slurm
    study_file = two_run_study(tmp_path)
    spec = load_spec(study_file)
    runs = expand_runs(spec, study_file)
    options = SlurmOptions(
        time_min=90,
        partition="gpu",
        cpus_per_run=4,
        gpus_per_run=1,
        mem_gb=16,
        account="lab",
        max_parallel=1,
        setup=("source /opt/medaug/bin/activate",),
        extra={"qos": "high"},
    )
    study_dir = tmp_path / "results" / "launch"

    with mocked_slurm():
        submitted = SlurmLauncher(options).submit(spec, runs, study_dir, None)

    assert [run.run_id for run, _ in submitted] == [run.run_id for run in runs]
    array_id = submitted[0][1].job_id.split("_")[0]
    assert [job.job_id for _, job in submitted] == [f"{array_id}_0", f"{array_id}_1"]
    script = (study_dir / "slurm" / array_id / f"{array_id}_submission.sh").read_text().splitlines()
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --time=90",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --mem=16GB",
        "#SBATCH --account=lab",
        "#SBATCH --qos=high",
        "#SBATCH --job-name=medaug-launch",
        "#SBATCH --array=0-1%1",
        "source /opt/medaug/bin/activate",
    ):
        assert line in script
    command = script[-1]
    assert command.startswith("srun ")
    assert f"-m submitit.core._submit {study_dir.resolve()}/slurm/%j" in command

    # Each array task calls the local workers' entry point on its run folder.
    for run, job in submitted:
        submission = job.submission()
        assert submission.function is _train_in_worker
        assert submission.args[2] == study_dir.resolve() / run.run_id
        assert submission.args[4] == 4


def test_launcher_options_checked():
    with pytest.raises(LauncherError, match="--launcher must be one of local, ray, slurm, got 'dask'"):
        make_launcher("dask")
    with pytest.raises(LauncherError, match="needs --slurm-time MINUTES"):
        make_launcher("slurm")
    with pytest.raises(LauncherError, match="--slurm-partition, --address do not apply to --launcher local"):
        make_launcher("local", slurm_partition="gpu", address="auto")
    with pytest.raises(LauncherError, match="--workers applies to --launcher local only"):
        make_launcher("ray", workers=2)
    with pytest.raises(LauncherError, match="whole number of GPUs"):
        make_launcher("slurm", slurm_time=10, gpus_per_run=0.5)
    with pytest.raises(LauncherError, match="must be KEY=VALUE"):
        make_launcher("slurm", slurm_time=10, slurm_options=["exclusive"])

    launcher = make_launcher("slurm", slurm_time=10, slurm_options=["--qos=high", "constraint=a100"])
    assert launcher.options.extra == {"qos": "high", "constraint": "a100"}
    assert make_launcher("local") is None


def test_missing_extra_names_install_command(monkeypatch, tmp_path):
    real_import = importlib.import_module

    def without_ray(name, *args):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real_import(name, *args)

    monkeypatch.setattr("studies.launchers.importlib.import_module", without_ray)
    study_file = two_run_study(tmp_path)
    spec = load_spec(study_file)

    with pytest.raises(LauncherError, match=r"install it with: pip install 'medaug\[ray\]'"):
        RayLauncher().train(spec, expand_runs(spec, study_file), tmp_path, None, StudyListener())


def test_cli_rejects_options_of_another_launcher(tmp_path):
    study_file = two_run_study(tmp_path)

    result = medaug("study", "run", str(study_file), "--launcher", "ray", "--slurm-time", "30", "-o", str(tmp_path / "out"))

    assert result.returncode == 2
    assert "--slurm-time do not apply to --launcher ray" in error_line(result)
    assert not (tmp_path / "out").exists()
