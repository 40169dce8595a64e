"""The medaug command as a user runs it: one-line errors, and resuming after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import make_msd_dataset, write_nifti
from tests.studies.test_study_run import copy_hippocampus_subset, write_study


def medaug(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "studies.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "80", **(env or {})},
    )


def error_line(result: subprocess.CompletedProcess) -> str:
    """The single line that starts with 'error:'; fails when there is none or several."""
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, f"expected one error line, got stderr:\n{result.stderr}"
    return lines[0]


def synthetic_study(tmp_path: Path, dataset: Path, **changes) -> Path:
    study = {
        "name": "cli",
        "dataset": {"name": dataset.name},
        "split": {"folds": 2},
        "strategies": ["none"],
        "model": {"features": [4, 8]},
        "training": {"max_steps": 1, "batch_size": 1, "patch_size": [8, 8, 8]},
        "tracking": {"mode": "disabled"},
        **changes,
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def test_missing_data_root(tmp_path):
    study = synthetic_study(tmp_path, tmp_path / "Synthetic")
    result = medaug("study", "run", str(study), "--data-root", str(tmp_path / "nowhere"), "-o", str(tmp_path / "out"))
    assert result.returncode == 2
    line = error_line(result)
    assert "data root not found" in line
    assert str(tmp_path / "nowhere") in line
    assert "MEDAUG_DATA" in line


def test_no_data_root_at_all(tmp_path):
    study = synthetic_study(tmp_path, tmp_path / "Synthetic")
    env = {k: v for k, v in os.environ.items() if k != "MEDAUG_DATA"}
    result = subprocess.run([sys.executable, "-m", "studies.cli", "study", "run", str(study)], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2
    assert "pass --data-root DIR or set MEDAUG_DATA" in error_line(result)


def test_unknown_strategy_in_study(tmp_path):
    study = synthetic_study(tmp_path, tmp_path / "Synthetic", strategies=["none", "elastik"])
    result = medaug("study", "run", str(study), "--data-root", str(tmp_path))
    assert result.returncode == 2
    line = error_line(result)
    assert str(study) in line
    assert "unknown strategy 'elastik'" in line


def test_dataset_entry_with_missing_file(tmp_path):
    dataset = make_msd_dataset(tmp_path / "Synthetic")
    missing = dataset / "imagesTr" / "case_002.nii.gz"
    missing.unlink()
    result = medaug("study", "run", str(synthetic_study(tmp_path, dataset)), "--data-root", str(tmp_path), "-o", str(tmp_path / "out"))
    assert result.returncode == 2
    assert f"file not found: {missing}" in error_line(result)


def test_image_and_label_shapes_differ(tmp_path):
    dataset = make_msd_dataset(tmp_path / "Synthetic")
    label = dataset / "labelsTr" / "case_001.nii.gz"
    write_nifti(label, np.zeros((12, 14, 9), dtype=np.uint8))
    result = medaug("study", "run", str(synthetic_study(tmp_path, dataset)), "--data-root", str(tmp_path), "-o", str(tmp_path / "out"))
    assert result.returncode == 2
    line = error_line(result)
    assert str(label) in line
    assert "(12, 14, 10)" in line
    assert "(12, 14, 9)" in line


def test_label_with_fractional_values(tmp_path):
    dataset = make_msd_dataset(tmp_path / "Synthetic")
    label = dataset / "labelsTr" / "case_000.nii.gz"
    values = np.zeros((12, 14, 10), dtype=np.float32)
    values[4, 4, 4] = 0.5
    write_nifti(label, values)
    result = medaug("study", "run", str(synthetic_study(tmp_path, dataset)), "--data-root", str(tmp_path), "-o", str(tmp_path / "out"))
    assert result.returncode == 2
    line = error_line(result)
    assert str(label) in line
    assert "non-integer values" in line


def test_nothing_is_written_before_validation_fails(tmp_path):
    study = synthetic_study(tmp_path, tmp_path / "Synthetic", strategies=["rigd"])
    medaug("study", "run", str(study), "--data-root", str(tmp_path), "-o", str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_study_on_synthetic_data_succeeds(tmp_path):
    dataset = make_msd_dataset(tmp_path / "Synthetic")
    result = medaug("study", "run", str(synthetic_study(tmp_path, dataset)), "--data-root", str(tmp_path), "-o", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "cli" / "report.md").is_file()


def _wait_for(condition, timeout: float, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"study exited early with code {process.returncode}: {process.stderr.read()}")
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the study")
        time.sleep(0.1)


@pytest.mark.slow
def test_killed_study_resumes_without_retraining(hippocampus_folder, tmp_path):
    dataset = copy_hippocampus_subset(hippocampus_folder, tmp_path / "Task04_subset")
    study_file = write_study(tmp_path, dataset, max_steps=60)
    output = tmp_path / "results"
    study_dir = output / "tiny"
    command = [sys.executable, "-m", "studies.cli", "study", "run", str(study_file), "-o", str(output)]

    # A new session, so the kill also reaches wandb's service process.
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        first_done = lambda: len(list(study_dir.glob("none-*/metrics.json"))) == 1  # noqa: E731
        second_started = lambda: len(list(study_dir.glob("rigid-*/config.json"))) == 1  # noqa: E731
        _wait_for(lambda: first_done() and second_started(), 240, process)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert not list(study_dir.glob("rigid-*/metrics.json")), "the second run finished before the kill; raise max_steps"

    first_metrics = next(study_dir.glob("none-*/metrics.json"))
    before = (first_metrics.stat().st_mtime_ns, first_metrics.read_text())
    first_checkpoint_mtime = (first_metrics.parent / "model.pt").stat().st_mtime_ns

    resumed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "1 of 2 runs already finished" in resumed.stderr
    assert (first_metrics.stat().st_mtime_ns, first_metrics.read_text()) == before
    assert (first_metrics.parent / "model.pt").stat().st_mtime_ns == first_checkpoint_mtime
    second = json.loads(next(study_dir.glob("rigid-*/metrics.json")).read_text())
    assert second["steps"] == 60
    assert "| rigid |" in (study_dir / "report.md").read_text()


def test_error_line_keeps_square_brackets(tmp_path):
    study = synthetic_study(tmp_path, tmp_path / "Synthetic")
    missing = tmp_path / "[data]" / "root"
    result = medaug("study", "run", str(study), "--data-root", str(missing))
    assert str(missing) in error_line(result)


def test_report_of_corrupt_study_json(tmp_path):
    study_dir = tmp_path / "study"
    study_dir.mkdir()
    (study_dir / "study.json").write_text("{not json")
    result = medaug("study", "report", str(study_dir))
    assert result.returncode == 2
    assert f"{study_dir / 'study.json'} is corrupt" in error_line(result)


def test_output_that_is_a_file(tmp_path):
    study = synthetic_study(tmp_path, tmp_path / "Synthetic")
    target = tmp_path / "results.txt"
    target.write_text("")
    result = medaug("study", "run", str(study), "--data-root", str(tmp_path), "-o", str(target))
    assert result.returncode == 2
    assert f"--output {target} is a file" in error_line(result)


def test_interrupted_study_says_how_to_resume(tmp_path):
    dataset = make_msd_dataset(tmp_path / "Synthetic")
    study = synthetic_study(tmp_path, dataset, training={"max_steps": 100000, "batch_size": 1, "patch_size": [8, 8, 8], "threads": 1})
    output = tmp_path / "out"
    command = [sys.executable, "-m", "studies.cli", "study", "run", str(study), "--data-root", str(tmp_path), "-o", str(output)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"})
    try:
        _wait_for(lambda: len(list(output.glob("cli/*/config.json"))) == 1, 120, process)
        time.sleep(3)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode != 0
    assert "interrupted at step" in stderr
    assert "rerun the study to resume" in stderr
