"""The study summary as an offline W&B run, read back from its run file, and `medaug study report --wandb`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from studies.report import log_report_summary, write_report
from tests.studies.test_cli import error_line, medaug
from tests.studies.test_report import DIFFERENCES, STRATEGIES, fabricate_study
from tests.wandb_records import history_keys_and_values, read_records

# A made-up key in the format of a W&B API key (40 hex digits); it must appear in no written file.
FAKE_API_KEY = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def wandb_environment(monkeypatch):
    """Restore the process-wide wandb variables that offline runs set, and offer a fake API key."""
    for name in ("WANDB_MODE", "WANDB_ERROR_REPORTING", "WANDB_SILENT", "WANDB_CONSOLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_API_KEY", FAKE_API_KEY)


def summary_run_files(study_dir: Path) -> list[Path]:
    return sorted(study_dir.glob("wandb/offline-run-*/run-*.wandb"))


def final_summary(records) -> dict[str, str]:
    """The run's summary values (JSON-encoded) as the last summary record stores them."""
    values: dict[str, str] = {}
    for record in records:
        if record.WhichOneof("record_type") == "summary":
            for item in record.summary.update:
                values[item.key or "/".join(item.nested_key)] = item.value_json
    return values


@pytest.fixture(scope="module")
def summary_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("summary")
    saved = {name: os.environ.get(name) for name in ("WANDB_MODE", "WANDB_ERROR_REPORTING", "WANDB_SILENT", "WANDB_CONSOLE", "WANDB_API_KEY")}
    os.environ["WANDB_API_KEY"] = FAKE_API_KEY
    try:
        study_dir = fabricate_study(tmp_path, tracking="offline")
        write_report(study_dir)
        folder = log_report_summary(study_dir)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return study_dir, folder


def test_summary_run_is_grouped_by_study(summary_run):
    study_dir, folder = summary_run
    run_files = summary_run_files(study_dir)
    assert len(run_files) == 1
    assert Path(folder) == run_files[0].parent
    runs = [r.run for r in read_records(run_files[0]) if r.WhichOneof("record_type") == "run"]
    assert runs[0].run_group == "fabricated"
    assert runs[0].job_type == "summary"
    assert runs[0].project == "medaug-tests"
    config = {item.key: json.loads(item.value_json) for item in runs[0].config.update}
    assert config["strategies"] == STRATEGIES
    assert config["runs"] == 12


def test_summary_run_holds_the_report_figures(summary_run):
    study_dir, _ = summary_run
    summary = final_summary(read_records(summary_run_files(study_dir)[0]))
    assert float(summary["dice_mean/none/frac1"]) == pytest.approx(0.85)
    assert float(summary["dice_mean/rigid/frac1"]) == pytest.approx(0.885)
    assert float(summary["hd95_mean/nonrigid/frac0.5"]) == pytest.approx(4.0)
    assert float(summary["p_holm/rigid/frac0.5"]) == pytest.approx(0.3125)
    assert float(summary["dice_delta_mean/nonrigid/frac1"]) == pytest.approx(-0.035)
    for strategy, fraction in DIFFERENCES:
        assert f"p_wilcoxon/{strategy}/frac{fraction:g}" in summary


def logged_media(history: dict[str, list[str]], key: str) -> dict[str, object]:
    """The fields of a logged W&B media object (``_type``, ``path``, ...), which the run file stores as nested keys."""
    prefix = f"{key}/"
    return {name.removeprefix(prefix): json.loads(values[-1]) for name, values in history.items() if name.startswith(prefix)}


def test_summary_run_logs_tables_and_plots(summary_run):
    study_dir, folder = summary_run
    history = history_keys_and_values(read_records(summary_run_files(study_dir)[0]))
    expected_rows = {"summary/strategies": 6, "summary/paired": 4, "summary/per_case": 36}
    for key, rows in expected_rows.items():
        media = logged_media(history, key)
        assert media["_type"] == "table-file", key
        assert media["nrows"] == rows, key
        table = json.loads((Path(folder) / "files" / media["path"]).read_text())
        assert len(table["data"]) == rows, key
    strategies = json.loads((Path(folder) / "files" / logged_media(history, "summary/strategies")["path"]).read_text())
    assert [row[strategies["columns"].index("strategy")] for row in strategies["data"]] == STRATEGIES * 2
    for plot in ("plots/dice", "plots/hd95", "plots/paired", "plots/learning_curve", "plots/augment-rigid"):
        assert logged_media(history, plot)["_type"] == "image-file", plot
    assert logged_media(history, "report")["_type"] == "html-file"


def test_summary_run_never_stores_the_api_key(summary_run):
    study_dir, _ = summary_run
    leaked = [path for path in study_dir.rglob("*") if path.is_file() and FAKE_API_KEY.encode() in path.read_bytes()]
    assert leaked == []


def test_disabled_mode_writes_no_summary_run(tmp_path, wandb_environment):
    study_dir = fabricate_study(tmp_path, tracking="offline")
    write_report(study_dir)
    assert log_report_summary(study_dir, mode="disabled") is None
    assert not (study_dir / "wandb").exists()


def test_report_command_logs_offline_summary(tmp_path):
    study_dir = fabricate_study(tmp_path, tracking="disabled")
    result = medaug("study", "report", str(study_dir), "--wandb", "offline", timeout=180)
    assert result.returncode == 0, result.stderr
    assert (study_dir / "report.html").is_file()
    assert len(summary_run_files(study_dir)) == 1


def test_report_command_defaults_to_study_tracking(tmp_path):
    study_dir = fabricate_study(tmp_path, tracking="disabled")
    result = medaug("study", "report", str(study_dir), timeout=180)
    assert result.returncode == 0, result.stderr
    assert (study_dir / "report.md").is_file()
    assert not (study_dir / "wandb").exists()


def test_report_command_rejects_unknown_mode(tmp_path):
    study_dir = fabricate_study(tmp_path)
    result = medaug("study", "report", str(study_dir), "--wandb", "cloud")
    assert result.returncode == 2
    assert "--wandb must be offline, online or disabled, got 'cloud'" in error_line(result)
