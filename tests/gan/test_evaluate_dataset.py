"""Evaluating a synthetic dataset folder: pairing by source case, masks, segmenter Dice, written files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from gan.errors import GanError
from gan.evaluate import evaluate_synthetic, image_metrics
from gan.export import DatasetInfo, PlannedCase, SyntheticCase, export_dataset
from segment.errors import DataError
from segment.models import UNet
from tests.conftest import write_nifti

SHAPE = (16, 16, 4)
CT = {"name": "ct", "low": -1000.0, "high": 2000.0}


def real_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.uniform(-1000, 1800, size=SHAPE)  # leaves room for +100 HU inside the window.astype(np.float32)
    label = np.zeros(SHAPE, dtype=np.uint8)
    label[4:10, 4:12, :] = 1
    label[10:13, 4:12, :] = 2
    return image, label


def build_pair(tmp_path: Path, *, strategy: bool = False, intensity=CT) -> tuple[Path, Path]:
    """Real cases in a folder, and a synthetic export whose images are the real ones plus 100 HU in the foreground."""
    for index in range(2):
        image, label = real_case(index)
        write_nifti(tmp_path / "real" / f"ct_{index}.nii.gz", image, np.eye(4))
        mask = np.zeros(SHAPE, dtype=np.uint8)
        mask[2:14, 2:14, :] = 1
        write_nifti(tmp_path / "real" / f"ct_{index}_mask.nii.gz", mask, np.eye(4))

    def generate(case: PlannedCase) -> SyntheticCase:
        image, label = real_case(int(case.source_case[-1]))
        parameters = {"augmentation": [{"flip": [[True, False, False]]}]} if strategy else {}
        return SyntheticCase(image + 100.0 * (label > 0), label, np.eye(4), parameters=parameters)

    planned = [PlannedCase(f"ct_{i}_synth", f"ct_{i}", i) for i in range(2)]
    info = DatasetInfo("Synth", "CT", {0: "background", 1: "liver", 2: "spleen"})
    synthetic = export_dataset(tmp_path / "synthetic", planned, generate, info=info, provenance={"checkpoint_sha256": "0" * 64, "intensity": intensity})
    return synthetic, tmp_path / "real"


def constant_segmenter(path: Path, winner: int) -> Path:
    """A U-Net checkpoint whose weights are zero, so its logits are the last layer's bias and ``winner`` is predicted everywhere."""
    net = UNet(1, 3, features=(4, 8))
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.zero_()
        last = [module for module in net.modules() if isinstance(module, nn.Conv3d) and module.out_channels == 3][-1]
        last.bias[winner] = 1.0
    hparams = {"in_channels": 1, "num_classes": 3, "model": {"name": "unet", "features": [4, 8]}}
    torch.save({"state_dict": net.state_dict(), "hyper_parameters": hparams}, path)
    return path


def test_metrics_match_direct_computation(tmp_path):
    synthetic, real = build_pair(tmp_path)
    result = evaluate_synthetic(synthetic, str(real / "ct_?.nii.gz"), tmp_path / "eval", mask="label")

    assert result["intensity_range"] == [-1000.0, 2000.0]
    assert result["paired_cases"] == 2
    for index, row in enumerate(result["per_case"]):
        image, label = real_case(index)
        expected = image_metrics(image + 100.0 * (label > 0), image, label > 0, (-1000.0, 2000.0))
        assert row["mae"] == pytest.approx(100.0, abs=1e-3)
        assert row["psnr"] == pytest.approx(expected["psnr"])
        assert row["ssim"] == pytest.approx(expected["ssim"])
    assert result["mean"]["mae"]["cases"] == 2


def test_mask_file_template(tmp_path):
    synthetic, real = build_pair(tmp_path)
    result = evaluate_synthetic(synthetic, str(real / "ct_?.nii.gz"), tmp_path / "eval", mask="{stem}_mask.nii.gz")
    # 12 x 12 x 4 mask voxels, of which the 9 x 8 x 4 foreground differs by 100 HU.
    assert result["per_case"][0]["mask_voxels"] == 576
    assert result["per_case"][0]["mae"] == pytest.approx(100.0 * 288 / 576, abs=1e-3)


