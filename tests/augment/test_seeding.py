"""Seeded augmentation is reproducible within a process and across processes."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap

import pytest
import torch

from augment import build_strategy, derive_generator, derive_seed

RUN_SEED = 123
CALL_COUNT = 3


def make_batch() -> dict[str, torch.Tensor]:
    image = torch.randn(4, 1, 12, 12, 12, generator=torch.Generator().manual_seed(0))
    return {"image": image, "label": (image > 0).to(torch.int64)}


def augment_batch(seed: int, *keys: int) -> dict:
    return build_strategy("nonrigid")(make_batch(), derive_generator(seed, *keys))


def digest(out: dict) -> str:
    """Return the SHA-256 of the output image and label bytes."""
    hasher = hashlib.sha256()
    hasher.update(out["image"].contiguous().numpy().tobytes())
    hasher.update(out["label"].contiguous().numpy().tobytes())
    return hasher.hexdigest()


# The child process prints the digests of CALL_COUNT consecutive calls as a JSON list.
CHILD_SCRIPT = textwrap.dedent(
    f"""
    import hashlib, json
    import torch
    from augment import build_strategy, derive_generator

    image = torch.randn(4, 1, 12, 12, 12, generator=torch.Generator().manual_seed(0))
    batch = {{"image": image, "label": (image > 0).to(torch.int64)}}
    pipeline = build_strategy("nonrigid")
    digests = []
    for call_index in range({CALL_COUNT}):
        out = pipeline(batch, derive_generator({RUN_SEED}, call_index))
        hasher = hashlib.sha256()
        hasher.update(out["image"].contiguous().numpy().tobytes())
        hasher.update(out["label"].contiguous().numpy().tobytes())
        digests.append(hasher.hexdigest())
    print(json.dumps(digests))
    """
)


def test_same_seed_gives_identical_output():
    first = augment_batch(5)
    second = augment_batch(5)

    assert torch.equal(first["image"], second["image"])
    assert torch.equal(first["label"], second["label"])
    for params_first, params_second in zip(first["augmentation"], second["augmentation"], strict=True):
        for key in params_first:
            assert torch.equal(params_first[key], params_second[key]), f"parameter {key!r} differs"


def test_different_seeds_give_different_output():
    first = augment_batch(5)
    second = augment_batch(6)

    assert not torch.equal(first["image"], second["image"])


def test_consecutive_call_indices_give_different_output():
    digests = [digest(augment_batch(RUN_SEED, call_index)) for call_index in range(CALL_COUNT)]

    assert len(set(digests)) == CALL_COUNT, f"digests of consecutive calls repeat: {digests}"


def test_fresh_process_reproduces_output_bytes():
    expected = [digest(augment_batch(RUN_SEED, call_index)) for call_index in range(CALL_COUNT)]

    result = subprocess.run(
        [sys.executable, "-c", CHILD_SCRIPT],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, f"child process failed:\n{result.stderr}"
    assert json.loads(result.stdout) == expected


def test_derive_seed_depends_on_key_order():
    assert derive_seed(0, 1) != derive_seed(1, 0)


def test_derive_seed_rejects_negative_key():
    with pytest.raises(ValueError, match="non-negative"):
        derive_seed(1, -1)


# Random affine, elastic, noise and flip on one 16x16x16 volume, called CALL_COUNT
# times with the generator of run seed RUN_SEED and the call index. The process
# sets no global seed, so only the explicit generators decide the output.
MIXED_PIPELINE_SCRIPT = textwrap.dedent(
    f"""
    import hashlib, json
    import torch
    from augment import Pipeline, RandomAffine, RandomElastic, RandomFlip, RandomGaussianNoise, derive_generator

    pipeline = Pipeline(
        [
            RandomAffine(degrees=15, scale=0.1, translation=2.0),
            RandomElastic(max_displacement=2.0, control_points=4),
            RandomGaussianNoise(std=(0.05, 0.1)),
            RandomFlip(p=0.5),
        ]
    )
    image = torch.linspace(0.0, 1.0, 16 ** 3).reshape(1, 1, 16, 16, 16)
    batch = {{"image": image, "label": (image > 0.5).to(torch.int64)}}
    digests = []
    for call_index in range({CALL_COUNT}):
        out = pipeline(batch, derive_generator({RUN_SEED}, call_index))
        hasher = hashlib.sha256()
        hasher.update(out["image"].contiguous().numpy().tobytes())
        hasher.update(out["label"].contiguous().numpy().tobytes())
        digests.append(hasher.hexdigest())
    print(json.dumps(digests))
    """
)


def run_fresh_process(script: str) -> list[str]:
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"child process failed:\n{result.stderr}"
    return json.loads(result.stdout)


def test_two_fresh_processes_give_identical_mixed_pipeline_output():
    first = run_fresh_process(MIXED_PIPELINE_SCRIPT)
    second = run_fresh_process(MIXED_PIPELINE_SCRIPT)

    assert first == second
    assert len(set(first)) == CALL_COUNT, f"calls within one process repeat their output: {first}"
