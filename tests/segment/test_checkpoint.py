"""Loading checkpoints: round trip, and refusal of files that are missing, corrupt or unsafe."""

from __future__ import annotations

import torch

import pytest

from segment.checkpoint import load_checkpoint
from segment.errors import DataError
from segment.models import UNet

HPARAMS = {"in_channels": 1, "num_classes": 3, "model": {"name": "unet", "features": [4, 8]}}


class Payload:
    """An arbitrary object; unpickling it would run code chosen by the file's author."""

    def __reduce__(self):
        return (print, ("this must never run",))


def test_round_trip_gives_the_same_predictions(tmp_path):
    net = UNet(1, 3, features=(4, 8)).eval()
    torch.save({"state_dict": net.state_dict(), "hyper_parameters": HPARAMS}, tmp_path / "model.pt")

    loaded, hparams = load_checkpoint(tmp_path / "model.pt")

    image = torch.randn(1, 1, 8, 8, 8)
    assert hparams["num_classes"] == 3
    assert not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(image), net(image))


def test_missing_checkpoint(tmp_path):
    with pytest.raises(DataError, match=f"checkpoint not found: {tmp_path / 'absent.pt'}"):
        load_checkpoint(tmp_path / "absent.pt")


def test_corrupt_checkpoint(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="cannot load checkpoint .* safely"):
        load_checkpoint(path)


def test_pickled_object_is_refused(tmp_path, capsys):
    path = tmp_path / "model.pt"
    torch.save({"state_dict": {}, "hyper_parameters": HPARAMS, "extra": Payload()}, path)
    with pytest.raises(DataError, match="cannot load checkpoint .* safely"):
        load_checkpoint(path)
    assert "this must never run" not in capsys.readouterr().out


def test_foreign_checkpoint_is_rejected(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"weights": torch.zeros(1)}, path)
    with pytest.raises(DataError, match="is not a medaug checkpoint"):
        load_checkpoint(path)
