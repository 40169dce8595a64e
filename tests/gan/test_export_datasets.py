"""Sampling and translation into synthetic datasets with tiny random-weight generators."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from gan.checkpoint import save_generator, sha256_file
from gan.errors import GanError
from gan.export import case_seed, sample_dataset, translate_dataset
from gan.networks import build_generator
from segment.data import MSDDataset, load_nifti
from segment.errors import DataError
from tests.conftest import make_msd_dataset, write_nifti

AFFINE = np.array([
    [-0.8, 0.0, 0.0, 120.5],
    [0.0, 0.8, 0.0, -95.25],
    [0.0, 0.0, 2.5, -30.0],
    [0.0, 0.0, 0.0, 1.0],
])


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def conditional_checkpoint(path: Path, num_classes: int = 3, intensity=None) -> Path:
    torch.manual_seed(0)
    generator = build_generator("unet", num_classes, 1, features=4, depth=2)
    config = {
        "kind": "conditional",
        "direction": "label->image",
        "generator": generator.generator_config,
        "intensity": intensity or {"name": "ct", "low": -1000.0, "high": 2000.0},
        "num_classes": num_classes,
        "context": 0,
        "axis": 2,
        "noise_channels": 0,
        "seed": 0,
        "train_cases": ["case_000"],
    }
    save_generator(path, generator, config)
    return path


def cyclegan_checkpoint(path: Path) -> Path:
    torch.manual_seed(1)
    generator = build_generator("resnet", 1, 1, features=4, blocks=1)
    config = {
        "kind": "cyclegan",
        "direction": "A->B",
        "generator": generator.generator_config,
        "intensity": {"name": "ct", "low": -1000.0, "high": 2000.0},
        "input_intensity": {"name": "mr", "lower": 0.5, "upper": 99.5},
        "context": 0,
        "axis": 2,
        "seed": 0,
        "train_cases": ["case_000"],
        "train_cases_b": ["ct_000"],
    }
    save_generator(path, generator, config)
    return path


def source_dataset(folder: Path) -> Path:
    """Decathlon dataset whose files carry an affine with translation and a flipped axis."""
    make_msd_dataset(folder, n_cases=3, shape=(12, 14, 6))
    for subfolder in ("imagesTr", "labelsTr"):
        for path in (folder / subfolder).iterdir():
            image = nib.load(path)
            nib.save(nib.Nifti1Image(np.asarray(image.dataobj), AFFINE), str(path))
    return folder


def test_sample_writes_readable_dataset(tmp_path):
    checkpoint = conditional_checkpoint(tmp_path / "generator.pt")
    output = sample_dataset(checkpoint, source_dataset(tmp_path / "source"), tmp_path / "synthetic", per_case=2, seed=5)

    dataset = MSDDataset(output)
    assert [case.case_id for case in dataset.cases] == [f"case_00{i}_synth00{d}" for i in range(3) for d in range(2)]
    assert dataset.classes == {0: "background", 1: "first", 2: "second"}
    case = dataset.load("case_001_synth000", normalize=False)
    assert case.image.shape == (1, 12, 14, 6)
    assert np.allclose(case.affine, AFFINE, atol=1e-5)
    # Without augmentation the label map is the source's, unchanged.
    source_label, _ = load_nifti(tmp_path / "source" / "labelsTr" / "case_001.nii.gz")
    assert np.array_equal(case.label[0], source_label)
    # CT window [-1000, 2000]: every voxel lies inside it.
    assert case.image.min() >= -1000.0 and case.image.max() <= 2000.0


def test_sample_manifest_records_provenance(tmp_path):
    checkpoint = conditional_checkpoint(tmp_path / "generator.pt")
    output = sample_dataset(checkpoint, source_dataset(tmp_path / "source"), tmp_path / "synthetic", per_case=2, seed=5, cases=["case_002"])
    manifest = json.loads((output / "manifest.json").read_text())

    assert manifest["provenance"]["checkpoint_sha256"] == sha256_file(checkpoint)
    assert manifest["provenance"]["kind"] == "conditional"
    assert manifest["provenance"]["direction"] == "label->image"
    assert [case["source_case"] for case in manifest["cases"]] == ["case_002", "case_002"]
    assert [case["seed"] for case in manifest["cases"]] == [case_seed(5, "case_002", 0), case_seed(5, "case_002", 1)]


def test_sample_with_strategy_records_parameters(tmp_path):
    checkpoint = conditional_checkpoint(tmp_path / "generator.pt")
    output = sample_dataset(checkpoint, source_dataset(tmp_path / "source"), tmp_path / "synthetic", strategy="nonrigid", cases=["case_000"])
    manifest = json.loads((output / "manifest.json").read_text())

    record = manifest["cases"][0]
    assert record["settings"]["strategy"]["transforms"]
    assert record["parameters"]["augmentation"]
    label, _ = load_nifti(output / "labelsTr" / "case_000_synth000.nii.gz")
    assert set(np.unique(label).tolist()) <= {0, 1, 2}


def test_sample_is_reproducible(tmp_path):
    checkpoint = conditional_checkpoint(tmp_path / "generator.pt")
    source = source_dataset(tmp_path / "source")
    first = sample_dataset(checkpoint, source, tmp_path / "first", strategy="nonrigid", stochastic=True, seed=3)
    second = sample_dataset(checkpoint, source, tmp_path / "second", strategy="nonrigid", stochastic=True, seed=3)
    for path in sorted((first / "imagesTr").iterdir()):
        assert path.read_bytes() == (second / "imagesTr" / path.name).read_bytes()


def test_sample_rejects_cyclegan_checkpoint(tmp_path):
    checkpoint = cyclegan_checkpoint(tmp_path / "generator_AB.pt")
    with pytest.raises(GanError, match="gan translate"):
        sample_dataset(checkpoint, source_dataset(tmp_path / "source"), tmp_path / "synthetic")


def test_sample_rejects_unknown_case(tmp_path):
    checkpoint = conditional_checkpoint(tmp_path / "generator.pt")
    with pytest.raises(DataError, match="'case_999'"):
        sample_dataset(checkpoint, source_dataset(tmp_path / "source"), tmp_path / "synthetic", cases=["case_999"])


def test_translate_copies_labels_and_affine(tmp_path):
    checkpoint = cyclegan_checkpoint(tmp_path / "generator_AB.pt")
    source = source_dataset(tmp_path / "source")
    output = translate_dataset(checkpoint, source, tmp_path / "translated")

    dataset = MSDDataset(output)
    assert [case.case_id for case in dataset.cases] == ["case_000_synth", "case_001_synth", "case_002_synth"]
    for index in range(3):
        case = dataset.load(f"case_00{index}_synth", normalize=False)
        source_label, _ = load_nifti(source / "labelsTr" / f"case_00{index}.nii.gz")
        assert np.array_equal(case.label[0], source_label)
        assert np.allclose(case.affine, AFFINE, atol=1e-5)
        assert case.image.shape == (1, 12, 14, 6)
    metadata = json.loads((output / "dataset.json").read_text())
    assert metadata["channel_names"] == {"0": "CT"}


def test_translate_glob_source_names_classes(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("pat1", "pat2"):
        write_nifti(tmp_path / "domain" / name / "flair.nii.gz", rng.normal(size=(10, 9, 4)).astype(np.float32), AFFINE)
        labels = np.zeros((10, 9, 4), dtype=np.float32)
        labels[2:5, 2:5, 1:3] = 4
        write_nifti(tmp_path / "domain" / name / "seg.nii.gz", labels, AFFINE)

    checkpoint = cyclegan_checkpoint(tmp_path / "generator_AB.pt")
    output = translate_dataset(checkpoint, str(tmp_path / "domain" / "*" / "flair.nii.gz"), tmp_path / "translated", labels="seg.nii.gz")

    metadata = json.loads((output / "dataset.json").read_text())
    assert metadata["labels"] == {"background": 0, "class_1": 1, "class_2": 2, "class_3": 3, "class_4": 4}
    assert [entry["image"] for entry in metadata["training"]] == ["./imagesTr/pat1_synth.nii.gz", "./imagesTr/pat2_synth.nii.gz"]
    assert nib.load(output / "labelsTr" / "pat1_synth.nii.gz").get_data_dtype() == np.uint8


def test_translate_without_labels_is_rejected(tmp_path):
    write_nifti(tmp_path / "domain" / "a.nii.gz", np.zeros((8, 8, 3), dtype=np.float32))
    checkpoint = cyclegan_checkpoint(tmp_path / "generator_AB.pt")
    with pytest.raises(DataError, match="no label map"):
        translate_dataset(checkpoint, tmp_path / "domain", tmp_path / "translated")


def test_translate_uses_sform_when_qform_disagrees(tmp_path):
    source = source_dataset(tmp_path / "source")
    path = source / "imagesTr" / "case_000.nii.gz"
    image = nib.load(path)
    disagreeing = nib.Nifti1Image(np.asarray(image.dataobj), AFFINE)
    disagreeing.set_qform(np.diag([2.0, 2.0, 2.0, 1.0]), code=1)
    disagreeing.set_sform(AFFINE, code=1)
    nib.save(disagreeing, str(path))

    checkpoint = cyclegan_checkpoint(tmp_path / "generator_AB.pt")
    output = translate_dataset(checkpoint, source, tmp_path / "translated", cases=["case_000"])

    written = nib.load(output / "imagesTr" / "case_000_synth_0000.nii.gz")
    assert np.allclose(written.get_sform(), AFFINE, atol=1e-5)
    assert np.allclose(written.get_qform(), AFFINE, atol=1e-5)
