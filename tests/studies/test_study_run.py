"""End-to-end studies on real hippocampus cases: training, results, report, W&B files, resume."""

from __future__ import annotations

import json
import shutil
import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

from studies.runner import run_study
from studies.spec import load_spec
from tests.wandb_records import history_keys_and_values, read_records

N_CASES = 10


def copy_hippocampus_subset(source: Path, target: Path, n_cases: int = N_CASES) -> Path:
    """Copy the first ``n_cases`` real cases into a Decathlon folder of their own."""
    manifest = json.loads((source / "dataset.json").read_text())
    entries = manifest["training"][:n_cases]
    for entry in entries:
        for key in ("image", "label"):
            destination = target / entry[key]
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / entry[key], destination)
    manifest.update(training=entries, numTraining=len(entries))
    (target / "dataset.json").write_text(json.dumps(manifest))
    return target


def write_study(tmp_path: Path, dataset: Path, *, max_steps: int, tracking: str = "offline") -> Path:
    study = {
        "name": "tiny",
        "dataset": {"name": dataset.name, "path": str(dataset)},
        "split": {"scheme": "kfold", "folds": 2, "seed": 3},
        "strategies": ["none", "rigid"],
        "train_fractions": [1.0],
        "folds": [0],
        "seeds": [0],
        "model": {"name": "unet", "features": [4, 8, 16, 32]},
        # One thread: two torch processes with two threads each on two cores (a test
        # and anything else running) slow each other down many times over.
        "training": {"max_steps": max_steps, "batch_size": 2, "patch_size": [32, 48, 32], "val_every_steps": 2, "threads": 1},
        "tracking": {"mode": tracking, "project": "medaug-tests"},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


@pytest.fixture(scope="module")
def finished_study(hippocampus_folder, tmp_path_factory):
    """A two-strategy study of 4 steps per run on 10 real cases (5 train, 5 validation)."""
    tmp_path = tmp_path_factory.mktemp("study")
    dataset = copy_hippocampus_subset(hippocampus_folder, tmp_path / "Task04_subset")
    study_file = write_study(tmp_path, dataset, max_steps=4)
    results = run_study(load_spec(study_file), study_path=study_file, output_dir=tmp_path / "results")
    return study_file, tmp_path / "results" / "tiny", results


def test_every_run_finishes(finished_study):
    _, _, results = finished_study
    assert [r.status for r in results] == ["finished", "finished"]
    assert [r.run.strategy for r in results] == ["none", "rigid"]


def test_run_folder_contents(finished_study):
    _, study_dir, results = finished_study
    for result in results:
        run_dir = study_dir / result.run.run_id
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["steps"] == 4
        assert metrics["train_cases"] == 5
        assert metrics["val_cases"] == 5
        assert 0.0 <= metrics["dice_mean"] <= 1.0
        with open(run_dir / "per_case.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert len(rows) == 5
        assert set(rows[0]) == {"case_id", "dice_1", "dice_2", "dice_mean", "hd95_1", "hd95_2", "hd95_mean"}
        assert float(rows[0]["hd95_mean"]) >= 0.0
        config = json.loads((run_dir / "config.json").read_text())
        assert config["strategy"] == result.run.strategy
        assert set(config["train_cases"]).isdisjoint(config["val_cases"])


def test_checkpoint_loads_with_weights_only(finished_study):
    _, study_dir, results = finished_study
    checkpoint = torch.load(study_dir / results[0].run.run_id / "model.pt", weights_only=True)
    assert checkpoint["run_id"] == results[0].run.run_id
    assert checkpoint["hyper_parameters"]["num_classes"] == 3
    assert any(key.endswith("head.weight") for key in checkpoint["state_dict"])


def test_report_lists_both_strategies(finished_study):
    _, study_dir, _ = finished_study
    report = (study_dir / "report.md").read_text()
    rows = [line for line in report.splitlines() if line.startswith("| none |") or line.startswith("| rigid |")]
    assert len(rows) == 2
    assert "| 5 |" in rows[0]
    assert (study_dir / "dice.png").read_bytes().startswith(b"\x89PNG")
    with open(study_dir / "results.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 10


def test_wandb_offline_runs_hold_config_and_metrics(finished_study):
    _, study_dir, results = finished_study
    for result in results:
        run_files = list((study_dir / result.run.run_id / "wandb").glob("offline-run-*/run-*.wandb"))
        assert len(run_files) == 1, f"expected one offline W&B run for {result.run.run_id}, found {run_files}"
        records = read_records(run_files[0])
        runs = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        assert runs[0].run_group == "tiny"
        assert runs[0].display_name == result.run.run_id
        config = {item.key: item.value_json for item in runs[0].config.update}
        assert json.loads(config["strategy"]) == result.run.strategy
        history = history_keys_and_values(records)
        assert len(history["train/loss"]) >= 1
        # Validation every 2 of 4 steps: two values, the last equal to the run's result.
        dice = [float(v) for v in history["val/dice_mean"]]
        assert len(dice) == 2
        assert dice[-1] == pytest.approx(result.metrics["dice_mean"], abs=1e-6)


def test_rerun_skips_finished_runs(finished_study):
    study_file, study_dir, results = finished_study
    checkpoints = {r.run.run_id: (study_dir / r.run.run_id / "model.pt").stat().st_mtime_ns for r in results}
    again = run_study(load_spec(study_file), study_path=study_file, output_dir=study_dir.parent)
    assert [r.status for r in again] == ["skipped", "skipped"]
    for run_id, mtime in checkpoints.items():
        assert (study_dir / run_id / "model.pt").stat().st_mtime_ns == mtime


def test_predict_then_evaluate_reproduces_run_dice(finished_study, hippocampus_folder, tmp_path):
    from tests.studies.test_cli import medaug

    study_file, study_dir, results = finished_study
    run_dir = study_dir / results[0].run.run_id
    dataset = yaml.safe_load(study_file.read_text())["dataset"]["path"]
    predicted = medaug("segment", "predict", str(run_dir / "model.pt"), dataset, str(tmp_path / "pred"), "--cases", str(run_dir / "config.json"))
    assert predicted.returncode == 0, predicted.stderr
    evaluated = medaug("segment", "evaluate", str(tmp_path / "pred"), dataset, "-o", str(tmp_path / "per_case.csv"))
    assert evaluated.returncode == 0, evaluated.stderr

    with open(tmp_path / "per_case.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(row["case_id"] for row in rows) == json.loads((run_dir / "config.json").read_text())["val_cases"]
    mean = sum(float(row["dice_mean"]) for row in rows) / len(rows)
    assert mean == pytest.approx(results[0].metrics["dice_mean"], abs=1e-3)


def test_predict_with_sliding_window_and_flips(finished_study, tmp_path):
    from tests.studies.test_cli import error_line, medaug

    study_file, study_dir, results = finished_study
    run_dir = study_dir / results[0].run.run_id
    dataset = yaml.safe_load(study_file.read_text())["dataset"]["path"]
    common = ["segment", "predict", str(run_dir / "model.pt"), dataset, str(tmp_path / "pred"), "--cases", str(run_dir / "config.json")]

    result = medaug(*common, "--patch-size", "16,24,16", "--tta")
    assert result.returncode == 0, result.stderr
    for case_id in json.loads((run_dir / "config.json").read_text())["val_cases"]:
        predicted = nib.load(tmp_path / "pred" / f"{case_id}.nii.gz")
        reference = nib.load(Path(dataset) / "labelsTr" / f"{case_id}.nii.gz")
        assert predicted.shape == reference.shape
        assert np.allclose(predicted.affine, reference.affine)

    bad = medaug(*common, "--patch-size", "16,24")
    assert bad.returncode == 2
    assert "--patch-size needs 3 positive sizes" in error_line(bad)


def test_report_skips_stale_runs(finished_study, tmp_path):
    from studies.report import write_report

    _, study_dir, results = finished_study
    copy = tmp_path / "tiny"
    shutil.copytree(study_dir, copy)
    study = json.loads((copy / "study.json").read_text())
    study["run_ids"] = [results[0].run.run_id]
    (copy / "study.json").write_text(json.dumps(study))

    report = write_report(copy).read_text()

    assert "| none |" in report
    assert "| rigid |" not in report
    assert "1 finished runs in this folder belong to an earlier version" in report
