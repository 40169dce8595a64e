"""Study reports rebuilt from a fabricated study folder with per-case results chosen to give known statistics."""

from __future__ import annotations

import base64
import csv
import json
import logging
import re
from pathlib import Path

import pytest

from augment import strategy_config
from segment.files import write_csv, write_json
from studies.report import write_report
from studies.spec import StudySpec
from tests.conftest import make_msd_dataset

STRATEGIES = ["none", "rigid", "nonrigid"]
FOLD_CASES = {0: ["case_000", "case_001", "case_002"], 1: ["case_003", "case_004", "case_005"]}
BASELINE_DICE = {"case_000": 0.80, "case_001": 0.82, "case_002": 0.84, "case_003": 0.86, "case_004": 0.88, "case_005": 0.90}
STEPS = [0.01, 0.02, 0.03, 0.04, 0.05, 0.06]
# Per-case Dice minus the baseline's, by (strategy, training fraction), in case order.
DIFFERENCES = {
    ("rigid", 1.0): STEPS,
    ("nonrigid", 1.0): [-step for step in STEPS],
    ("rigid", 0.5): [0.03, -0.01, 0.02, -0.04, 0.05, 0.06],
    ("nonrigid", 0.5): [-step for step in STEPS],
}
HD95 = {"none": 2.0, "rigid": 3.0, "nonrigid": 4.0}


def case_dice(strategy: str, fraction: float) -> dict[str, float]:
    shifts = DIFFERENCES.get((strategy, fraction), [0.0] * len(STEPS))
    return {case: BASELINE_DICE[case] + shift for case, shift in zip(sorted(BASELINE_DICE), shifts)}


def fabricate_study(tmp_path: Path, *, tracking: str = "disabled", dataset_path: Path | None = None) -> Path:
    """Write a study folder of 3 strategies x fractions 0.5 and 1.0 x 2 folds, as `medaug study run` leaves it."""
    if dataset_path is None:
        dataset_path = make_msd_dataset(tmp_path / "Synthetic", n_cases=6)
    spec = StudySpec.model_validate({
        "name": "fabricated",
        "dataset": {"name": "Synthetic", "path": str(dataset_path)},
        "split": {"folds": 2},
        "strategies": STRATEGIES,
        "baseline": "none",
        "train_fractions": [0.5, 1.0],
        "folds": [0, 1],
        "model": {"features": [4, 8]},
        "training": {"max_steps": 10, "batch_size": 1, "patch_size": [8, 8, 8]},
        "tracking": {"mode": tracking, "project": "medaug-tests"},
    })
    study_dir = tmp_path / "results" / "fabricated"
    run_ids = []
    for strategy in STRATEGIES:
        for fraction in (0.5, 1.0):
            dice = case_dice(strategy, fraction)
            for fold, val_cases in FOLD_CASES.items():
                run_id = f"{strategy}-frac{fraction:g}-fold{fold}-seed0-0000000{fold}"
                run_ids.append(run_id)
                train_cases = FOLD_CASES[1 - fold][: int(3 * fraction)]
                rows = [
                    {"case_id": case, "dice_1": dice[case], "dice_2": dice[case], "dice_mean": dice[case],
                     "hd95_1": HD95[strategy], "hd95_2": HD95[strategy], "hd95_mean": HD95[strategy]}
                    for case in val_cases
                ]
                run_dir = study_dir / run_id
                write_json(run_dir / "config.json", {
                    "run_id": run_id, "strategy": strategy, "strategy_config": strategy_config(strategy),
                    "train_fraction": fraction, "fold": fold, "seed": 0, "train_cases": train_cases, "val_cases": val_cases,
                })
                write_csv(run_dir / "per_case.csv", rows)
                write_json(run_dir / "metrics.json", {
                    "run_id": run_id, "strategy": strategy, "train_fraction": fraction, "fold": fold, "seed": 0,
                    "train_cases": len(train_cases), "val_cases": len(val_cases), "steps": 10,
                    "dice_mean": sum(r["dice_mean"] for r in rows) / len(rows), "wall_time_s": 30.0, "machine": "test machine",
                })
    write_json(study_dir / "study.json", {**spec.model_dump(), "run_ids": run_ids})
    return study_dir


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def row_of(rows: list[dict[str, str]], strategy: str, fraction: float) -> dict[str, str]:
    (row,) = [r for r in rows if r["strategy"] == strategy and float(r["train_fraction"]) == fraction]
    return row