def test_files_are_written(tmp_path):
    synthetic, real = build_pair(tmp_path)
    evaluate_synthetic(synthetic, str(real / "ct_?.nii.gz"), tmp_path / "eval")

    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    with open(tmp_path / "eval" / "per_case.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["case_id"] for row in rows] == ["ct_0_synth", "ct_1_synth"]
    assert float(rows[0]["mae"]) == pytest.approx(metrics["per_case"][0]["mae"])
    assert (tmp_path / "eval" / "samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_segmenter_dice_against_synthetic_labels(tmp_path):
    synthetic, real = build_pair(tmp_path)
    segmenter = constant_segmenter(tmp_path / "model.pt", winner=1)
    result = evaluate_synthetic(synthetic, str(real / "ct_?.nii.gz"), tmp_path / "eval", segmenter=segmenter)

    # Predicting class 1 everywhere: Dice_1 = 2 * |L1| / (N + |L1|), Dice_2 = 0.
    voxels, class_1 = 16 * 16 * 4, 6 * 8 * 4
    row = result["per_case"][0]
    assert row["dice_1"] == pytest.approx(2 * class_1 / (voxels + class_1))
    assert row["dice_2"] == 0.0
    assert row["dice_mean"] == pytest.approx(class_1 / (voxels + class_1))
    assert row["dice_real_mean"] == pytest.approx(row["dice_mean"])


def test_augmented_cases_are_not_compared(tmp_path):
    synthetic, real = build_pair(tmp_path, strategy=True)
    result = evaluate_synthetic(synthetic, str(real / "ct_?.nii.gz"), tmp_path / "eval")
    assert result["paired_cases"] == 0
    assert "ssim" not in result["per_case"][0]
    assert (tmp_path / "eval" / "samples.png").is_file()


def test_percentile_mapping_needs_a_range(tmp_path):
    synthetic, real = build_pair(tmp_path, intensity={"name": "mr", "lower": 0.5, "upper": 99.5, "low": 0.0, "high": 1.0})
    with pytest.raises(DataError, match="--range"):
        evaluate_synthetic(synthetic, str(real / "ct_?.nii.gz"), tmp_path / "eval")
    result = evaluate_synthetic(synthetic, str(real / "ct_?.nii.gz"), tmp_path / "eval", intensity_range=(-1000.0, 2000.0))
    assert result["per_case"][0]["mae"] > 0


def test_real_with_other_shape_is_rejected(tmp_path):
    synthetic, real = build_pair(tmp_path)
    write_nifti(real / "ct_0.nii.gz", np.zeros((16, 16, 5), dtype=np.float32))
    with pytest.raises(DataError, match="ct_0.nii.gz has shape"):
        evaluate_synthetic(synthetic, str(real / "ct_?.nii.gz"), tmp_path / "eval")


def test_percentile_normalisation_ignores_scale(tmp_path):
    real, _ = real_case(0)
    write_nifti(tmp_path / "real" / "mr_0.nii.gz", real, np.eye(4))

    def generate(case: PlannedCase) -> SyntheticCase:
        # The same anatomy on another intensity scale, as two MR scanners would give.
        return SyntheticCase(3.0 * real + 50.0, np.ones(SHAPE, dtype=np.uint8), np.eye(4))

    info = DatasetInfo("Synth", "MRI", {0: "background", 1: "tissue"})
    mr = {"name": "mr", "lower": 0.5, "upper": 99.5, "low": 0.0, "high": 1.0}
    synthetic = export_dataset(tmp_path / "synthetic", [PlannedCase("mr_0_synth", "mr_0", 0)], generate, info=info,
                               provenance={"checkpoint_sha256": "0" * 64, "intensity": mr})

    result = evaluate_synthetic(synthetic, str(tmp_path / "real" / "*.nii.gz"), tmp_path / "eval", normalise="percentiles")
    row = result["per_case"][0]
    assert result["intensity_range"] == [-1.0, 1.0]
    assert row["mae"] == pytest.approx(0.0, abs=1e-5)
    assert row["ssim"] == pytest.approx(1.0, abs=1e-5)


def test_normalisation_excludes_range(tmp_path):
    synthetic, real = build_pair(tmp_path)
    with pytest.raises(GanError, match="either an intensity range or a normalisation"):
        evaluate_synthetic(synthetic, str(real / "ct_?.nii.gz"), tmp_path / "eval", intensity_range=(0.0, 1.0), normalise="percentiles")
