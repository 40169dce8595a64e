"""A complete, valid checkpoint with one pickled object in it is rejected before that object can run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from segment.checkpoint import load_checkpoint
from segment.errors import DataError
from segment.models import UNet

HPARAMS = {"in_channels": 1, "num_classes": 3, "model": {"name": "unet", "features": [4, 8]}}


class CreatesFile:
    """Unpickling this object creates ``path``: a visible stand-in for code chosen by the file's author."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_valid_checkpoint_with_payload_rejected(tmp_path):
    marker = tmp_path / "payload-ran"
    net = UNet(1, 3, features=(4, 8))
    # Everything a real checkpoint needs is present and correct, so only the payload can make loading fail.
    torch.save({"state_dict": net.state_dict(), "hyper_parameters": HPARAMS, "run_id": "r", "note": CreatesFile(marker)}, tmp_path / "model.pt")

    with pytest.raises(DataError) as raised:
        load_checkpoint(tmp_path / "model.pt")

    assert not marker.exists()
    message = str(raised.value)
    assert str(tmp_path / "model.pt") in message
    assert "cannot load checkpoint" in message
    assert "safely" in message


def test_same_checkpoint_without_payload_loads(tmp_path):
    net = UNet(1, 3, features=(4, 8))
    torch.save({"state_dict": net.state_dict(), "hyper_parameters": HPARAMS, "run_id": "r", "note": "plain text"}, tmp_path / "model.pt")

    loaded, hparams = load_checkpoint(tmp_path / "model.pt")

    assert hparams == HPARAMS
    assert not loaded.training
