"""W&B tracking without network: offline runs finish promptly and connect to nothing outside the machine."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import make_msd_dataset
from tests.wandb_records import history_keys_and_values, read_records


def three_step_study(tmp_path: Path, tracking: str, strategies: tuple[str, ...] = ("none",)) -> Path:
    dataset = make_msd_dataset(tmp_path / "Synthetic")
    study = {
        "name": "offline",
        "dataset": {"name": "Synthetic", "path": str(dataset)},
        "split": {"folds": 2},
        "strategies": list(strategies),
        "model": {"features": [4, 8]},
        "training": {"max_steps": 3, "batch_size": 1, "patch_size": [8, 8, 8], "val_every_steps": 1},
        "tracking": {"mode": tracking},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def medaug_command(study: Path, output: Path) -> list[str]:
    return [sys.executable, "-m", "studies.cli", "study", "run", str(study), "-o", str(output)]


def can_isolate_network() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not can_isolate_network(), reason="needs `unshare -n` (root) to run without a network")
def test_offline_study_without_network_exits_promptly(tmp_path):
    study = three_step_study(tmp_path, "offline")
    output = tmp_path / "out"
    # A fresh network namespace has only a loopback interface: nothing outside is reachable.
    script = "ip link set lo up && exec " + " ".join(medaug_command(study, output))
    started = time.monotonic()
    result = subprocess.run(["unshare", "-n", "sh", "-c", script], capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - started

    assert result.returncode == 0, result.stderr
    assert elapsed < 60
    run_files = list(output.glob("offline/*/wandb/offline-run-*/run-*.wandb"))
    assert len(run_files) == 1
    history = history_keys_and_values(read_records(run_files[0]))
    assert len(history["val/dice_mean"]) == 3
    summary_files = list(output.glob("offline/wandb/offline-run-*/run-*.wandb"))
    assert len(summary_files) == 1, "the study summary run is missing"


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace to record connect() calls")
def test_offline_study_connects_only_locally(tmp_path):
    study = three_step_study(tmp_path, "offline")
    trace = tmp_path / "connect.trace"
    command = ["strace", "-f", "-qq", "-e", "trace=connect", "-o", str(trace), *medaug_command(study, tmp_path / "out")]
    # A guard against hangs, not a speed check: under strace on a busy 2-core machine this
    # three-step study took more than 180 s.
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr

    calls = [line for line in trace.read_text().splitlines() if "connect(" in line]
    remote = [
        line for line in calls
        if ("AF_INET" in line and not re.search(r'inet_addr\("127\.|inet_pton\(AF_INET6, "::1"|inet_pton\(AF_INET6, "::ffff:127\.', line))
    ]
    assert remote == [], "connections to other hosts:\n" + "\n".join(remote)


def test_disabled_tracking_writes_no_wandb_files(tmp_path):
    study = three_step_study(tmp_path, "disabled")
    result = subprocess.run(medaug_command(study, tmp_path / "out"), capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    assert list((tmp_path / "out").rglob("*.metrics.json")) == []
    assert list((tmp_path / "out").rglob("wandb")) == []
    assert len(list((tmp_path / "out").glob("offline/*/metrics.json"))) == 1


def test_training_run_config_is_fully_resolved(tmp_path, monkeypatch):
    from studies.runner import run_study
    from studies.spec import expand_runs, load_spec

    # Offline tracking sets these for the whole process; monkeypatch restores them afterwards.
    for name in ("WANDB_MODE", "WANDB_ERROR_REPORTING", "WANDB_SILENT", "WANDB_CONSOLE"):
        monkeypatch.delenv(name, raising=False)
    # A made-up key in the format of a W&B API key; no file of the study may contain it.
    fake_key = "fedcba9876543210fedcba9876543210fedcba98"
    monkeypatch.setenv("WANDB_API_KEY", fake_key)
    study = three_step_study(tmp_path, "offline", strategies=("none", "nonrigid"))
    spec = load_spec(study)
    results = run_study(spec, study_path=study, output_dir=tmp_path / "out")
    assert [r.status for r in results] == ["finished", "finished"]

    for run in expand_runs(spec, study):
        (run_file,) = (tmp_path / "out" / "offline" / run.run_id / "wandb").glob("offline-run-*/run-*.wandb")
        records = read_records(run_file)
        (record,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        assert record.run_group == "offline"
        assert record.job_type == "train"
        assert record.display_name == run.run_id
        config = {item.key: json.loads(item.value_json) for item in record.config.update}
        assert config["strategy"] == run.strategy
        assert config["strategy_config"] == run.config["strategy_config"]
        assert (config["train_fraction"], config["fold"], config["seed"]) == (1.0, 0, 0)
        assert config["model"]["features"] == [4, 8]
        assert config["training"]["max_steps"] == 3
        assert config["split"]["folds"] == 2

        history = history_keys_and_values(records)
        assert json.loads(history["val/per_case/_type"][-1]) == "table-file"
        summary = {}
        for item in (i for r in records if r.WhichOneof("record_type") == "summary" for i in r.summary.update):
            summary[item.key] = json.loads(item.value_json)
        metrics = json.loads((tmp_path / "out" / "offline" / run.run_id / "metrics.json").read_text())
        assert summary["dice_mean"] == pytest.approx(metrics["dice_mean"])
        assert summary["hd95_mean"] == pytest.approx(metrics["hd95_mean"])
    assert config["strategy_config"]["transforms"], "nonrigid must log its resolved transforms"

    (summary_file,) = (tmp_path / "out" / "offline" / "wandb").glob("offline-run-*/run-*.wandb")
    (summary_run,) = [r.run for r in read_records(summary_file) if r.WhichOneof("record_type") == "run"]
    assert (summary_run.run_group, summary_run.job_type) == ("offline", "summary")
    leaked = [path for path in (tmp_path / "out").rglob("*") if path.is_file() and fake_key.encode() in path.read_bytes()]
    assert leaked == []