@pytest.fixture(scope="module")
def built_report(tmp_path_factory):
    study_dir = fabricate_study(tmp_path_factory.mktemp("report"))
    path = write_report(study_dir)
    return study_dir, path


def test_results_csv_rows_per_case(built_report):
    study_dir, _ = built_report
    rows = read_csv(study_dir / "results.csv")
    assert len(rows) == 3 * 2 * 2 * 3
    assert len({(r["run_id"], r["case_id"]) for r in rows}) == len(rows)


def test_summary_means_and_medians(built_report):
    study_dir, _ = built_report
    summary = read_csv(study_dir / "summary.csv")
    assert len(summary) == 6
    none = row_of(summary, "none", 1.0)
    assert float(none["dice_mean"]) == pytest.approx(0.85)
    assert float(none["dice_median"]) == pytest.approx(0.85)
    assert float(none["cases"]) == 6
    assert float(none["train_cases"]) == 3
    assert float(row_of(summary, "none", 0.5)["train_cases"]) == 1
    rigid = row_of(summary, "rigid", 1.0)
    assert float(rigid["dice_mean"]) == pytest.approx(0.885)
    assert float(rigid["hd95_mean"]) == pytest.approx(3.0)
    assert float(rigid["hd95_median_ci_low"]) == pytest.approx(3.0)
    assert float(rigid["dice_mean_ci_low"]) < 0.885 < float(rigid["dice_mean_ci_high"])


def test_paired_differences_and_holm(built_report):
    study_dir, _ = built_report
    paired = read_csv(study_dir / "paired.csv")
    assert {(r["strategy"], float(r["train_fraction"])) for r in paired} == set(DIFFERENCES)

    rigid = row_of(paired, "rigid", 1.0)
    assert float(rigid["dice_delta_mean"]) == pytest.approx(0.035)
    assert int(rigid["better_cases"]) == 6
    # Six positive differences with distinct ranks: exact two-sided p = 2 / 2**6.
    assert float(rigid["p_wilcoxon"]) == pytest.approx(0.03125)
    # Holm over two equal p-values: 2 x 0.03125 for both.
    assert float(rigid["p_holm"]) == pytest.approx(0.0625)
    assert float(row_of(paired, "nonrigid", 1.0)["p_holm"]) == pytest.approx(0.0625)

    mixed = row_of(paired, "rigid", 0.5)
    # Negative ranks 1 and 4 give W- = 5; 10 of the 64 sign patterns have W- <= 5, so p = 2 x 10/64.
    assert float(mixed["p_wilcoxon"]) == pytest.approx(0.3125)
    assert (int(mixed["better_cases"]), int(mixed["worse_cases"])) == (4, 2)
    # Holm: sorted p 0.03125 x 2 = 0.0625, then 0.3125 x 1 = 0.3125.
    assert float(mixed["p_holm"]) == pytest.approx(0.3125)
    assert float(row_of(paired, "nonrigid", 0.5)["p_holm"]) == pytest.approx(0.0625)


def test_markdown_tables_show_the_numbers(built_report):
    _, path = built_report
    report = path.read_text()
    assert re.search(r"^\| rigid \| 1 \| 3 \| 6 \| 0\.8850 \[0\.\d{4}, 0\.\d{4}\] \| 0\.8850 ", report, re.MULTILINE)
    assert re.search(r"^\| 0\.5 \| rigid \| 6 \| \+0\.0183 \[-0\.\d{4}, 0\.\d{4}\] \| \+0\.0250 \| 4 / 2 \| 0\.312 \| 0\.312 \|$", report, re.MULTILINE)
    for image in ("dice.png", "hd95.png", "paired.png", "learning_curve.png"):
        assert f"]({image})" in report


def test_plots_are_png_files(built_report):
    study_dir, _ = built_report
    for name in ("dice.png", "hd95.png", "paired.png", "learning_curve.png"):
        assert (study_dir / name).read_bytes().startswith(b"\x89PNG"), name


