"""Study report: statistics tables, plots, report.md, report.html and results.csv, rebuilt from the run folders alone.

Files written into the study folder::

    results.csv           one row per (run, validation case)
    summary.csv           per strategy and training fraction: Dice and HD95 with bootstrap 95 % CIs
    paired.csv            per strategy and training fraction: paired Dice difference to the baseline
    dice.png, hd95.png    per-case distributions
    paired.png            per-case differences to the baseline
    learning_curve.png    mean Dice against the number of training cases
    augment-<name>.png    a training case and augmented versions of it, per strategy
    report.md, report.html
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from segment import mean_over_cases
from segment.errors import DataError
from segment.files import write_csv, write_text

from .errors import SpecError
from .report_plots import plot_case_distributions, plot_learning_curves, plot_paired_differences, write_augmentation_samples
from .report_render import Block, Heading, Image, Paragraph, Table, render_html, render_markdown
from .stats import bootstrap_ci, holm, wilcoxon_p
from .tracking import log_study_summary

logger = logging.getLogger(__name__)

SAMPLE_PREFIX = "augment-"


def collect_results(study_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Metrics of every finished run and one row per (run, case), read from ``study_dir``."""
    runs, rows = [], []
    for metrics_file in sorted(study_dir.glob("*/metrics.json")):
        per_case = metrics_file.parent / "per_case.csv"
        try:
            metrics = json.loads(metrics_file.read_text())
        except json.JSONDecodeError as error:
            raise SpecError(f"{metrics_file} is corrupt ({error}); delete {metrics_file.parent} and rerun the study to train that run again") from error
        if not per_case.is_file():
            raise SpecError(f"{per_case} is missing; delete {metrics_file.parent} and rerun the study to train that run again")
        runs.append(metrics)
        with open(per_case, newline="") as handle:
            for row in csv.DictReader(handle):
                rows.append({
                    "run_id": metrics["run_id"],
                    "strategy": metrics["strategy"],
                    "train_fraction": metrics["train_fraction"],
                    "fold": metrics["fold"],
                    "seed": metrics["seed"],
                    **{k: (v if k == "case_id" else float(v)) for k, v in row.items()},
                })
    return runs, rows


