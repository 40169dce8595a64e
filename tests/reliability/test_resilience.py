"""A run whose data loading raises, runs out of memory or loses its DataLoader worker fails alone: the study goes on."""

from __future__ import annotations

import functools
import logging
import os
import signal
from pathlib import Path

import pytest
import torch
import yaml

import segment.training
from studies.runner import run_study
from studies.spec import load_spec
from tests.conftest import make_msd_dataset

# What the worker transform of each run seed does.
FAILURES = {
    0: "raise",
    1: "out of memory",
    2: "kill worker",
    3: None,
}


def failing_worker_transform(strategy):
    """Replaces ``build_worker_transform``: the transform fails as ``FAILURES`` lists for the run seed."""

    def transform(image, *, spacing, seed, index):
        failure = FAILURES[seed]
        if failure == "raise":
            raise RuntimeError("simulated failure in a worker transform")
        if failure == "out of memory":
            raise torch.OutOfMemoryError("simulated out of memory while loading a patch")
        if failure == "kill worker":
            # The DataLoader worker process dies as if the OS had killed it (for example for memory).
            os.kill(os.getpid(), signal.SIGKILL)
        return image

    return transform


@pytest.fixture
def study_file(tmp_path: Path) -> Path:
    dataset = make_msd_dataset(tmp_path / "Synthetic")
    study = {
        "name": "resilient",
        "dataset": {"name": "Synthetic", "path": str(dataset)},
        "split": {"folds": 2},
        "strategies": ["none"],
        "seeds": sorted(FAILURES),
        "model": {"features": [4, 8]},
        "training": {"max_steps": 2, "batch_size": 1, "patch_size": [8, 8, 8], "threads": 1},
        "tracking": {"mode": "disabled"},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def test_failed_runs_reported_and_study_continues(study_file, tmp_path, monkeypatch, caplog):
    torch.set_num_threads(1)
    monkeypatch.setattr(segment.training, "build_worker_transform", failing_worker_transform)
    # One DataLoader worker process per run, so that transforms run outside the main process.
    monkeypatch.setattr(segment.training, "SegmentationDataModule", functools.partial(segment.training.SegmentationDataModule, num_workers=1))

    with caplog.at_level(logging.ERROR, logger="studies.runner"):
        results = run_study(load_spec(study_file), study_path=study_file, output_dir=tmp_path / "out")

    study_dir = tmp_path / "out" / "resilient"
    statuses = {result.run.seed: result.status for result in results}
    assert statuses == {0: "failed", 1: "failed", 2: "failed", 3: "finished"}
    expected_errors = {
        0: "RuntimeError: simulated failure in a worker transform",
        1: "(torch.OutOfMemoryError: simulated out of memory while loading a patch); reduce training.batch_size or training.patch_size",
        2: "RuntimeError: DataLoader worker (pid(s)",
    }
    logged = [record.getMessage() for record in caplog.records]
    for result in results:
        run_dir = study_dir / result.run.run_id
        if result.status == "finished":
            assert (run_dir / "metrics.json").is_file()
            continue
        expected = expected_errors[result.run.seed]
        assert expected in result.error
        assert not (run_dir / "metrics.json").exists(), "a failed run must be retried by the next study run"
        error_text = (run_dir / "error.txt").read_text()
        assert error_text.startswith(f"run {result.run.run_id} failed: ")
        assert expected in error_text.splitlines()[0]
        assert "Traceback" in error_text
        messages = [message for message in logged if result.run.run_id in message]
        assert len(messages) == 1, logged
        assert expected in messages[0]
        assert str(run_dir / "error.txt") in messages[0]
    assert (study_dir / "report.md").is_file()
