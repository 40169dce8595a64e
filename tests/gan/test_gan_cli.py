"""`medaug gan ...` as a user runs it: commands end to end on tiny data, and one-line errors that name the file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from gan.checkpoint import sha256_file
from gan.cli import app, input_path, parse_intensity, parse_options, read_case_list
from gan.errors import GanError
from segment.data import MSDDataset
from segment.errors import DataError
from tests.conftest import make_msd_dataset, write_nifti
from tests.gan.test_export_datasets import conditional_checkpoint, cyclegan_checkpoint


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def invoke(*args: str):
    return CliRunner().invoke(app, [str(arg) for arg in args])


def medaug(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "studies.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
    )


def error_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, f"expected one error line, got stderr:\n{result.stderr}"
    return lines[0]


def test_sample_command_writes_dataset(tmp_path):
    source = make_msd_dataset(tmp_path / "Synthetic", n_cases=2, shape=(12, 14, 4))
    checkpoint = conditional_checkpoint(tmp_path / "generator.pt")
    (tmp_path / "cases.txt").write_text("case_001\n")

    result = invoke("sample", checkpoint, "Synthetic", "-o", tmp_path / "out", "--data-root", tmp_path, "--per-case", "2",
                    "--strategy", "rigid", "--cases", tmp_path / "cases.txt", "--seed", "4")

    assert result.exit_code == 0, result.output
    dataset = MSDDataset(tmp_path / "out")
    assert [case.case_id for case in dataset.cases] == ["case_001_synth000", "case_001_synth001"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["provenance"]["checkpoint_sha256"] == sha256_file(checkpoint)
    assert manifest["provenance"]["source"] == str(source)
    assert manifest["provenance"]["seed"] == 4


def test_translate_then_evaluate(tmp_path):
    make_msd_dataset(tmp_path / "Source", n_cases=2, shape=(12, 14, 4))
    checkpoint = cyclegan_checkpoint(tmp_path / "generator_AB.pt")

    translated = invoke("translate", checkpoint, tmp_path / "Source", "-o", tmp_path / "translated")
    assert translated.exit_code == 0, translated.output
    assert len(MSDDataset(tmp_path / "translated").cases) == 2

    # The source images play the real domain-B counterparts here; only the mechanics are checked.
    evaluated = invoke("evaluate", tmp_path / "translated", tmp_path / "Source", "-o", tmp_path / "eval", "--mask", "label", "--range", "-1000,2000")
    assert evaluated.exit_code == 0, evaluated.output
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["paired_cases"] == 2
    assert metrics["intensity_range"] == [-1000.0, 2000.0]
    assert metrics["mask"] == "label"
    assert {"ssim", "psnr", "mae"} <= set(metrics["mean"])
    assert (tmp_path / "eval" / "samples.png").is_file()


def test_train_conditional_command(tmp_path):
    make_msd_dataset(tmp_path / "Synthetic", n_cases=2, shape=(12, 14, 4))
    result = invoke("train", "conditional", tmp_path / "Synthetic", "-o", tmp_path / "gan", "--steps", "2", "--batch-size", "2",
                    "--image-size", "32", "--generator-features", "4", "--generator-option", "depth=2", "--discriminator-features", "4",
                    "--threads", "1", "--accelerator", "cpu")
    assert result.exit_code == 0, result.output
    log = json.loads((tmp_path / "gan" / "training_log.json").read_text())
    assert log["checkpoints"]["generator.pt"] == sha256_file(tmp_path / "gan" / "generator.pt")
    assert torch.load(tmp_path / "gan" / "generator.pt", weights_only=True)["config"]["generator"]["depth"] == 2


def test_train_cyclegan_command(tmp_path):
    rng = np.random.default_rng(0)
    for domain, scale in (("a", 1.0), ("b", 300.0)):
        for index in range(2):
            write_nifti(tmp_path / domain / f"{domain}{index}.nii.gz", (rng.random((32, 32, 3)) * scale).astype(np.float32))
    result = invoke("train", "cyclegan", tmp_path / "a", tmp_path / "b", "-o", tmp_path / "gan", "--steps", "2", "--image-size", "32",
                    "--intensity-b", "ct:-1000,2000", "--generator-features", "4", "--discriminator-features", "4", "--threads", "1", "--accelerator", "cpu")
    assert result.exit_code == 0, result.output
    checkpoint = torch.load(tmp_path / "gan" / "generator_AB.pt", weights_only=True)
    assert checkpoint["config"]["intensity"] == {"name": "ct", "low": -1000.0, "high": 2000.0}


def test_parse_intensity():
    assert parse_intensity("ct", "--intensity") == {"name": "ct"}
    assert parse_intensity("ct:-500,1500", "--intensity") == {"name": "ct", "low": -500.0, "high": 1500.0}
    assert parse_intensity("mr:1,99", "--intensity") == {"name": "mr", "lower": 1.0, "upper": 99.0}
    assert parse_intensity("zscore:4", "--intensity") == {"name": "zscore", "limit": 4.0}
    with pytest.raises(GanError, match="--intensity-a must be ct, mr or zscore"):
        parse_intensity("pet", "--intensity-a")
    with pytest.raises(GanError, match="ct takes 2 value"):
        parse_intensity("ct:100", "--intensity")


def test_parse_options():
    assert parse_options(["depth=4", "norm=batch", "dropout=0.25"], "--generator-option") == {"depth": 4, "norm": "batch", "dropout": 0.25}
    with pytest.raises(GanError, match="--generator-option must look like KEY=VALUE"):
        parse_options(["depth"], "--generator-option")


def test_read_case_list(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"train_cases": ["a", "b"], "val_cases": ["c"]}))
    assert read_case_list(tmp_path / "config.json") == ["a", "b"]
    (tmp_path / "ids.txt").write_text("x\n\ny\n")
    assert read_case_list(tmp_path / "ids.txt") == ["x", "y"]
    with pytest.raises(DataError, match="case list not found: .*absent.txt"):
        read_case_list(tmp_path / "absent.txt")
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(DataError, match="other.json has no list 'train_cases'"):
        read_case_list(tmp_path / "other.json")


def test_input_path_under_data_root(tmp_path, monkeypatch):
    monkeypatch.delenv("MEDAUG_DATA", raising=False)
    (tmp_path / "root" / "Task" / "x").mkdir(parents=True)
    (tmp_path / "root" / "Task" / "x" / "a.nii.gz").write_bytes(b"")
    assert input_path("Task", tmp_path / "root", "dataset") == str(tmp_path / "root" / "Task")
    assert input_path("Task/*/a.nii.gz", tmp_path / "root", "dataset") == str(tmp_path / "root" / "Task" / "*" / "a.nii.gz")
    with pytest.raises(DataError, match="dataset not found: Missing \\(also looked under the data root"):
        input_path("Missing", tmp_path / "root", "dataset")
    with pytest.raises(DataError, match="dataset not found: Missing; give an existing path"):
        input_path("Missing", None, "dataset")


def test_sample_into_finished_output_is_rejected(tmp_path):
    make_msd_dataset(tmp_path / "Synthetic", n_cases=1, shape=(12, 14, 4))
    checkpoint = conditional_checkpoint(tmp_path / "generator.pt")
    assert invoke("sample", checkpoint, tmp_path / "Synthetic", "-o", tmp_path / "out").exit_code == 0

    result = invoke("sample", checkpoint, tmp_path / "Synthetic", "-o", tmp_path / "out", "--seed", "1")
    assert isinstance(result.exception, GanError)
    assert f"output {tmp_path / 'out'} already contains a dataset" in str(result.exception)
    assert invoke("sample", checkpoint, tmp_path / "Synthetic", "-o", tmp_path / "out", "--seed", "1", "--overwrite").exit_code == 0


def test_evaluate_rejects_unfinished_folder(tmp_path):
    (tmp_path / "out.partial").mkdir()
    result = invoke("evaluate", tmp_path / "out.partial", tmp_path, "-o", tmp_path / "eval")
    assert isinstance(result.exception, DataError)
    assert "out.partial is not a finished synthetic dataset" in str(result.exception)


def test_evaluate_rejects_bad_range(tmp_path):
    make_msd_dataset(tmp_path / "Synthetic", n_cases=1, shape=(12, 14, 4))
    result = invoke("evaluate", tmp_path / "Synthetic", tmp_path / "Synthetic", "-o", tmp_path / "eval", "--range", "5,1")
    assert isinstance(result.exception, GanError)
    assert "--range must have LOW < HIGH" in str(result.exception)


def test_errors_are_one_line_naming_the_file(tmp_path):
    make_msd_dataset(tmp_path / "Synthetic", n_cases=1, shape=(12, 14, 4))
    missing = medaug("gan", "sample", tmp_path / "absent.pt", tmp_path / "Synthetic", "-o", tmp_path / "out")
    assert missing.returncode == 2
    assert f"generator checkpoint not found: {tmp_path / 'absent.pt'}" in error_line(missing)


def test_corrupt_checkpoint_is_named(tmp_path):
    make_msd_dataset(tmp_path / "Synthetic", n_cases=1, shape=(12, 14, 4))
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    result = invoke("translate", tmp_path / "broken.pt", tmp_path / "Synthetic", "-o", tmp_path / "out")
    assert isinstance(result.exception, DataError)
    assert f"cannot load generator checkpoint {tmp_path / 'broken.pt'} safely" in str(result.exception)
    assert not (tmp_path / "out").exists()