def case_values(rows: list[dict[str, Any]], metric: str = "dice_mean") -> dict[tuple[str, float], dict[str, float]]:
    """Per (strategy, fraction): each case's ``metric``, averaged over seeds when there are several."""
    grouped: dict[tuple[str, float], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if metric in row:
            grouped[(row["strategy"], row["train_fraction"])][row["case_id"]].append(row[metric])
    return {key: {case: float(np.mean(values)) for case, values in cases.items()} for key, cases in grouped.items()}


def _describe(values: list[float], prefix: str) -> dict[str, float]:
    """Mean and median of ``values`` with bootstrap 95 % CIs, as ``<prefix>_mean``, ``<prefix>_mean_ci_low`` and so on."""
    described = {}
    for name, statistic in (("mean", np.mean), ("median", np.median)):
        low, high = bootstrap_ci(values, statistic=statistic)
        described[f"{prefix}_{name}"] = float(statistic(values)) if values else float("nan")
        described[f"{prefix}_{name}_ci_low"] = low
        described[f"{prefix}_{name}_ci_high"] = high
    return described


def summarise(rows: list[dict[str, Any]], strategies: list[str], train_cases: dict[tuple[str, float], float] | None = None) -> list[dict[str, Any]]:
    """Summarise per-case Dice and HD95 of each (strategy, fraction) over cases.

    Each row has the mean and the median of per-case foreground Dice and HD95,
    each with a percentile bootstrap 95 % CI. It also has the standard deviation
    of Dice, the number of validation cases, and the mean number of training
    cases over the runs when ``train_cases`` gives it. Rows are ordered by
    fraction, then by the order of ``strategies``.
    """
    dice = case_values(rows, "dice_mean")
    hd95 = case_values(rows, "hd95_mean")
    table = []
    for fraction in sorted({fraction for _, fraction in dice}):
        for strategy in strategies:
            cases = dice.get((strategy, fraction))
            if not cases:
                continue
            values = list(cases.values())
            row = {
                "strategy": strategy,
                "train_fraction": fraction,
                "train_cases": (train_cases or {}).get((strategy, fraction), float("nan")),
                "cases": len(values),
                **_describe(values, "dice"),
                "dice_std": mean_over_cases(values)[1],
                **_describe(list(hd95.get((strategy, fraction), {}).values()), "hd95"),
            }
            table.append(row)
    return table


def compare_to_baseline(rows: list[dict[str, Any]], strategies: list[str], baseline: str) -> list[dict[str, Any]]:
    """Compare each strategy's per-case Dice with the baseline's on the same cases, per training fraction.

    Each row has the mean per-case difference (strategy minus baseline) with a
    bootstrap 95 % CI, the median difference and the number of cases that got
    better and worse. It also has the two-sided Wilcoxon signed-rank p-value and
    that p-value Holm-adjusted across the strategies of the same training
    fraction. Fractions without baseline results give no rows.
    """
    dice = case_values(rows, "dice_mean")
    table = []
    for fraction in sorted({fraction for _, fraction in dice}):
        reference = dice.get((baseline, fraction))
        if not reference:
            continue
        block = []
        for strategy in strategies:
            cases = dice.get((strategy, fraction))
            if strategy == baseline or not cases:
                continue
            differences = [cases[case] - reference[case] for case in sorted(cases) if case in reference]
            low, high = bootstrap_ci(differences)
            block.append({
                "strategy": strategy,
                "train_fraction": fraction,
                "paired_cases": len(differences),
                "dice_delta_mean": float(np.mean(differences)) if differences else float("nan"),
                "dice_delta_ci_low": low,
                "dice_delta_ci_high": high,
                "dice_delta_median": float(np.median(differences)) if differences else float("nan"),
                "better_cases": sum(d > 0 for d in differences),
                "worse_cases": sum(d < 0 for d in differences),
                "p_wilcoxon": wilcoxon_p(differences),
            })
        for row, adjusted in zip(block, holm([row["p_wilcoxon"] for row in block])):
            row["p_holm"] = adjusted
        table.extend(block)
    return table


def paired_differences(rows: list[dict[str, Any]], baseline: str) -> dict[tuple[str, float], list[float]]:
    """Per (strategy, fraction): per-case Dice minus the baseline's Dice on the same case."""
    dice = case_values(rows, "dice_mean")
    differences = {}
    for (strategy, fraction), cases in dice.items():
        reference = dice.get((baseline, fraction), {})
        if strategy != baseline and reference:
            differences[(strategy, fraction)] = [cases[case] - reference[case] for case in sorted(cases) if case in reference]
    return differences


def read_study(study_dir: Path) -> dict[str, Any]:
    """Return the resolved study that ``medaug study run`` stored in ``study_dir/study.json``."""
    study_file = study_dir / "study.json"
    if not study_file.is_file():
        raise SpecError(f"{study_dir} is not a study results folder (no study.json); give the folder that `medaug study run` wrote")
    try:
        study = json.loads(study_file.read_text())
    except json.JSONDecodeError as error:
        raise SpecError(f"{study_file} is corrupt ({error}); rerun `medaug study run` with the study file to rewrite it") from error
    if not isinstance(study, dict):
        raise SpecError(f"{study_file} is corrupt (not a JSON object); rerun `medaug study run` with the study file to rewrite it")
    missing = [key for key in ("name", "dataset", "strategies", "folds", "seeds", "train_fractions", "training") if key not in study]
    if missing:
        raise SpecError(f"{study_file} is corrupt (missing key {missing[0]!r}); rerun `medaug study run` with the study file to rewrite it")
    return study


def sample_stem(strategy: str) -> str:
    """File-name stem of a strategy: the preset name, or the stem of a strategy YAML file."""
    stem = Path(strategy).stem if strategy.endswith((".yaml", ".yml")) else strategy
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem)


