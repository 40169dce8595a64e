"""Generator checkpoints: weights-only round trip, hashes, and rejection of pickled objects."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from gan.checkpoint import load_generator, save_generator, sha256_file
from gan.errors import GanError
from gan.networks import build_generator
from segment.errors import DataError

def _config(generator) -> dict:
    return {
        "kind": "cyclegan",
        "direction": "A->B",
        "generator": generator.generator_config,
        "intensity": {"name": "ct", "low": -1000.0, "high": 2000.0},
        "input_intensity": {"name": "mr", "lower": 0.5, "upper": 99.5},
        "context": 0,
        "seed": 3,
        "train_cases": ["case_000"],
    }


def test_round_trip_restores_weights(tmp_path):
    torch.manual_seed(0)
    generator = build_generator("resnet", 1, 1, features=4, blocks=1)
    path = tmp_path / "generator_AB.pt"
    digest = save_generator(path, generator, _config(generator))

    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert sha256_file(path) == digest
    assert set(torch.load(path, weights_only=True)) == {"state_dict", "config"}

    loaded, config = load_generator(path)
    assert config == _config(generator)
    assert not loaded.training
    image = torch.randn(1, 1, 13, 19)
    with torch.no_grad():
        assert torch.equal(loaded(image), generator.eval()(image))


def test_save_rejects_non_json_config(tmp_path):
    generator = build_generator("unet", 2, 1, features=4, depth=2)
    config = _config(generator) | {"seed": object()}
    with pytest.raises(GanError, match="JSON"):
        save_generator(tmp_path / "g.pt", generator, config)
    with pytest.raises(GanError, match="generator"):
        save_generator(tmp_path / "g.pt", generator, {"kind": "cyclegan"})
    with pytest.raises(GanError, match="kind"):
        save_generator(tmp_path / "g.pt", generator, _config(generator) | {"kind": "vae"})
    assert not (tmp_path / "g.pt").exists()


class _Payload:
    """Pickles to a call that creates ``marker`` when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_load_rejects_pickled_object(tmp_path):
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pt"
    generator = build_generator("resnet", 1, 1, features=4, blocks=1)
    torch.save({"state_dict": generator.state_dict(), "config": _config(generator), "extra": _Payload(marker)}, path)
    torch.load(path, weights_only=False)
    assert marker.exists(), "the payload must run when unpickled, or this test proves nothing"
    marker.unlink()

    with pytest.raises(DataError, match="evil.pt"):
        load_generator(path)
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", b"PK\x03\x04truncated"])
def test_load_rejects_corrupt_file(tmp_path, content):
    path = tmp_path / "broken.pt"
    path.write_bytes(content)
    with pytest.raises(DataError, match="broken.pt"):
        load_generator(path)


def test_load_rejects_missing_and_foreign_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_generator(tmp_path / "missing.pt")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(DataError, match="expected keys"):
        load_generator(foreign)


def test_load_rejects_mismatched_weights(tmp_path):
    generator = build_generator("resnet", 1, 1, features=4, blocks=1)
    config = _config(generator)
    config["generator"] = dict(config["generator"], features=8)
    path = tmp_path / "mismatch.pt"
    torch.save({"state_dict": generator.state_dict(), "config": config}, path)
    with pytest.raises(DataError, match="does not match"):
        load_generator(path)
