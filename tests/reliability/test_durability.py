"""A study killed with SIGKILL at three different moments and restarted ends with the results of an uninterrupted one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.conftest import make_msd_dataset

RUNS = 3


def write_study(tmp_path: Path, dataset: Path) -> Path:
    study = {
        "name": "durable",
        "dataset": {"name": dataset.name, "path": str(dataset)},
        "split": {"folds": 2, "seed": 1},
        "strategies": ["rigid"],
        "seeds": [0, 1, 2],
        "model": {"features": [4, 8]},
        "training": {"max_steps": 24, "batch_size": 2, "patch_size": [8, 8, 8], "val_every_steps": 12, "threads": 1},
        "tracking": {"mode": "disabled"},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def command(study: Path, output: Path) -> list[str]:
    return [sys.executable, "-m", "studies.cli", "study", "run", str(study), "-o", str(output)]


def start(study: Path, output: Path) -> subprocess.Popen:
    # A session of its own, so that the kill reaches any child process too.
    return subprocess.Popen(command(study, output), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)


def kill_when(process: subprocess.Popen, condition: Callable[[], bool], timeout: float = 120) -> None:
    """SIGKILL ``process`` as soon as ``condition`` holds; fail if the process exits first."""
    deadline = time.monotonic() + timeout
    try:
        while not condition():
            if process.poll() is not None:
                raise AssertionError(f"study exited with code {process.returncode} before the kill:\n{process.stderr.read()}")
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting for the moment to kill the study")
            time.sleep(0.02)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL


def finished_runs(study_dir: Path) -> int:
    return len(list(study_dir.glob("*/metrics.json")))


def run_in_progress(study_dir: Path) -> bool:
    return any(not (config.parent / "metrics.json").exists() for config in study_dir.glob("*/config.json"))


def outputs(study_dir: Path) -> dict[str, str]:
    """Per-case tables of every run and the study's results table, by path relative to ``study_dir``."""
    files = sorted(study_dir.glob("*/per_case.csv")) + [study_dir / "results.csv"]
    return {str(path.relative_to(study_dir)): path.read_text() for path in files}


@pytest.mark.slow
def test_killed_study_matches_uninterrupted(tmp_path):
    dataset = make_msd_dataset(tmp_path / "Synthetic", n_cases=4)
    study = write_study(tmp_path, dataset)
    reference = subprocess.run(command(study, tmp_path / "reference"), capture_output=True, text=True, timeout=300)
    assert reference.returncode == 0, reference.stderr
    expected = outputs(tmp_path / "reference" / "durable")
    assert len(expected) == RUNS + 1

    output = tmp_path / "killed"
    study_dir = output / "durable"
    # 1: as soon as the first run has written its configuration.
    kill_when(start(study, output), lambda: any(study_dir.glob("*/config.json")))
    assert finished_runs(study_dir) == 0
    # 2: in the middle of a later run, after at least one run has finished.
    kill_when(start(study, output), lambda: finished_runs(study_dir) >= 1 and run_in_progress(study_dir))
    assert 1 <= finished_runs(study_dir) < RUNS
    # 3: while the report is written, after the last run has finished.
    kill_when(start(study, output), lambda: finished_runs(study_dir) == RUNS)

    final = subprocess.run(command(study, output), capture_output=True, text=True, timeout=300)

    assert final.returncode == 0, final.stderr
    assert f"{RUNS} of {RUNS} runs already finished" in final.stderr
    assert outputs(study_dir) == expected
    assert (study_dir / "report.md").is_file()
