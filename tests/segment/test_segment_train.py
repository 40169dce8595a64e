"""One training run without a study: train_segmenter, 2D slice training on 3D cases, run configurations and `medaug segment train`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from segment.checkpoint import load_checkpoint
from segment.data import Case, MSDDataset, kfold_split, training_subset
from segment.errors import DataError
from segment.metrics import dice_per_class, hd95_per_class
from segment.slices import predict_slices
from segment.train_config import ConfigError, TrainingOptions, find_config_file, load_train_config, select_cases
from segment.training import train_segmenter
from segment.cli import app
from tests.conftest import make_msd_dataset

SPACING = (1.0, 2.0, 3.0)


def _box_case(case_id: str, seed: int, shape=(12, 14, 10)) -> Case:
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, dtype=np.int64)
    label[3:8, 4:9, 2:7] = 1
    label[8:10, 4:9, 2:7] = 2
    image = (rng.normal(0, 0.3, size=shape) + label).astype(np.float32)
    return Case(case_id, image[None], label[None], np.diag([*SPACING, 1.0]), np.array(SPACING))


def _train_slices(output_dir: Path, **changes):
    torch.set_num_threads(1)
    options = {"max_steps": 2, "batch_size": 4, "patch_size": [8, 8], "slice_axis": 2, "slice_context": 1, "threads": 1, **changes}
    train = [_box_case(f"train_{i}", seed=i) for i in range(3)]
    val = [_box_case(f"val_{i}", seed=10 + i) for i in range(2)]
    metrics, per_case = train_segmenter(
        train,
        val,
        num_classes=3,
        class_names=["inner", "outer"],
        model={"name": "unet", "features": [4, 8]},
        augmentation="rigid",
        options=TrainingOptions(**options),
        seed=0,
        output_dir=output_dir,
        run_id="slices-test",
        config={"note": "unit test"},
        summary={"strategy": "rigid"},
    )
    return metrics, per_case, val


def test_slice_training_writes_run_folder(tmp_path):
    metrics, per_case, _ = _train_slices(tmp_path / "run")

    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.json", "metrics.json", "model.pt", "per_case.csv"]
    assert metrics["steps"] == 2
    assert metrics["train_cases"] == 3
    assert metrics["val_cases"] == 2
    assert list(metrics)[:2] == ["run_id", "strategy"]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == metrics
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config == {"run_id": "slices-test", "note": "unit test", "train_cases": ["train_0", "train_1", "train_2"], "val_cases": ["val_0", "val_1"]}
    with open(tmp_path / "run" / "per_case.csv", newline="") as handle:
        assert [row["case_id"] for row in csv.DictReader(handle)] == ["val_0", "val_1"]


def test_slice_checkpoint_records_slicing(tmp_path):
    _train_slices(tmp_path / "run")

    net, hparams = load_checkpoint(tmp_path / "run" / "model.pt")

    assert hparams["slice_axis"] == 2
    assert hparams["slice_context"] == 1
    assert hparams["in_channels"] == 3
    assert hparams["model"]["spatial_dims"] == 2
    assert net.spatial_dims == 2


def test_slice_validation_scores_whole_3d_cases(tmp_path):
    _, per_case, val = _train_slices(tmp_path / "run")
    net, _ = load_checkpoint(tmp_path / "run" / "model.pt")

    for row, case in zip(per_case, val):
        labels = predict_slices(net, torch.from_numpy(case.image)[None], net.divisor, axis=2, context=1)[0]
        assert labels.shape == (12, 14, 10)
        reference = torch.from_numpy(case.label[0])
        dice = dice_per_class(labels, reference, [1, 2])
        hd95 = hd95_per_class(labels, reference, [1, 2], list(SPACING))
        for cls in (1, 2):
            assert row[f"dice_{cls}"] == pytest.approx(dice[cls], abs=1e-9), case.case_id
            assert row[f"hd95_{cls}"] == pytest.approx(hd95[cls], abs=1e-9), case.case_id


def test_finished_run_folder_is_not_overwritten(tmp_path):
    _train_slices(tmp_path / "run")
    with pytest.raises(DataError, match="already contains a finished run"):
        _train_slices(tmp_path / "run")


def write_config(folder: Path, name: str = "run.yaml", **changes) -> Path:
    config = {
        "dataset": {"name": "Synthetic", "path": "Synthetic"},
        "split": {"scheme": "kfold", "folds": 2, "seed": 3, "fold": 1},
        "strategy": "none",
        "model": {"features": [4, 8]},
        "training": {"max_steps": 2, "batch_size": 2, "patch_size": [8, 8, 8], "threads": 1},
        **changes,
    }
    path = folder / name
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"trainig": {}}, "unknown key 'trainig' \\(did you mean 'training'\\?\\)"),
        ({"split": {"fodl": 0}}, "unknown key 'split.fodl' \\(did you mean 'fold'\\?\\)"),
        ({"split": {"folds": 2, "fold": 2}}, "split.fold 2 does not exist with split.folds = 2"),
        ({"cases": {"train": ["a"], "val": ["a"]}, "split": None}, "are in both cases.train and cases.val"),
        ({"cases": {"train": ["a"], "val": ["b"]}}, "either split .* or cases"),
        ({"training": {"max_steps": 1, "patch_size": [8, 8]}}, "training.patch_size \\[8, 8\\] must have 3 sizes"),
        ({"training": {"max_steps": 1, "patch_size": [8, 8, 8], "slice_axis": 2}}, "must have 2 sizes for 2D slices"),
        ({"training": {"max_steps": 1, "patch_size": [8, 8], "slice_context": 1}}, "slice_context needs training.slice_axis"),
        ({"training": {"max_steps": 1, "patch_size": [8, 8], "slice_axis": 3}}, "invalid value for 'training.slice_axis'"),
        ({"training": {"max_steps": 1, "patch_size": [5, 8, 8]}}, "must be multiples of 2"),
        ({"strategy": "rigd"}, "strategy: .*rigd"),
        (
            {"dataset": {"name": "HC", "format": "png", "images": "*.png", "spacing_csv": "s.csv"}, "training": {"max_steps": 1, "patch_size": [8, 8], "slice_axis": 0}},
            "slice_axis needs a 3D dataset",
        ),
    ],
)
def test_invalid_config_names_the_key(tmp_path, changes, message):
    path = write_config(tmp_path, **changes)
    raw = yaml.safe_load(path.read_text())
    raw = {key: value for key, value in raw.items() if value is not None}
    path.write_text(yaml.safe_dump(raw))

    with pytest.raises(ConfigError, match=message) as caught:
        load_train_config(path)
    assert str(path) in str(caught.value)


def test_shipped_configs_are_valid():
    for name in ("hippocampus-unet", "hippocampus-slices"):
        config = load_train_config(find_config_file(name))
        assert config.dataset.name == "Task04_Hippocampus", name
    assert load_train_config(find_config_file("hippocampus-slices")).training.slice_axis == 2


def test_split_cases_match_nested_fraction(tmp_path):
    make_msd_dataset(tmp_path / "Synthetic", n_cases=6)
    config = load_train_config(write_config(tmp_path, train_fraction=0.5))
    dataset = MSDDataset(tmp_path / "Synthetic")

    train, val = select_cases(config, dataset)

    fold = kfold_split([c.case_id for c in dataset.cases], folds=2, seed=3)[1]
    assert val == fold["val"]
    assert train == training_subset(fold["train"], 0.5, seed=3 + 1)
    assert len(train) == 2


def test_unknown_listed_case_is_reported(tmp_path):
    make_msd_dataset(tmp_path / "Synthetic", n_cases=3)
    path = write_config(tmp_path, cases={"train": ["case_000", "case_009"], "val": ["case_001"]})
    raw = yaml.safe_load(path.read_text())
    del raw["split"]
    path.write_text(yaml.safe_dump(raw))

    with pytest.raises(DataError, match="cases.train: case 'case_009' is not in the dataset"):
        select_cases(load_train_config(path), MSDDataset(tmp_path / "Synthetic"))


def test_segment_train_command_trains_then_skips(tmp_path):
    make_msd_dataset(tmp_path / "Synthetic", n_cases=4)
    config = write_config(tmp_path, training={"max_steps": 2, "batch_size": 2, "patch_size": [8, 8], "threads": 1, "slice_axis": 1, "slice_context": 1})
    output = tmp_path / "out"

    first = CliRunner().invoke(app, ["train", str(config), "-o", str(output)])
    assert first.exit_code == 0, first.output
    run_dirs = list(output.iterdir())
    assert len(run_dirs) == 1
    assert run_dirs[0].name.startswith("run-")
    assert f"run folder: {run_dirs[0]}" in first.output
    assert "mean foreground Dice" in first.output
    metrics = json.loads((run_dirs[0] / "metrics.json").read_text())
    assert metrics["val_cases"] == 2
    assert metrics["fold"] == 1
    assert json.loads((run_dirs[0] / "config.json").read_text())["training"]["slice_axis"] == 1

    second = CliRunner().invoke(app, ["train", str(config), "-o", str(output)])
    assert second.exit_code == 0, second.output
    assert "already finished" in second.output
    assert json.loads((run_dirs[0] / "metrics.json").read_text()) == metrics


def test_segment_train_removes_unfinished_run(tmp_path):
    make_msd_dataset(tmp_path / "Synthetic", n_cases=4)
    config = write_config(tmp_path)
    output = tmp_path / "out"
    assert CliRunner().invoke(app, ["train", str(config), "-o", str(output)]).exit_code == 0
    run_dir = next(output.iterdir())
    (run_dir / "metrics.json").unlink()
    (run_dir / "stale.txt").write_text("left by an interrupted run")

    again = CliRunner().invoke(app, ["train", str(config), "-o", str(output)])

    assert again.exit_code == 0, again.output
    assert (run_dir / "metrics.json").is_file()
    assert not (run_dir / "stale.txt").exists()


def test_segment_train_error_is_one_line(tmp_path):
    from tests.studies.test_cli import error_line, medaug

    config = write_config(tmp_path, trainig={})
    result = medaug("segment", "train", str(config), "-o", str(tmp_path / "out"))

    assert result.returncode == 2
    assert "unknown key 'trainig' (did you mean 'training'?)" in error_line(result)


def test_slice_run_dice_reproduced_by_predict_and_evaluate(hippocampus_folder, tmp_path):
    from tests.studies.test_study_run import copy_hippocampus_subset

    dataset = copy_hippocampus_subset(hippocampus_folder, tmp_path / "Task04_subset", n_cases=8)
    config = write_config(
        tmp_path,
        dataset={"name": "Task04_subset", "path": str(dataset)},
        split={"folds": 2, "seed": 0, "fold": 0},
        strategy="rigid",
        training={"max_steps": 20, "batch_size": 8, "patch_size": [32, 48], "threads": 1, "slice_axis": 2, "slice_context": 1},
    )
    output = tmp_path / "out"
    assert CliRunner().invoke(app, ["train", str(config), "-o", str(output)]).exit_code == 0
    run_dir = next(output.iterdir())
    metrics = json.loads((run_dir / "metrics.json").read_text())

    predicted = CliRunner().invoke(app, ["predict", str(run_dir / "model.pt"), str(dataset), str(tmp_path / "pred"), "--cases", str(run_dir / "config.json")])
    assert predicted.exit_code == 0, predicted.output
    evaluated = CliRunner().invoke(app, ["evaluate", str(tmp_path / "pred"), str(dataset), "-o", str(tmp_path / "per_case.csv")])
    assert evaluated.exit_code == 0, evaluated.output

    with open(tmp_path / "per_case.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == metrics["val_cases"] == 4
    assert metrics["dice_mean"] > 0.0
    assert np.mean([float(row["dice_mean"]) for row in rows]) == pytest.approx(metrics["dice_mean"], abs=1e-3)
    assert np.mean([float(row["hd95_mean"]) for row in rows]) == pytest.approx(metrics["hd95_mean"], abs=1e-3)