def write_report(study_dir: Path, *, data_root: str | Path | None = None) -> Path | None:
    """Write the report files listed in the module docstring for the finished runs in ``study_dir``.

    ``data_root`` locates the study's dataset for the augmented samples when
    the study names its dataset by name only; default ``$MEDAUG_DATA``. When
    the dataset cannot be read, the samples are left out and a note is logged.
    Returns the path of ``report.md``, or ``None`` when no run has finished.
    """
    study = read_study(study_dir)
    strategies = study["strategies"]
    baseline = study.get("baseline") or strategies[0]
    runs, rows = collect_results(study_dir)
    current = set(study.get("run_ids", [metrics["run_id"] for metrics in runs]))
    stale = [metrics["run_id"] for metrics in runs if metrics["run_id"] not in current]
    if stale:
        logger.warning("leaving %d finished runs of an earlier version of the study out of the report: %s", len(stale), ", ".join(stale[:3]))
    runs = [metrics for metrics in runs if metrics["run_id"] in current]
    rows = [row for row in rows if row["run_id"] in current]
    if not runs:
        logger.warning("no finished runs in %s; no report written", study_dir)
        return None

    train_cases: dict[tuple[str, float], list[int]] = defaultdict(list)
    for metrics in runs:
        train_cases[(metrics["strategy"], metrics["train_fraction"])].append(metrics["train_cases"])
    summary = summarise(rows, strategies, {key: float(np.mean(counts)) for key, counts in train_cases.items()})
    paired = compare_to_baseline(rows, strategies, baseline)
    write_csv(study_dir / "results.csv", rows)
    write_csv(study_dir / "summary.csv", summary)
    write_csv(study_dir / "paired.csv", paired, columns=_PAIRED_COLUMNS)

    dice = {key: list(cases.values()) for key, cases in case_values(rows, "dice_mean").items()}
    hd95 = {key: list(cases.values()) for key, cases in case_values(rows, "hd95_mean").items()}
    plot_case_distributions(dice, strategies, study_dir / "dice.png", ylabel="foreground Dice per case")
    plot_case_distributions(hd95, strategies, study_dir / "hd95.png", ylabel="HD95 per case (mm)")
    plot_learning_curves(summary, strategies, study_dir / "learning_curve.png")
    differences = paired_differences(rows, baseline)
    if differences:
        plot_paired_differences(differences, strategies, baseline, study_dir / "paired.png")
    else:
        (study_dir / "paired.png").unlink(missing_ok=True)
    samples, sample_case = _write_samples(study, study_dir, runs, data_root)

    blocks = _report_blocks(study, baseline, runs, summary, paired, bool(differences), samples, sample_case, stale)
    path = study_dir / "report.md"
    write_text(study_dir / "report.html", render_html(blocks, title=f"Study {study['name']}", folder=study_dir))
    write_text(path, render_markdown(blocks))
    return path


_PAIRED_COLUMNS = [
    "strategy", "train_fraction", "paired_cases", "dice_delta_mean", "dice_delta_ci_low", "dice_delta_ci_high",
    "dice_delta_median", "better_cases", "worse_cases", "p_wilcoxon", "p_holm",
]


def _write_samples(study: dict[str, Any], study_dir: Path, runs: list[dict[str, Any]], data_root) -> tuple[dict[str, str], str | None]:
    """Write the augmented samples of every strategy on the first training case of the study's first finished run.

    Returns the written file names by strategy and the case id; both are empty
    when the dataset cannot be read. Sample files of earlier builds that are
    not rewritten are removed, so the folder never shows stale samples.
    """
    samples: dict[str, str] = {}
    case_id = None
    try:
        case = _load_sample_case(study, study_dir, runs, data_root)
    except (DataError, OSError, ValidationError, KeyError, json.JSONDecodeError) as error:
        logger.info("leaving the augmented samples out of the report: cannot read a training case of the dataset (%s)", error)
        case = None
    if case is not None:
        configs = _strategy_configs(study_dir, runs)
        stems = _unique_stems(list(configs))
        names = write_augmentation_samples(case, {stems[s]: config for s, config in configs.items()}, study_dir)
        samples = {strategy: names[stems[strategy]] for strategy in configs if stems[strategy] in names}
        case_id = case.case_id
    for old in study_dir.glob(f"{SAMPLE_PREFIX}*.png"):
        if old.name not in samples.values():
            old.unlink()
    return samples, case_id


def _unique_stems(strategies: list[str]) -> dict[str, str]:
    """File-name stem of each strategy, numbered when two strategy files share a name."""
    stems: dict[str, str] = {}
    for strategy in strategies:
        stem = sample_stem(strategy)
        candidate, number = stem, 2
        while candidate in stems.values():
            candidate, number = f"{stem}-{number}", number + 1
        stems[strategy] = candidate
    return stems


