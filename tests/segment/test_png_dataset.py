"""The 2D PNG folder reader: masks, pixel spacing, resampling, subject grouping and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segment.data import kfold_split
from segment.data.png import PNGDataset
from segment.errors import DataError
from tests.conftest import REAL_DATA_ROOT


def write_pair(folder: Path, case: str, size=(40, 60), box=(10, 30, 20, 40)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    image = (np.arange(size[0] * size[1]) % 256).reshape(size).astype(np.uint8)
    Image.fromarray(image).save(folder / f"{case}.png")
    mask = np.zeros((*size, 3), dtype=np.uint8)
    mask[box[0] : box[1], box[2] : box[3]] = 255
    Image.fromarray(mask).save(folder / f"{case}_Annotation.png")


def make_png_dataset(root: Path, spacings: dict[str, float]) -> Path:
    for case in spacings:
        write_pair(root / "images", case)
    rows = ["filename,pixel size(mm),head circumference (mm)"] + [f"{case}.png,{value},1.0" for case, value in spacings.items()]
    (root / "spacing.csv").write_text("\n".join(rows) + "\n")
    return root


def open_dataset(root: Path, **kwargs) -> PNGDataset:
    options = {"images": "images/*HC.png", "mask_suffix": "_Annotation", "spacing_csv": "spacing.csv", **kwargs}
    return PNGDataset(root, **options)


def test_mask_and_spacing_load(tmp_path):
    dataset = open_dataset(make_png_dataset(tmp_path, {"000_HC": 0.25}))
    case = dataset.load("000_HC")
    assert case.image.shape == (1, 40, 60)
    assert case.label.dtype == np.int64
    assert int(case.label.sum()) == 20 * 20
    assert case.spacing.tolist() == [0.25, 0.25]
    assert case.affine[0, 0] == 0.25


def test_resampling_to_target_spacing(tmp_path):
    dataset = open_dataset(make_png_dataset(tmp_path, {"000_HC": 0.25}), target_spacing=0.5)
    case = dataset.load("000_HC")
    assert case.image.shape == (1, 20, 30)
    assert case.spacing.tolist() == [0.5, 0.5]
    assert set(np.unique(case.label).tolist()) == {0, 1}
    assert int(case.label.sum()) == 10 * 10


def test_subjects_share_a_fold(tmp_path):
    spacings = {f"{subject:03d}_{suffix}HC": 0.2 for subject in range(6) for suffix in ("", "2")}
    dataset = open_dataset(make_png_dataset(tmp_path, spacings), group_pattern=r"(\d{3})")
    ids = [c.case_id for c in dataset.cases]
    splits = kfold_split(ids, folds=3, seed=0, groups={c: dataset.group(c) for c in ids})
    for split in splits:
        train_subjects = {dataset.group(c) for c in split["train"]}
        val_subjects = {dataset.group(c) for c in split["val"]}
        assert train_subjects.isdisjoint(val_subjects)
        assert len(split["val"]) == 4


def test_missing_mask_names_the_file(tmp_path):
    root = make_png_dataset(tmp_path, {"000_HC": 0.2})
    (root / "images" / "000_HC_Annotation.png").unlink()
    with pytest.raises(DataError, match="file not found: .*000_HC_Annotation.png"):
        open_dataset(root).load("000_HC")


def test_missing_spacing_row_is_reported(tmp_path):
    root = make_png_dataset(tmp_path, {"000_HC": 0.2})
    write_pair(root / "images", "001_HC")
    with pytest.raises(DataError, match="gives no pixel size for \\['001_HC.png'\\]"):
        open_dataset(root)


def test_corrupt_png_names_the_file(tmp_path):
    root = make_png_dataset(tmp_path, {"000_HC": 0.2})
    (root / "images" / "000_HC.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match="cannot read .*000_HC.png as a PNG image"):
        open_dataset(root).load("000_HC")


def test_mask_of_other_size_is_rejected(tmp_path):
    root = make_png_dataset(tmp_path, {"000_HC": 0.2})
    Image.fromarray(np.zeros((41, 60), dtype=np.uint8)).save(root / "images" / "000_HC_Annotation.png")
    with pytest.raises(DataError, match="has shape \\(40, 60\\) but mask .* has shape \\(41, 60\\)"):
        open_dataset(root).load("000_HC")


@pytest.mark.skipif(not REAL_DATA_ROOT, reason="MEDAUG_DATA is not set; .ci/run sets it to ../shared/data")
def test_real_hc18_folder():
    dataset = PNGDataset(
        Path(REAL_DATA_ROOT) / "HC18",
        images="training_set/*HC.png",
        mask_suffix="_Annotation",
        spacing_csv="training_set_pixel_size_and_HC.csv",
        target_spacing=0.6,
        group_pattern=r"(\d{3})",
    )
    assert len(dataset.cases) == 350
    assert len({dataset.group(c.case_id) for c in dataset.cases}) == 280
    case = dataset.load("010_2HC")
    assert case.label.max() == 1
    assert np.isfinite(case.image).all()
