"""`medaug augment preview`: a PNG grid of real cases and augmented draws."""

from __future__ import annotations

from PIL import Image
from typer.testing import CliRunner

from studies.cli import app
from tests.conftest import make_msd_dataset


def test_preview_writes_grid(tmp_path):
    dataset = make_msd_dataset(tmp_path / "Synthetic", n_cases=3)
    output = tmp_path / "out" / "preview.png"

    result = CliRunner().invoke(app, ["augment", "preview", "nonrigid", str(dataset), "-o", str(output), "--cases", "2", "--draws", "2"])

    assert result.exit_code == 0, result.output
    with Image.open(output) as image:
        assert image.format == "PNG"
        width, height = image.size
    # Three columns (original and two draws) of 2.4-inch panels at 100 dpi, two rows.
    assert width == 720
    assert height == 480
    assert [p.name for p in output.parent.iterdir()] == ["preview.png"]


def test_preview_rejects_unknown_strategy(tmp_path):
    dataset = make_msd_dataset(tmp_path / "Synthetic", n_cases=1)
    result = CliRunner().invoke(app, ["augment", "preview", "rigd", str(dataset), "-o", str(tmp_path / "p.png")])
    assert result.exit_code != 0
    assert "did you mean 'rigid'" in str(result.exception)


def test_preview_needs_a_decathlon_folder(tmp_path):
    result = CliRunner().invoke(app, ["augment", "preview", "rigid", str(tmp_path), "-o", str(tmp_path / "p.png")])
    assert result.exit_code != 0
    assert "dataset.json not found" in str(result.exception)
