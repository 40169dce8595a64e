"""Bad inputs not covered by the reader and spec tests: each raises one error naming the file, case or key and the fix.

tests/segment/test_msd_reader.py covers missing files, truncated and random-byte .nii.gz
files, shape and affine mismatches, fractional and undeclared labels, NaN voxels and
paths leaving the dataset. tests/studies/test_spec.py covers misspelled keys, wrong
types and unknown strategies.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from segment.data import DATA_ROOT_VARIABLE, MSDDataset, resolve_data_root
from segment.errors import DataError
from studies.errors import SpecError
from studies.runner import run_study
from studies.spec import estimate_step_memory, load_spec
from tests.conftest import make_msd_dataset, write_nifti

SHAPE = (12, 14, 10)


def one_case(tmp_path: Path) -> Path:
    return make_msd_dataset(tmp_path / "Synthetic", n_cases=1, shape=SHAPE)


def load_error(folder: Path, case_id: str = "case_000") -> str:
    with pytest.raises(DataError) as raised:
        MSDDataset(folder).load(case_id)
    return str(raised.value)


def write_manifest(folder: Path, manifest) -> Path:
    path = folder / "dataset.json"
    path.write_text(json.dumps(manifest))
    return path


# Image values


def test_rgb_image_rejected(tmp_path):
    folder = one_case(tmp_path)
    rgb = np.zeros(SHAPE, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    image = folder / "imagesTr" / "case_000.nii.gz"
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), str(image))

    message = load_error(folder)

    assert str(image) in message
    assert "not real numbers" in message
    assert "re-export it as a greyscale image" in message
    assert "remove case case_000" in message


def test_infinite_voxel_located(tmp_path):
    folder = one_case(tmp_path)
    values = np.ones(SHAPE, dtype=np.float32)
    values[2, 3, 4] = -np.inf
    values[5, 5, 5] = np.nan
    image = write_nifti(folder / "imagesTr" / "case_000.nii.gz", values)

    message = load_error(folder)

    assert str(image) in message
    assert "2 NaN or infinite voxels" in message
    assert "the first at voxel (2, 3, 4)" in message
    assert "replace them" in message


def test_constant_image_loads_with_warning(tmp_path, caplog):
    folder = one_case(tmp_path)
    image = write_nifti(folder / "imagesTr" / "case_000.nii.gz", np.full(SHAPE, 7, dtype=np.int16))

    with caplog.at_level(logging.WARNING, logger="segment.data.io"):
        case = MSDDataset(folder).load("case_000")

    assert np.all(case.image == 0.0)
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(image) in warnings[0]
    assert "is constant (every voxel is 7)" in warnings[0]


def test_empty_label_loads_with_warning(tmp_path, caplog):
    folder = one_case(tmp_path)
    label = write_nifti(folder / "labelsTr" / "case_000.nii.gz", np.zeros(SHAPE, dtype=np.uint8))

    with caplog.at_level(logging.WARNING, logger="segment.data.msd"):
        case = MSDDataset(folder).load("case_000")

    assert case.label.shape == (1, *SHAPE)
    assert not case.label.any()
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(label) in warnings[0]
    assert "case_000" in warnings[0]
    assert "no foreground voxels" in warnings[0]
    assert "the case is kept" in warnings[0]


def test_normal_case_logs_no_warning(tmp_path, caplog):
    folder = one_case(tmp_path)

    with caplog.at_level(logging.WARNING):
        MSDDataset(folder).load("case_000")

    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING] == []


# Dimensions


def test_2d_image_in_3d_dataset(tmp_path):
    folder = one_case(tmp_path)
    image = write_nifti(folder / "imagesTr" / "case_000.nii.gz", np.ones(SHAPE[:2], dtype=np.float32))

    message = load_error(folder)

    assert str(image) in message
    assert "has shape (12, 14) (2D)" in message
    assert "declares 3D images" in message
    assert "a 2D image cannot feed a 3D model" in message
    assert "(12, 14, 1)" in message


def write_study(tmp_path: Path, dataset: Path, **training) -> Path:
    study = {
        "name": "bad",
        "dataset": {"name": dataset.name, "path": str(dataset)},
        "split": {"folds": 2},
        "strategies": ["none"],
        "model": {"features": [4, 8]},
        "training": {"max_steps": 1, "batch_size": 1, "patch_size": [8, 8, 8], "threads": 1, **training},
        "tracking": {"mode": "disabled"},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def make_2d_msd_dataset(folder: Path) -> Path:
    """A Decathlon folder that declares 2D images, with 2D image and label files."""
    training = []
    for index in range(4):
        case = f"slice_{index:03d}"
        label = np.zeros((16, 16), dtype=np.uint8)
        label[4:9, 4:9] = 1
        write_nifti(folder / "imagesTr" / f"{case}.nii.gz", np.random.default_rng(index).normal(size=(16, 16)).astype(np.float32))
        write_nifti(folder / "labelsTr" / f"{case}.nii.gz", label)
        training.append({"image": f"./imagesTr/{case}.nii.gz", "label": f"./labelsTr/{case}.nii.gz"})
    write_manifest(folder, {"tensorImageSize": "2D", "labels": {"0": "background", "1": "head"}, "training": training})
    return folder


def test_2d_dataset_stops_3d_study_before_training(tmp_path):
    dataset = make_2d_msd_dataset(tmp_path / "Slices")
    study = write_study(tmp_path, dataset)

    with pytest.raises(SpecError) as raised:
        run_study(load_spec(study), study_path=study, output_dir=tmp_path / "out")

    message = str(raised.value)
    assert "case slice_000" in message
    assert str(dataset) in message
    assert "is 2D (shape (16, 16))" in message
    assert "trains a 3D model" in message
    assert "use a 3D dataset" in message
    assert [path.name for path in (tmp_path / "out" / "bad").iterdir()] == ["study.json"]


def test_2d_dataset_error_from_cli(tmp_path):
    dataset = make_2d_msd_dataset(tmp_path / "Slices")
    study = write_study(tmp_path, dataset)

    result = subprocess.run(
        [sys.executable, "-m", "studies.cli", "study", "run", str(study), "-o", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "400"},
    )

    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    assert "is 2D (shape (16, 16)) but the study trains a 3D model" in lines[0]
    assert "Traceback" not in result.stderr


def test_patch_larger_than_every_case(tmp_path):
    dataset = make_msd_dataset(tmp_path / "Synthetic", shape=SHAPE)
    study = write_study(tmp_path, dataset, patch_size=[16, 8, 16])

    with pytest.raises(SpecError) as raised:
        run_study(load_spec(study), study_path=study, output_dir=tmp_path / "out")

    message = str(raised.value)
    assert "training.patch_size [16, 8, 16] is larger than every case" in message
    assert str(dataset) in message
    assert "largest case extent [12, 14, 10] voxels" in message
    assert "use at most [12, 8, 10]" in message


# Study files


def study_error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "study.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as raised:
        load_spec(path)
    message = str(raised.value)
    assert str(path) in message
    return message


VALID_STUDY = """\
name: unit
dataset:
  name: Synthetic