def test_html_is_self_contained(built_report):
    study_dir, _ = built_report
    page = (study_dir / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    targets = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]*)""", page)
    assert targets, "no images in the page"
    assert [target[:30] for target in targets if not target.startswith("data:image/png;base64,")] == []
    assert "http://" not in page
    assert "https://" not in page
    assert "<script" not in page
    assert "<link" not in page
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    # dice, hd95, paired, learning curve and one augmented sample per strategy.
    assert len(images) == 4 + len(STRATEGIES)
    for encoded in images:
        assert base64.b64decode(encoded).startswith(b"\x89PNG")


def test_html_contains_every_strategy(built_report):
    study_dir, _ = built_report
    page = (study_dir / "report.html").read_text()
    for strategy in STRATEGIES:
        assert f"<td>{strategy}</td>" in page
    assert "<td>0.8850 [" in page


def test_augmented_samples_per_strategy(built_report):
    study_dir, path = built_report
    report = path.read_text()
    for strategy in STRATEGIES:
        sample = study_dir / f"augment-{strategy}.png"
        assert sample.read_bytes().startswith(b"\x89PNG")
        assert f"](augment-{strategy}.png)" in report
    # The first run's first training case (fold 0 trains on fold 1's validation cases).
    assert "Training case `case_003`" in report


def test_unreachable_dataset_leaves_samples_out(tmp_path, caplog):
    study_dir = fabricate_study(tmp_path, dataset_path=tmp_path / "moved-away")
    (study_dir / "augment-none.png").write_bytes(b"stale")

    with caplog.at_level(logging.INFO, logger="studies.report"):
        path = write_report(study_dir)

    assert path is not None
    assert list(study_dir.glob("augment-*.png")) == []
    assert "leaving the augmented samples out" in caplog.text
    assert "moved-away" in caplog.text
    report = path.read_text()
    assert "augmented samples are left out" in report
    assert "](augment-" not in report
    assert "| nonrigid | 0.5 |" in report


def test_rebuild_gives_identical_tables(built_report, tmp_path):
    study_dir, _ = built_report
    before = {name: (study_dir / name).read_text() for name in ("results.csv", "summary.csv", "paired.csv", "report.md")}
    write_report(study_dir)
    for name, text in before.items():
        assert (study_dir / name).read_text() == text, name


def test_missing_baseline_fraction_has_no_paired_rows(tmp_path):
    study_dir = fabricate_study(tmp_path)
    for run_dir in study_dir.glob("none-frac0.5-*"):
        (run_dir / "metrics.json").unlink()

    report = write_report(study_dir).read_text()

    paired = read_csv(study_dir / "paired.csv")
    assert {float(r["train_fraction"]) for r in paired} == {1.0}
    assert "only 10 of 12 runs have finished" in report


def test_study_without_finished_runs(tmp_path):
    study_dir = fabricate_study(tmp_path)
    for metrics in study_dir.glob("*/metrics.json"):
        metrics.unlink()
    assert write_report(study_dir) is None
    assert not (study_dir / "report.html").exists()


def test_corrupt_study_json(tmp_path):
    from studies.errors import SpecError

    study_dir = fabricate_study(tmp_path)
    study = json.loads((study_dir / "study.json").read_text())
    del study["strategies"]
    (study_dir / "study.json").write_text(json.dumps(study))
    with pytest.raises(SpecError, match=r"study\.json is corrupt \(missing key 'strategies'\)"):
        write_report(study_dir)


def test_sample_augmentation_applies_worker_transforms(tmp_path):
    import torch

    from augment import build_strategy, build_worker_transform
    from segment.data import MSDDataset
    from studies.report_plots import _TrainingAugmentation, write_augmentation_samples

    case = MSDDataset(make_msd_dataset(tmp_path / "Synthetic", n_cases=1)).load("case_000")
    config = {"transforms": [], "worker_transforms": [{"bias_field": {"coefficients": 0.5, "p": 1.0}}]}
    batch = {
        "image": torch.from_numpy(case.image)[None],
        "label": torch.from_numpy(case.label)[None].long(),
        "spacing": torch.as_tensor(case.spacing)[None],
    }
    augmentation = _TrainingAugmentation(build_strategy(config), build_worker_transform(config))

    first = augmentation(batch, torch.Generator().manual_seed(0))
    second = augmentation(batch, torch.Generator().manual_seed(0))

    assert not torch.equal(first["image"], batch["image"])
    # The draw number seeds the worker transform, so two draws differ.
    assert not torch.equal(first["image"], second["image"])
    assert torch.equal(first["label"], batch["label"])
    written = write_augmentation_samples(case, {"artifacts": config}, tmp_path / "out")
    assert written == {"artifacts": "augment-artifacts.png"}
    assert (tmp_path / "out" / "augment-artifacts.png").read_bytes().startswith(b"\x89PNG")


def test_sample_stems_of_strategy_files():
    from studies.report import _unique_stems

    stems = _unique_stems(["none", "a/heavy.yaml", "b/heavy.yaml", "my strategy.yml"])
    assert stems == {"none": "none", "a/heavy.yaml": "heavy", "b/heavy.yaml": "heavy-2", "my strategy.yml": "my_strategy"}