def _load_sample_case(study: dict[str, Any], study_dir: Path, runs: list[dict[str, Any]], data_root):
    # Imported here: the runner imports this module.
    from .runner import dataset_folder, open_dataset
    from .spec import StudySpec

    spec = StudySpec.model_validate({key: value for key, value in study.items() if key != "run_ids"})
    finished = {metrics["run_id"] for metrics in runs}
    first = next(run_id for run_id in study.get("run_ids", sorted(finished)) if run_id in finished)
    config = json.loads((study_dir / first / "config.json").read_text())
    dataset = open_dataset(spec, dataset_folder(spec, data_root))
    return dataset.load(config["train_cases"][0])


def _strategy_configs(study_dir: Path, runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Read the resolved strategy mapping of each strategy from the config of one of its finished runs."""
    configs = {}
    for metrics in sorted(runs, key=lambda m: m["run_id"]):
        if metrics["strategy"] not in configs:
            config = json.loads((study_dir / metrics["run_id"] / "config.json").read_text())
            configs[metrics["strategy"]] = config["strategy_config"]
    return configs


def _ci(low: float, high: float, digits: int) -> str:
    return "[—]" if np.isnan(low) else f"[{low:.{digits}f}, {high:.{digits}f}]"


def _value(value: float, digits: int) -> str:
    return "—" if value is None or np.isnan(value) else f"{value:.{digits}f}"


def _p_value(value: float) -> str:
    return "—" if value is None or np.isnan(value) else f"{value:.3g}"


def _report_blocks(study, baseline, runs, summary, paired, has_paired_plot, samples, sample_case, stale) -> list[Block]:
    strategies = study["strategies"]
    total_time = sum(m.get("wall_time_s", 0.0) for m in runs)
    blocks: list[Block] = [
        Heading(1, f"Study `{study['name']}`"),
        Paragraph(
            f"Dataset `{study['dataset']['name']}`, folds {study['folds']}, seeds {study['seeds']}, "
            f"{study['training']['max_steps']} training steps per run. Baseline: `{baseline}`. "
            f"Training and validation took {total_time / 60:.1f} minutes in all, on {runs[0].get('machine', 'an unrecorded machine')}."
        ),
        Heading(2, "Dice and HD95 per strategy and training fraction"),
        Paragraph(
            "Foreground Dice and HD95 per validation case, each case averaged over seeds first; validation cases of "
            "different folds are pooled. Intervals are percentile bootstrap 95 % confidence intervals over cases "
            "(10,000 resamples). Training cases are the mean over the runs of a training fraction."
        ),
        Table(
            ["strategy", "training fraction", "training cases", "validation cases", "mean Dice [95 % CI]", "median Dice [95 % CI]",
             "mean HD95 mm [95 % CI]", "median HD95 mm [95 % CI]"],
            [
                [row["strategy"], f"{row['train_fraction']:g}", f"{row['train_cases']:g}", str(row["cases"]),
                 f"{row['dice_mean']:.4f} {_ci(row['dice_mean_ci_low'], row['dice_mean_ci_high'], 4)}",
                 f"{row['dice_median']:.4f} {_ci(row['dice_median_ci_low'], row['dice_median_ci_high'], 4)}",
                 f"{_value(row['hd95_mean'], 2)} {_ci(row['hd95_mean_ci_low'], row['hd95_mean_ci_high'], 2)}",
                 f"{_value(row['hd95_median'], 2)} {_ci(row['hd95_median_ci_low'], row['hd95_median_ci_high'], 2)}"]
                for row in summary
            ],
        ),
        Image("dice.png", "Foreground Dice per case"),
        Image("hd95.png", "HD95 per case"),
        Heading(2, f"Paired differences against `{baseline}`"),
    ]
    if paired:
        blocks += [
            Paragraph(
                f"Δ is a case's Dice minus the Dice of `{baseline}` on the same case. Better and worse count the cases "
                "with Δ above and below zero. p is the two-sided Wilcoxon signed-rank p-value of the Δ values; "
                "Holm adjusts it across the strategies of a training fraction."
            ),
            Table(
                ["training fraction", "strategy", "paired cases", "mean Δ Dice [95 % CI]", "median Δ Dice", "better / worse", "p (Wilcoxon)", "p (Holm)"],
                [
                    [f"{row['train_fraction']:g}", row["strategy"], str(row["paired_cases"]),
                     f"{row['dice_delta_mean']:+.4f} {_ci(row['dice_delta_ci_low'], row['dice_delta_ci_high'], 4)}",
                     f"{row['dice_delta_median']:+.4f}", f"{row['better_cases']} / {row['worse_cases']}",
                     _p_value(row["p_wilcoxon"]), _p_value(row["p_holm"])]
                    for row in paired
                ],
            ),
        ]
        if has_paired_plot:
            blocks.append(Image("paired.png", f"Per-case Dice difference to {baseline}"))
    else:
        blocks.append(Paragraph(f"No finished runs of the baseline `{baseline}` share cases with other strategies, so there is no paired comparison."))

    blocks += [
        Heading(2, "Dice against the number of training cases"),
        Paragraph("Mean foreground Dice over validation cases with its bootstrap 95 % CI as error bars."),
        Image("learning_curve.png", "Mean Dice against training cases"),
        Heading(2, "Augmented samples"),
    ]
    if samples:
        blocks.append(Paragraph(
            f"Training case `{sample_case}`, middle slice along the last axis, labels as contours: the original, "
            f"then augmented versions drawn as in training (worker transforms, then the batch pipeline)."
        ))
        for strategy in strategies:
            if strategy in samples:
                blocks += [Heading(3, f"`{strategy}`"), Image(samples[strategy], f"Augmented samples of {strategy}")]
    else:
        blocks.append(Paragraph("NOTE: the dataset was not readable when this report was built, so augmented samples are left out; "
                                "rebuild with `medaug study report DIR --data-root DATA` to add them."))

    blocks += [Heading(2, "Runs"), _runs_table(runs, strategies)]
    if stale:
        blocks.append(Paragraph(f"NOTE: {len(stale)} finished runs in this folder belong to an earlier version of the study file and are not included."))
    expected = len(strategies) * len(study["train_fractions"]) * len(study["folds"]) * len(study["seeds"])
    if len(runs) < expected:
        blocks.append(Paragraph(f"NOTE: only {len(runs)} of {expected} runs have finished; rerun the study to complete it."))
    return blocks


def _runs_table(runs: list[dict[str, Any]], strategies: list[str]) -> Table:
    order = {s: i for i, s in enumerate(strategies)}
    ordered = sorted(runs, key=lambda m: (order.get(m["strategy"], len(order)), m["train_fraction"], m["fold"], m["seed"]))
    return Table(
        ["run", "training cases", "validation cases", "steps", "mean Dice", "wall time (s)"],
        [
            [f"`{m['run_id']}`", str(m["train_cases"]), str(m["val_cases"]), str(m["steps"]), f"{m['dice_mean']:.4f}",
             f"{m.get('wall_time_s', float('nan')):.0f}"]
            for m in ordered
        ],
    )


def log_report_summary(study_dir: Path, *, mode: str | None = None) -> str | None:
    """Log the report tables and plots of ``study_dir`` as the study's W&B summary run.

    ``mode`` (offline, online or disabled) defaults to the tracking mode
    stored with the study. Returns the W&B run folder, or ``None`` when
    tracking is disabled, no report has been built, or W&B failed (logged).
    """
    from .spec import TrackingSpec

    study = read_study(study_dir)
    try:
        tracking = TrackingSpec.model_validate({**study.get("tracking", {}), **({"mode": mode} if mode else {})})
    except ValidationError as error:
        raise SpecError(f"invalid W&B tracking settings for {study_dir}: {error.errors()[0]['msg']}; the mode must be offline, online or disabled") from error
    if tracking.mode == "disabled":
        return None
    if not (study_dir / "summary.csv").is_file():
        logger.warning("no report tables in %s; build the report before logging its W&B summary", study_dir)
        return None
    config = {key: value for key, value in study.items() if key != "run_ids"}
    config["runs"] = len(study.get("run_ids", []))
    return log_study_summary(study_dir, tracking, study=study["name"], config=config)