strategies: [none]
model:
  features: [4, 8]
training:
  max_steps: 3
  patch_size: [8, 8, 8]
"""


def test_duplicate_top_level_key(tmp_path):
    message = study_error(tmp_path, VALID_STUDY + "strategies: [rigid]\n")

    assert "key 'strategies' appears twice, on lines 4 and 10" in message
    assert "delete one of them" in message


def test_duplicate_nested_key(tmp_path):
    message = study_error(tmp_path, VALID_STUDY + "  max_steps: 30\n")

    assert "key 'max_steps' appears twice, on lines 8 and 10" in message


def test_yaml_merge_key_is_not_a_duplicate(tmp_path):
    path = tmp_path / "study.yaml"
    # A merge key (<<) copies keys that the mapping may override: YAML allows that, so it is no duplicate.
    anchored = VALID_STUDY.replace("dataset:\n  name: Synthetic\n", "dataset: &data\n  name: Synthetic\n")
    path.write_text(anchored.replace("training:\n", "training:\n  <<: {max_steps: 99}\n"))

    spec = load_spec(path)

    assert spec.training.max_steps == 3


def test_unknown_architecture_suggests(tmp_path):
    message = study_error(tmp_path, VALID_STUDY.replace("model:\n", "model:\n  name: unte\n"))

    assert "invalid value for 'model.name'" in message
    assert "unknown model 'unte'" in message
    assert "did you mean 'unet'" in message


@pytest.mark.parametrize(
    "replace, expected",
    [
        (("strategies: [none]", "strategies: none"), "invalid value for 'strategies': Input should be a valid list"),
        (("  max_steps: 3", "  max_steps: [3]"), "invalid value for 'training.max_steps': Input should be a valid integer"),
        (("name: unit", "name: [unit]"), "invalid value for 'name': Input should be a valid string"),
    ],
)
def test_wrong_types_name_the_key(tmp_path, replace, expected):
    message = study_error(tmp_path, VALID_STUDY.replace(*replace))

    assert expected in message


def test_patch_too_large_for_memory(tmp_path):
    message = study_error(tmp_path, VALID_STUDY.replace("patch_size: [8, 8, 8]", "patch_size: [1024, 1024, 1024]"))

    assert "training.patch_size [1024, 1024, 1024] with batch_size 8" in message
    assert "needs an estimated" in message
    assert "reduce training.patch_size or training.batch_size" in message


def test_step_memory_estimate_value():
    # 60 bytes x 2 samples x 64**3 voxels x (16 + 32/8 + 64/64 + 128/512) channels per voxel.
    assert estimate_step_memory([64, 64, 64], 2, [16, 32, 64, 128]) == 60 * 2 * 64**3 * 21.25


# dataset.json structure


def test_manifest_that_is_a_list(tmp_path):
    folder = one_case(tmp_path)
    manifest = write_manifest(folder, [{"image": "a.nii.gz"}])

    with pytest.raises(DataError) as raised:
        MSDDataset(folder)

    assert str(manifest) in str(raised.value)
    assert "must contain a JSON object with 'labels' and 'training', got a list" in str(raised.value)


def test_training_entry_path_not_a_string(tmp_path):
    folder = one_case(tmp_path)
    manifest = write_manifest(folder, {"labels": {"0": "background"}, "training": [{"image": 5, "label": "./labelsTr/case_000.nii.gz"}]})

    with pytest.raises(DataError) as raised:
        MSDDataset(folder)

    assert str(manifest) in str(raised.value)
    assert "training[0].image must be a relative path string, got 5" in str(raised.value)


def test_training_not_a_list(tmp_path):
    folder = one_case(tmp_path)
    write_manifest(folder, {"labels": {"0": "background"}, "training": {"image": "./imagesTr/case_000.nii.gz"}})

    with pytest.raises(DataError, match="'training' must be a list of .* entries, got a dict"):
        MSDDataset(folder)


def test_linked_folder_leading_outside_rejected(tmp_path):
    folder = one_case(tmp_path)
    outside = tmp_path / "elsewhere"
    (folder / "imagesTr").rename(outside)
    (folder / "imagesTr").symlink_to(outside, target_is_directory=True)

    with pytest.raises(DataError) as raised:
        MSDDataset(folder)

    message = str(raised.value)
    assert f"{folder / 'imagesTr'} is a symbolic link to {outside}" in message
    assert "outside the dataset folder" in message


# Data root


def test_missing_data_root_names_fetch_command(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_ROOT_VARIABLE, raising=False)
    for argument in (None, tmp_path / "absent"):
        with pytest.raises(DataError) as raised:
            resolve_data_root(argument)
        assert "medaug data fetch NAME --cache DIR" in str(raised.value)


def test_missing_dataset_json_names_fetch_command(tmp_path):
    (tmp_path / "Task04_Hippocampus").mkdir()

    with pytest.raises(DataError) as raised:
        MSDDataset(tmp_path / "Task04_Hippocampus")

    assert "dataset.json not found" in str(raised.value)
    assert "medaug data fetch NAME --cache DIR" in str(raised.value)
