"""Few-step CycleGAN and conditional GAN training on tiny volumes, and whole-volume inference."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn

from gan.checkpoint import load_generator, sha256_file
from gan.conditional import ConditionalGAN, generate_from_labels, label_channels
from gan.cyclegan import CycleGAN, linear_decay
from gan.errors import GanError
from gan.intensity import CTWindow
from gan.training import Domain, train_conditional, train_cyclegan, translate_volume
from segment.errors import DataError
from tests.conftest import write_nifti

SHAPE = (32, 36, 4)
TINY_CYCLEGAN = {"generator_features": 4, "generator_options": {"blocks": 1}, "discriminator_features": 4}
TINY_CONDITIONAL = {"generator_features": 4, "generator_options": {"depth": 3}, "discriminator_features": 4}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _labels() -> np.ndarray:
    label = np.zeros(SHAPE, np.uint8)
    label[8:20, 10:24, 1:3] = 1
    label[20:26, 10:24, 1:3] = 2
    return label


@pytest.fixture(scope="module")
def domains(tmp_path_factory) -> tuple[Path, Path]:
    """Two folders of two cases each: the same boxes, bright in A and dark in B."""
    root = tmp_path_factory.mktemp("domains")
    rng = np.random.default_rng(0)
    for domain, sign in (("a", 1.0), ("b", -1.0)):
        for case in range(2):
            image = 100 + sign * 40 * _labels() + rng.normal(0, 5, SHAPE)
            write_nifti(root / domain / f"case{case}.nii.gz", image.astype(np.float32))
            write_nifti(root / domain / f"case{case}_seg.nii.gz", _labels())
    return root / "a", root / "b"


def _initial_state(module_factory, seed: int) -> dict[str, torch.Tensor]:
    L.seed_everything(seed, verbose=False)
    return {key: value.clone() for key, value in module_factory().state_dict().items()}


def test_linear_decay_schedule():
    assert linear_decay(0, 100, 0.5) == 1.0
    assert linear_decay(49, 100, 0.5) == 1.0
    assert linear_decay(50, 100, 0.5) == 1.0
    assert linear_decay(75, 100, 0.5) == pytest.approx(0.5)
    assert linear_decay(100, 100, 0.5) == 0.0


def test_cyclegan_trains_and_saves(domains, tmp_path):
    domain_a, domain_b = domains
    output = train_cyclegan(
        Domain(domain_a, labels="{stem}_seg.nii.gz"),
        Domain(domain_b, intensity="mr", labels="{stem}_seg.nii.gz"),
        tmp_path / "cyclegan",
        steps=4,
        image_size=32,
        seed=1,
        threads=1,
        train_cases=["case0"],
        accelerator="cpu",
        **TINY_CYCLEGAN,
    )
    log = json.loads((output / "training_log.json").read_text())
    assert len(log["history"]) == 4
    assert all(np.isfinite(value) for record in log["history"] for value in record.values())
    assert log["settings"]["train_cases"] == ["case0"]
    assert log["checkpoints"]["generator_AB.pt"] == sha256_file(output / "generator_AB.pt")

    generator_ab, config_ab = load_generator(output / "generator_AB.pt")
    generator_ba, config_ba = load_generator(output / "generator_BA.pt")
    assert (config_ab["direction"], config_ba["direction"]) == ("A->B", "B->A")
    assert config_ab["train_cases"] == ["case0"]
    assert config_ab["train_cases_b"] == ["case0", "case1"]
    assert config_ab["input_intensity"] == {"name": "mr", "lower": 0.5, "upper": 99.5}
    assert {"low", "high"} <= set(config_ab["intensity"])

    initial = _initial_state(lambda: CycleGAN(channels=1, generator={"name": "resnet", "features": 4, "blocks": 1}, discriminator={"features": 4}, max_steps=4, seed=1), 1)
    trained = generator_ab.state_dict()
    assert any(not torch.equal(trained[key], initial[f"generator_ab.{key}"]) for key in trained)


def test_cyclegan_2p5d_translates_volume(domains, tmp_path):
    domain_a, domain_b = domains
    output = train_cyclegan(domain_a, domain_b, tmp_path / "cyclegan", steps=2, image_size=32, context=1, threads=1, accelerator="cpu", **TINY_CYCLEGAN)
    generator, config = load_generator(output / "generator_AB.pt")
    assert config["generator"]["in_channels"] == config["generator"]["out_channels"] == 3

    volume = np.random.default_rng(1).normal(100, 20, size=(30, 21, 4)).astype(np.float32)
    translated = translate_volume(generator, config, volume, batch_size=3)
    assert translated.shape == volume.shape
    assert translated.dtype == np.float32
    assert translated.min() >= config["intensity"]["low"] - 1e-3
    assert translated.max() <= config["intensity"]["high"] + 1e-3


class _Constant(nn.Module):
    """Generator stand-in whose every output pixel is ``value``."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value
        self.weight = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x[:, :1], self.value) + self.weight


@pytest.mark.parametrize(("output", "hu"), [(-1.0, -1000.0), (0.0, 500.0), (1.0, 2000.0)])
def test_translate_maps_outputs_to_hu(output, hu):
    config = {
        "generator": {"name": "resnet", "in_channels": 1, "out_channels": 1},
        "input_intensity": {"name": "mr", "lower": 0.5, "upper": 99.5},
        "intensity": CTWindow(-1000.0, 2000.0).state(),
        "context": 0,
        "axis": 2,
    }
    for volume in (np.arange(64, dtype=np.uint16).reshape(4, 4, 4), np.full((4, 4, 4), 3.5)):
        translated = translate_volume(_Constant(output), config, volume)
        assert np.all(np.abs(translated - hu) <= 1.0)


