"""Parallel runs: --workers 2 gives the same per-case results as one process at equal threads."""

from __future__ import annotations

import yaml

from studies.runner import run_study
from studies.spec import load_spec
from tests.conftest import make_msd_dataset


def test_two_workers_match_serial(tmp_path):
    dataset = make_msd_dataset(tmp_path / "Synthetic", n_cases=4)
    study = {
        "name": "parallel",
        "dataset": {"name": "Synthetic", "path": str(dataset)},
        "split": {"folds": 2},
        "strategies": ["none", "nonrigid"],
        "model": {"features": [4, 8]},
        "training": {"max_steps": 3, "batch_size": 2, "patch_size": [8, 8, 8], "threads": 1},
        "tracking": {"mode": "disabled"},
    }
    study_file = tmp_path / "study.yaml"
    study_file.write_text(yaml.safe_dump(study))
    spec = load_spec(study_file)

    serial = run_study(spec, study_path=study_file, output_dir=tmp_path / "serial", workers=1)
    parallel = run_study(spec, study_path=study_file, output_dir=tmp_path / "parallel", workers=2)

    assert [r.status for r in parallel] == ["finished", "finished"]
    for one, two in zip(serial, parallel):
        assert one.run.run_id == two.run.run_id
        first = (tmp_path / "serial" / "parallel" / one.run.run_id / "per_case.csv").read_text()
        second = (tmp_path / "parallel" / "parallel" / two.run.run_id / "per_case.csv").read_text()
        assert first == second
