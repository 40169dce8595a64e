"""The committed offline W&B run files of the medium hippocampus study, read back and checked against its results.

Layout under ``docs/results/hippocampus-medium``: ``results.csv`` and
``study.json`` as ``medaug study run`` wrote them, ``wandb/<run id>/run-*.wandb``
for each training run and ``wandb/summary/run-*.wandb`` for the study summary run.
"""

from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from tests.wandb_records import read_records

STUDY_NAME = "hippocampus-medium"
RESULTS_DIR = Path(__file__).resolve().parents[2] / "docs" / "results" / STUDY_NAME
WANDB_DIR = RESULTS_DIR / "wandb"

pytestmark = pytest.mark.skipif(not WANDB_DIR.is_dir(), reason=f"{WANDB_DIR} is absent: the medium study's W&B run files are not committed")


def read_wandb_run(path: Path) -> dict:
    """The run record, config (decoded) and final summary values (decoded) of one offline run file."""
    records = read_records(path)
    runs = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert len(runs) == 1, f"{path}: expected one run record, found {len(runs)}"
    config = {item.key: json.loads(item.value_json) for item in runs[0].config.update}
    for record in records:
        if record.WhichOneof("record_type") == "config":
            config.update({item.key: json.loads(item.value_json) for item in record.config.update})
    summary = {}
    for record in records:
        if record.WhichOneof("record_type") == "summary":
            summary.update({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.summary.update})
    return {"path": path, "run": runs[0], "config": config, "summary": summary}


@pytest.fixture(scope="module")
def wandb_runs() -> list[dict]:
    files = sorted(WANDB_DIR.rglob("run-*.wandb"))
    assert files, f"no run-*.wandb files under {WANDB_DIR}"
    return [read_wandb_run(path) for path in files]


@pytest.fixture(scope="module")
def results() -> dict[str, list[dict[str, str]]]:
    """Per-case rows of results.csv by run id."""
    with open(RESULTS_DIR / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    by_run = defaultdict(list)
    for row in rows:
        by_run[row["run_id"]].append(row)
    return dict(by_run)


@pytest.fixture(scope="module")
def run_ids(results) -> set[str]:
    """Run ids of the study: from study.json when it is committed, else from results.csv."""
    study_file = RESULTS_DIR / "study.json"
    if study_file.is_file():
        return set(json.loads(study_file.read_text())["run_ids"])
    return set(results)


def training_runs(wandb_runs: list[dict]) -> list[dict]:
    return [run for run in wandb_runs if run["run"].job_type == "train"]


def test_every_run_has_exactly_one_wandb_run(wandb_runs, run_ids):
    counts = Counter(run["run"].display_name for run in training_runs(wandb_runs))
    assert set(counts) == run_ids
    assert [name for name, count in counts.items() if count != 1] == []


def test_every_run_finished_with_results(results, run_ids):
    assert set(results) == run_ids


def test_all_runs_are_grouped_by_study(wandb_runs):
    groups = Counter(run["run"].run_group for run in wandb_runs)
    assert groups == {STUDY_NAME: len(wandb_runs)}
    assert {run["run"].project for run in wandb_runs} == {"medaug"}


def test_training_runs_carry_their_config(wandb_runs, results):
    for run in training_runs(wandb_runs):
        name = run["run"].display_name
        config = run["config"]
        first = results[name][0]
        assert config["run_id"] == name
        assert config["study"] == STUDY_NAME
        assert config["strategy"] == first["strategy"], name
        assert config["train_fraction"] == pytest.approx(float(first["train_fraction"])), name
        assert config["fold"] == int(first["fold"]), name
        assert config["seed"] == int(first["seed"]), name
        assert "transforms" in config["strategy_config"], name
        assert config["training"]["max_steps"] > 0, name
        assert config["model"]["features"], name


def test_training_runs_carry_final_dice(wandb_runs, results):
    for run in training_runs(wandb_runs):
        name = run["run"].display_name
        per_case = [float(row["dice_mean"]) for row in results[name]]
        assert run["summary"]["dice_mean"] == pytest.approx(sum(per_case) / len(per_case), abs=1e-9), name
        assert 0.0 <= run["summary"]["dice_mean"] <= 1.0


def test_summary_run_holds_every_strategy_and_fraction(wandb_runs, results):
    summaries = [run for run in wandb_runs if run["run"].job_type == "summary"]
    assert len(summaries) == 1, [str(run["path"]) for run in summaries]
    summary = summaries[0]["summary"]
    expected = {(row["strategy"], float(row["train_fraction"])) for rows in results.values() for row in rows}
    for strategy, fraction in expected:
        key = f"dice_mean/{strategy}/frac{fraction:g}"
        assert 0.0 <= summary[key] <= 1.0, key
    baseline = json.loads((RESULTS_DIR / "study.json").read_text()).get("baseline") if (RESULTS_DIR / "study.json").is_file() else "none"
    for strategy, fraction in expected:
        if strategy != baseline:
            assert f"p_holm/{strategy}/frac{fraction:g}" in summary, (strategy, fraction)