def test_translate_rejects_unfitted_output():
    config = {"generator": {"out_channels": 1}, "input_intensity": {"name": "ct"}, "intensity": {"name": "mr"}}
    with pytest.raises(GanError, match="no fitted range"):
        translate_volume(_Constant(0.0), config, np.zeros((4, 4, 2)))


def test_conditional_trains_and_generates(domains, tmp_path):
    domain_a, _ = domains
    output = train_conditional(
        Domain(domain_a, labels="{stem}_seg.nii.gz"),
        tmp_path / "conditional",
        steps=4,
        batch_size=2,
        image_size=32,
        context=1,
        noise_channels=1,
        seed=2,
        threads=1,
        accelerator="cpu",
        **TINY_CONDITIONAL,
    )
    log = json.loads((output / "training_log.json").read_text())
    assert len(log["history"]) == 4
    assert all(np.isfinite(value) for record in log["history"] for value in record.values())

    generator, config = load_generator(output / "generator.pt")
    assert config["kind"] == "conditional"
    assert config["num_classes"] == 3
    assert config["generator"]["in_channels"] == 3 * 3 + 1
    initial = _initial_state(
        lambda: ConditionalGAN(num_classes=3, context=1, generator={"name": "unet", "features": 4, "depth": 3}, discriminator={"features": 4}, noise_channels=1, max_steps=4, seed=2),
        2,
    )
    trained = generator.state_dict()
    assert any(not torch.equal(trained[key], initial[f"generator.{key}"]) for key in trained)

    image, labels = generate_from_labels(generator, _labels(), config, seed=0)
    assert image.shape == SHAPE
    assert image.dtype == np.float32
    assert np.array_equal(labels, _labels())
    assert config["intensity"]["low"] - 1e-3 <= image.min() <= image.max() <= config["intensity"]["high"] + 1e-3


def test_generate_deforms_labels_with_pipeline(domains, tmp_path):
    domain_a, _ = domains
    output = train_conditional(Domain(domain_a, labels="{stem}_seg.nii.gz"), tmp_path / "c", steps=1, image_size=32, threads=1, accelerator="cpu", **TINY_CONDITIONAL)
    generator, config = load_generator(output / "generator.pt")
    strategy = {"transforms": [{"affine": {"degrees": 20.0, "translation": 3.0, "p": 1.0}}]}

    image, deformed = generate_from_labels(generator, _labels(), config, pipeline=strategy, seed=3)
    again, deformed_again = generate_from_labels(generator, _labels(), config, pipeline=strategy, seed=3)
    _, other = generate_from_labels(generator, _labels(), config, pipeline=strategy, seed=4)
    assert deformed.shape == image.shape == SHAPE
    assert not np.array_equal(deformed, _labels())
    assert set(np.unique(deformed)) <= {0, 1, 2}
    assert np.array_equal(deformed, deformed_again)
    assert np.array_equal(image, again)
    assert not np.array_equal(deformed, other)


def test_stochastic_generation_varies_with_seed(domains, tmp_path):
    domain_a, _ = domains
    output = train_conditional(Domain(domain_a, labels="{stem}_seg.nii.gz"), tmp_path / "c", steps=1, image_size=32, threads=1, accelerator="cpu", **TINY_CONDITIONAL)
    generator, config = load_generator(output / "generator.pt")
    first, _ = generate_from_labels(generator, _labels(), config, seed=0, stochastic=True)
    repeat, _ = generate_from_labels(generator, _labels(), config, seed=0, stochastic=True)
    other, _ = generate_from_labels(generator, _labels(), config, seed=1, stochastic=True)
    assert np.array_equal(first, repeat)
    assert not np.array_equal(first, other)
    assert not generator.training


def test_conditional_requires_labels(domains, tmp_path):
    domain_a, _ = domains
    with pytest.raises(DataError, match="no label map"):
        train_conditional(Domain(str(domain_a / "case0.nii.gz")), tmp_path / "c", steps=1, image_size=32, threads=1, accelerator="cpu", **TINY_CONDITIONAL)


def test_label_channels_one_hot_by_slice():
    labels = torch.tensor([[[[0, 1]], [[2, 2]]]])  # (B=1, S=2, X=1, Y=2)
    channels = label_channels(labels, 3)
    assert channels.shape == (1, 6, 1, 2)
    assert channels[0, :, 0, 0].tolist() == [1, 0, 0, 0, 0, 1]
    assert channels[0, :, 0, 1].tolist() == [0, 1, 0, 0, 0, 1]
    with pytest.raises(GanError, match="num_classes"):
        label_channels(labels, 2)


@pytest.mark.parametrize("size", [8, 16, [64, 24]])
def test_too_small_slices_are_refused_before_loading(tmp_path, size):
    # Below 32 pixels the discriminator failed deep inside torch (found by a new-user test).
    with pytest.raises(GanError, match="too small"):
        train_conditional(tmp_path / "no-such-dataset", tmp_path / "out", image_size=size, steps=1)
