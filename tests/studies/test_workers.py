"""Parallel runs: `--workers 2` gives the same per-case results as one process at equal threads."""

from __future__ import annotations

import json

import yaml

from studies.runner import run_study
from studies.spec import expand_runs, load_spec
from tests.conftest import make_msd_dataset
from tests.studies.test_cli import medaug


def test_two_workers_match_serial(tmp_path):
    dataset = make_msd_dataset(tmp_path / "Synthetic", n_cases=4)
    # Three runs on two workers, so one worker trains two runs in a row; mri-artifacts
    # adds TorchIO's per-sample transforms, which draw from their own seeds.
    study = {
        "name": "parallel",
        "dataset": {"name": "Synthetic", "path": str(dataset)},
        "split": {"folds": 2},
        "strategies": ["none", "nonrigid", "mri-artifacts"],
        "model": {"features": [4, 8]},
        "training": {"max_steps": 3, "batch_size": 2, "patch_size": [8, 8, 8], "threads": 1},
        "tracking": {"mode": "disabled"},
    }
    study_file = tmp_path / "study.yaml"
    study_file.write_text(yaml.safe_dump(study))
    spec = load_spec(study_file)

    serial = run_study(spec, study_path=study_file, output_dir=tmp_path / "serial", workers=1)
    parallel = medaug("study", "run", str(study_file), "-o", str(tmp_path / "parallel"), "--workers", "2", timeout=600)

    assert parallel.returncode == 0, parallel.stderr
    assert [r.status for r in serial] == ["finished"] * 3
    for run in expand_runs(spec, study_file):
        first = tmp_path / "serial" / "parallel" / run.run_id
        second = tmp_path / "parallel" / "parallel" / run.run_id
        assert (first / "per_case.csv").read_text() == (second / "per_case.csv").read_text(), run.run_id
        metrics = json.loads((second / "metrics.json").read_text())
        assert "1 torch threads" in metrics["machine"], metrics["machine"]
    assert (tmp_path / "serial" / "parallel" / "results.csv").read_text() == (tmp_path / "parallel" / "parallel" / "results.csv").read_text()
