"""Study file validation and run expansion."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from studies.errors import SpecError
from studies.spec import expand_runs, load_spec

BASE = {
    "name": "unit",
    "dataset": {"name": "Synthetic"},
    "strategies": ["none", "rigid"],
    "model": {"features": [4, 8]},
    "training": {"max_steps": 3, "batch_size": 2, "patch_size": [8, 8, 8]},
    "tracking": {"mode": "disabled"},
}


def write_study(tmp_path: Path, **changes) -> Path:
    study = {**BASE, **changes}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def test_valid_study_loads(tmp_path):
    spec = load_spec(write_study(tmp_path))
    assert spec.strategies == ["none", "rigid"]
    assert spec.baseline_strategy == "none"
    assert spec.split.scheme == "kfold"


def test_unknown_strategy_names_it_and_suggests(tmp_path):
    path = write_study(tmp_path, strategies=["none", "rigd"])
    with pytest.raises(SpecError) as raised:
        load_spec(path)
    message = str(raised.value)
    assert str(path) in message
    assert "strategies[1]" in message
    assert "'rigd'" in message
    assert "did you mean 'rigid'" in message


def test_misspelled_key_suggests_the_right_one(tmp_path):
    path = write_study(tmp_path, training={"max_step": 3, "patch_size": [8, 8, 8]})
    with pytest.raises(SpecError) as raised:
        load_spec(path)
    assert "unknown key 'training.max_step'" in str(raised.value)
    assert "did you mean 'max_steps'" in str(raised.value)


def test_misspelled_top_level_key(tmp_path):
    path = write_study(tmp_path, strategy=["none"])
    with pytest.raises(SpecError, match="unknown key 'strategy'.*did you mean 'strategies'"):
        load_spec(path)


def test_wrong_type_names_the_key(tmp_path):
    path = write_study(tmp_path, training={"max_steps": "many", "patch_size": [8, 8, 8]})
    with pytest.raises(SpecError, match="invalid value for 'training.max_steps'"):
        load_spec(path)


def test_missing_required_key(tmp_path):
    study = dict(BASE)
    del study["training"]
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    with pytest.raises(SpecError, match="missing required key 'training'"):
        load_spec(path)


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"baseline": "nonrigid"}, "baseline 'nonrigid' is not one of the strategies"),
        ({"folds": [7]}, "fold 7 does not exist"),
        ({"train_fractions": [0.0]}, "training fraction must be in \\(0, 1\\]"),
        ({"strategies": ["none", "none"]}, "strategies lists a value twice"),
        ({"name": "bad/name"}, "it becomes a folder name"),
        ({"model": {"name": "transformer"}}, "unknown model 'transformer'"),
        ({"model": {"name": "deeplabv3+", "features": [4, 8, 16]}}, "invalid model settings: deeplabv3\\+ supports only 2D"),
        ({"model": {"features": [4, 8], "options": {"depth": 3}}}, "invalid model settings: .*depth"),
        ({"training": {"max_steps": 1, "patch_size": [8, 12, 8]}, "model": {"features": [4, 8, 16, 32]}}, "must be multiples of 8"),
    ],
)
def test_invalid_values_are_rejected(tmp_path, changes, expected):
    with pytest.raises(SpecError, match=expected):
        load_spec(write_study(tmp_path, **changes))


def test_invalid_yaml_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="is not valid YAML"):
        load_spec(path)


def test_missing_study_file_lists_shipped_studies(tmp_path):
    with pytest.raises(SpecError, match="study file not found.*hippocampus-quick"):
        load_spec(tmp_path / "absent.yaml")


def test_strategy_file_relative_to_study(tmp_path):
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump({"transforms": [{"flip": {"p": 0.5}}]}))
    spec = load_spec(write_study(tmp_path, strategies=["none", "mine.yaml"]))
    runs = expand_runs(spec, tmp_path / "study.yaml")
    assert runs[1].run_id.startswith("mine-")
    assert runs[1].config["strategy_config"] == {"transforms": [{"flip": {"p": 0.5}}]}


def test_shipped_quick_study_is_valid():
    spec = load_spec("hippocampus-quick")
    assert spec.strategies == ["none", "rigid", "nonrigid"]
    assert spec.dataset.name == "Task04_Hippocampus"


def test_run_ids_are_stable_and_follow_the_config(tmp_path):
    spec = load_spec(write_study(tmp_path, train_fractions=[0.5, 1.0], seeds=[0, 1]))
    first = [run.run_id for run in expand_runs(spec)]
    second = [run.run_id for run in expand_runs(load_spec(tmp_path / "study.yaml"))]
    assert first == second
    assert len(set(first)) == 2 * 2 * 2
    assert first[0].startswith("none-frac0.5-fold0-seed0-")


def test_run_ids_change_with_training_but_not_tracking(tmp_path):
    base = [run.run_id for run in expand_runs(load_spec(write_study(tmp_path)))]
    longer = [run.run_id for run in expand_runs(load_spec(write_study(tmp_path, training={**BASE["training"], "max_steps": 4})))]
    offline = [run.run_id for run in expand_runs(load_spec(write_study(tmp_path, tracking={"mode": "offline"})))]
    assert base != longer
    assert base == offline
