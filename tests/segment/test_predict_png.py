"""`medaug segment predict` on folders of PNG images: 8-bit label PNGs of the source size, resampling as in training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from segment.cli import app
from segment.data.png import PNGDataset, resample_to_spacing, resize_labels, save_label_png
from segment.errors import DataError
from segment.inference import predict_labels
from segment.models import build_model
from tests.conftest import write_nifti
from tests.segment.test_png_dataset import make_png_dataset

CASES = {"000_HC": 0.25, "001_HC": 0.3}


def write_checkpoint(run_dir: Path, *, spatial_dims: int = 2, num_classes: int = 3, target_spacing: float | None = None) -> Path:
    """A run folder with an untrained model.pt and, for PNG runs, the dataset part of config.json."""
    torch.manual_seed(0)
    model = {"name": "unet", "features": [4, 8], "spatial_dims": spatial_dims}
    net = build_model("unet", 1, num_classes, features=[4, 8], spatial_dims=spatial_dims)
    checkpoint = {"state_dict": net.state_dict(), "hyper_parameters": {"in_channels": 1, "num_classes": num_classes, "model": model}, "run_id": "png-test"}
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, run_dir / "model.pt")
    if target_spacing is not None:
        dataset = {"name": "HC", "format": "png", "target_spacing": target_spacing}
        (run_dir / "config.json").write_text(json.dumps({"dataset": dataset, "val_cases": ["001_HC"]}))
    return run_dir / "model.pt"


def expected_labels(root: Path, case_id: str, checkpoint: Path, target_spacing: float | None) -> np.ndarray:
    """The prediction computed the way training saw the image, resized back to the source size."""
    case = PNGDataset(root, images="images/*HC.png", mask_suffix="_Annotation", spacing_csv="spacing.csv", target_spacing=target_spacing).load(case_id)
    hparams = torch.load(checkpoint, weights_only=True)
    net = build_model("unet", 1, hparams["hyper_parameters"]["num_classes"], features=[4, 8], spatial_dims=2)
    net.load_state_dict(hparams["state_dict"])
    labels = predict_labels(net.eval(), torch.from_numpy(case.image)[None], net.divisor)[0].numpy()
    return resize_labels(labels, (40, 60))


def read_label_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "L", path
        return np.asarray(image)


def test_png_round_trip_with_resampling(tmp_path):
    root = make_png_dataset(tmp_path / "HC", CASES)
    checkpoint = write_checkpoint(tmp_path / "run", target_spacing=0.5)

    result = CliRunner().invoke(app, ["predict", str(checkpoint), str(root / "images"), str(tmp_path / "pred"), "--spacing-csv", str(root / "spacing.csv")])

    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == ["000_HC.png", "001_HC.png"]
    for case_id in CASES:
        written = read_label_png(tmp_path / "pred" / f"{case_id}.png")
        assert written.dtype == np.uint8
        assert written.shape == (40, 60)
        expected = expected_labels(root, case_id, checkpoint, target_spacing=0.5)
        assert len(np.unique(expected)) > 1, "the untrained model should predict more than one class here"
        assert np.array_equal(written, expected), case_id


def test_png_round_trip_at_native_size(tmp_path):
    root = make_png_dataset(tmp_path / "HC", CASES)
    checkpoint = write_checkpoint(tmp_path / "run")

    result = CliRunner().invoke(app, ["predict", str(checkpoint), str(root / "images"), str(tmp_path / "pred"), "--format", "png"])

    assert result.exit_code == 0, result.output
    written = read_label_png(tmp_path / "pred" / "000_HC.png")
    assert np.array_equal(written, expected_labels(root, "000_HC", checkpoint, target_spacing=None))


def test_png_cases_from_run_config(tmp_path):
    root = make_png_dataset(tmp_path / "HC", CASES)
    checkpoint = write_checkpoint(tmp_path / "run", target_spacing=0.5)
    arguments = ["predict", str(checkpoint), str(root / "images"), str(tmp_path / "pred")]

    result = CliRunner().invoke(app, [*arguments, "--spacing-csv", str(root / "spacing.csv"), "--cases", str(tmp_path / "run" / "config.json")])

    assert result.exit_code == 0, result.output
    assert [p.name for p in (tmp_path / "pred").iterdir()] == ["001_HC.png"]


def test_png_input_needs_spacing_csv(tmp_path):
    root = make_png_dataset(tmp_path / "HC", CASES)
    checkpoint = write_checkpoint(tmp_path / "run", target_spacing=0.5)

    result = CliRunner().invoke(app, ["predict", str(checkpoint), str(root / "images"), str(tmp_path / "pred")])

    assert isinstance(result.exception, DataError)
    assert "trained on 0.5 mm pixels, so PNG inputs need --spacing-csv" in str(result.exception)


def test_png_input_rejects_nifti_format(tmp_path):
    root = make_png_dataset(tmp_path / "HC", CASES)
    checkpoint = write_checkpoint(tmp_path / "run")

    result = CliRunner().invoke(app, ["predict", str(checkpoint), str(root / "images"), str(tmp_path / "pred"), "--format", "nifti"])

    assert isinstance(result.exception, DataError)
    assert "use --format png" in str(result.exception)


def test_png_format_needs_2d_predictions(tmp_path):
    write_nifti(tmp_path / "images" / "vol.nii.gz", np.random.default_rng(0).normal(size=(8, 8, 8)).astype(np.float32))
    checkpoint = write_checkpoint(tmp_path / "run", spatial_dims=3)

    result = CliRunner().invoke(app, ["predict", str(checkpoint), str(tmp_path / "images"), str(tmp_path / "pred"), "--format", "png"])

    assert isinstance(result.exception, DataError)
    assert "case vol is 3D; use --format nifti" in str(result.exception)


def test_2d_nifti_to_png(tmp_path):
    image = np.random.default_rng(0).normal(size=(12, 20)).astype(np.float32)
    write_nifti(tmp_path / "images" / "flat.nii.gz", image)
    checkpoint = write_checkpoint(tmp_path / "run")

    result = CliRunner().invoke(app, ["predict", str(checkpoint), str(tmp_path / "images"), str(tmp_path / "pred"), "--format", "png"])

    assert result.exit_code == 0, result.output
    assert read_label_png(tmp_path / "pred" / "flat.png").shape == (12, 20)


def test_label_png_values_survive(tmp_path):
    labels = np.arange(256, dtype=np.int64).reshape(16, 16)
    save_label_png(tmp_path / "labels.png", labels)
    assert np.array_equal(read_label_png(tmp_path / "labels.png"), labels)


def test_label_png_rejects_bad_maps(tmp_path):
    with pytest.raises(DataError, match="do not fit 8-bit PNG values"):
        save_label_png(tmp_path / "big.png", np.full((4, 4), 300))
    with pytest.raises(DataError, match="must be 2D"):
        save_label_png(tmp_path / "cube.png", np.zeros((2, 4, 4), dtype=np.int64))
    assert not list(tmp_path.iterdir())


def test_resize_labels_inverts_resampling():
    label = np.zeros((40, 60), dtype=np.int64)
    label[10:30, 20:40] = 1
    image = label.astype(np.float32)

    _, small, pixel_size = resample_to_spacing(image, label, 0.25, 0.5)

    assert small.shape == (20, 30)
    assert pixel_size.tolist() == [0.5, 0.5]
    assert np.array_equal(resize_labels(small, (40, 60)), label)


def test_train_then_predict_png_run(tmp_path):
    spacings = {f"{index:03d}_HC": 0.25 for index in range(4)}
    root = make_png_dataset(tmp_path / "HC", spacings)
    config = {
        "dataset": {"name": "HC", "path": str(root), "format": "png", "images": "images/*HC.png", "spacing_csv": "spacing.csv", "target_spacing": 0.5},
        "split": {"folds": 2, "seed": 0, "fold": 0},
        "model": {"features": [4, 8]},
        "training": {"max_steps": 2, "batch_size": 2, "patch_size": [16, 16], "threads": 1},
    }
    (tmp_path / "hc.yaml").write_text(yaml.safe_dump(config))
    trained = CliRunner().invoke(app, ["train", str(tmp_path / "hc.yaml"), "-o", str(tmp_path / "out")])
    assert trained.exit_code == 0, trained.output
    run_dir = next((tmp_path / "out").iterdir())
    val_cases = json.loads((run_dir / "config.json").read_text())["val_cases"]

    arguments = ["predict", str(run_dir / "model.pt"), str(root / "images"), str(tmp_path / "pred")]
    result = CliRunner().invoke(app, [*arguments, "--cases", str(run_dir / "config.json"), "--spacing-csv", str(root / "spacing.csv")])

    assert result.exit_code == 0, result.output
    assert sorted(p.stem for p in (tmp_path / "pred").iterdir()) == sorted(val_cases)
    for case_id in val_cases:
        written = read_label_png(tmp_path / "pred" / f"{case_id}.png")
        assert written.shape == (40, 60)
        assert np.array_equal(written, expected_labels(root, case_id, run_dir / "model.pt", target_spacing=0.5))


@pytest.mark.parametrize("inside", ["images", "."])
def test_output_folder_of_the_input_images_is_refused(tmp_path, inside):
    # Predicting into the input folder replaced the images with label maps (found by a new-user test).
    write_nifti(tmp_path / "data" / "images" / "vol.nii.gz", np.ones((8, 8, 8), dtype=np.float32))
    source = tmp_path / "data" / "images"
    before = (source / "vol.nii.gz").read_bytes()
    checkpoint = write_checkpoint(tmp_path / "run", spatial_dims=3)

    output = source if inside == "images" else source / "."
    result = CliRunner().invoke(app, ["predict", str(checkpoint), str(source), str(output)])

    assert isinstance(result.exception, DataError)
    assert "is the folder of the input images" in str(result.exception)
    assert (source / "vol.nii.gz").read_bytes() == before


def test_3d_model_on_png_images_is_named(tmp_path):
    root = make_png_dataset(tmp_path / "HC", CASES)
    checkpoint = write_checkpoint(tmp_path / "run", spatial_dims=3)

    result = CliRunner().invoke(app, ["predict", str(checkpoint), str(root / "images"), str(tmp_path / "pred"), "--spacing-csv", str(root / "spacing.csv")])

    assert isinstance(result.exception, DataError)
    assert "is a 3D model" in str(result.exception)
    assert "2D PNG images" in str(result.exception)
