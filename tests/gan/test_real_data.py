"""GAN training and translation on the real CT and MR of TotalSegmentator-examples (a few steps)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from gan.checkpoint import load_generator
from gan.training import Domain, train_cyclegan, translate_volume
from segment.data.io import load_nifti


@pytest.fixture(scope="module")
def totalsegmentator() -> Path:
    root = os.environ.get("MEDAUG_DATA")
    if not root:
        pytest.skip("MEDAUG_DATA is not set; .ci/run sets it to ../shared/data")
    folder = Path(root) / "TotalSegmentator-examples"
    assert folder.is_dir(), f"MEDAUG_DATA is set but {folder} does not exist"
    return folder


def test_ct_mr_cyclegan_round_trip(totalsegmentator, tmp_path):
    torch.set_num_threads(1)
    output = train_cyclegan(
        Domain(totalsegmentator / "ct.nii.gz", intensity="ct", labels="{stem}_seg.nii.gz"),
        Domain(totalsegmentator / "mr.nii.gz", intensity="mr", labels="{stem}_seg.nii.gz"),
        tmp_path / "ct-mr",
        steps=2,
        image_size=64,
        generator_features=4,
        generator_options={"blocks": 1},
        discriminator_features=4,
        threads=1,
        accelerator="cpu",
    )
    to_mr, config_mr = load_generator(output / "generator_AB.pt")
    to_ct, config_ct = load_generator(output / "generator_BA.pt")
    assert config_mr["input_intensity"] == {"name": "ct", "low": -1000.0, "high": 2000.0}
    assert config_ct["intensity"] == {"name": "ct", "low": -1000.0, "high": 2000.0}

    ct, _ = load_nifti(totalsegmentator / "ct.nii.gz")
    mr, _ = load_nifti(totalsegmentator / "mr.nii.gz")
    assert ct.dtype == np.int16
    synthetic_mr = translate_volume(to_mr, config_mr, ct)
    synthetic_ct = translate_volume(to_ct, config_ct, mr)
    assert synthetic_mr.shape == ct.shape
    assert synthetic_ct.shape == mr.shape
    assert synthetic_ct.dtype == np.float32
    assert -1000.0 <= synthetic_ct.min() <= synthetic_ct.max() <= 2000.0
    assert config_mr["intensity"]["low"] <= synthetic_mr.min() <= synthetic_mr.max() <= config_mr["intensity"]["high"]
