"""`medaug study plan`: runs, their status and a time estimate, without training."""

from __future__ import annotations

import json

from studies.plan import OVERHEAD_PER_RUN_S, plan_study
from studies.spec import load_spec
from tests.studies.test_cli import medaug
from tests.studies.test_spec import write_study


def test_plan_lists_runs_with_status(tmp_path):
    study_file = write_study(tmp_path, train_fractions=[0.5, 1.0])
    spec = load_spec(study_file)
    first = plan_study(spec, study_path=study_file, output_dir=tmp_path / "results")
    finished_dir = tmp_path / "results" / "unit" / first[0].run.run_id
    finished_dir.mkdir(parents=True)
    (finished_dir / "metrics.json").write_text(json.dumps({}))

    planned = plan_study(spec, study_path=study_file, output_dir=tmp_path / "results")

    assert len(planned) == 4
    assert [p.finished for p in planned] == [True, False, False, False]
    assert all(p.estimated_s > OVERHEAD_PER_RUN_S for p in planned)


def test_plan_command_prints_every_run(tmp_path):
    study_file = write_study(tmp_path)
    result = medaug("study", "plan", str(study_file), "-o", str(tmp_path / "results"), env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if "│ pending" in line]
    assert len(rows) == 2
    assert "estimated time for the pending runs" in result.stdout
    assert not (tmp_path / "results").exists()
