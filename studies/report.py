"""Study report: results table, per-case CSV and a plot, rebuilt from the run folders alone."""

from __future__ import annotations

import csv
import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from segment import mean_over_cases

from segment.files import atomic_write, write_csv, write_text

from .errors import SpecError
from .stats import bootstrap_ci, holm, wilcoxon_p

logger = logging.getLogger(__name__)


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


def _case_means(rows: list[dict[str, Any]], metric: str = "dice_mean") -> dict[tuple[str, float], dict[str, float]]:
    """Per (strategy, fraction): each case's ``metric``, averaged over seeds when there are several."""
    grouped: dict[tuple[str, float], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if metric in row:
            grouped[(row["strategy"], row["train_fraction"])][row["case_id"]].append(row[metric])
    return {key: {case: float(np.mean(values)) for case, values in cases.items()} for key, cases in grouped.items()}


def summarise(rows: list[dict[str, Any]], strategies: list[str], baseline: str) -> list[dict[str, Any]]:
    """Summarise each (strategy, fraction) over cases, with the paired comparison to the baseline.

    Each row has the mean, median and standard deviation of per-case foreground
    Dice and a bootstrap 95 % interval of the mean. It also has the mean per-case
    difference to the baseline and its Wilcoxon signed-rank p-value, which is
    Holm-adjusted across the strategies of the same training fraction.
    """
    case_means = _case_means(rows)
    hd95_means = _case_means(rows, "hd95_mean")
    fractions = sorted({fraction for _, fraction in case_means})
    table = []
    for fraction in fractions:
        reference = case_means.get((baseline, fraction), {})
        block = []
        for strategy in strategies:
            cases = case_means.get((strategy, fraction))
            if not cases:
                continue
            values = list(cases.values())
            mean, std, count = mean_over_cases(values)
            low, high = bootstrap_ci(values)
            paired = [cases[c] - reference[c] for c in sorted(cases) if c in reference]
            compared = bool(paired) and strategy != baseline
            block.append({
                "strategy": strategy,
                "train_fraction": fraction,
                "dice_mean": mean,
                "dice_ci_low": low,
                "dice_ci_high": high,
                "dice_median": float(np.median(values)),
                "dice_std": std,
                "hd95_mean": mean_over_cases(hd95_means.get((strategy, fraction), {}).values())[0],
                "cases": count,
                "delta_vs_baseline": float(np.mean(paired)) if compared else None,
                "paired_cases": len(paired) if compared else 0,
                "p_wilcoxon": wilcoxon_p(paired) if compared else float("nan"),
            })
        for row, adjusted in zip(block, holm([r["p_wilcoxon"] for r in block])):
            row["p_holm"] = None if np.isnan(adjusted) else adjusted
        table.extend(block)
    return table


def _plot(case_means: dict[tuple[str, float], dict[str, float]], strategies: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fractions = sorted({fraction for _, fraction in case_means})
    figure, axes = plt.subplots(1, len(fractions), figsize=(1.6 + 1.4 * len(strategies) * len(fractions), 3.6), squeeze=False, sharey=True)
    for axis, fraction in zip(axes[0], fractions):
        present = [s for s in strategies if (s, fraction) in case_means]
        data = [list(case_means[(s, fraction)].values()) for s in present]
        axis.boxplot(data, showmeans=True)
        axis.set_xticks(range(1, len(present) + 1), present, rotation=20)
        axis.set_title(f"training fraction {fraction:g}")
        axis.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("foreground Dice per case")
    figure.tight_layout()
    atomic_write(path, lambda handle: figure.savefig(handle, format="png", dpi=110), binary=True)
    plt.close(figure)


def write_report(study_dir: Path) -> Path | None:
    """Write ``report.md``, ``results.csv`` and ``dice.png`` for the finished runs in ``study_dir``."""
    study_file = study_dir / "study.json"
    try:
        study = json.loads(study_file.read_text())
        strategies = study["strategies"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise SpecError(f"{study_file} is corrupt ({type(error).__name__}: {error}); rerun `medaug study run` with the study file to rewrite it") from error
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

    write_csv(study_dir / "results.csv", rows)
    table = summarise(rows, strategies, baseline)
    _plot(_case_means(rows), strategies, study_dir / "dice.png")

    lines = [
        f"# Study `{study['name']}`",
        "",
        f"Dataset `{study['dataset']['name']}`, folds {study['folds']}, seeds {study['seeds']}, "
        f"{study['training']['max_steps']} training steps per run. Baseline: `{baseline}`.",
        "",
        "Foreground Dice per validation case (each case averaged over seeds first): mean with a bootstrap "
        "95 % interval, median and standard deviation. Δ is the mean per-case difference to the baseline; "
        "p is its two-sided Wilcoxon signed-rank p-value, Holm-adjusted across the strategies of a training fraction.",
        "",
        "| strategy | training fraction | mean Dice | 95 % CI | median | std | mean HD95 (mm) | cases | Δ vs baseline | p (Holm) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in table:
        delta = "—" if row["delta_vs_baseline"] is None else f"{row['delta_vs_baseline']:+.4f}"
        p_value = "—" if row["p_holm"] is None else f"{row['p_holm']:.3g}"
        hd95 = "—" if np.isnan(row["hd95_mean"]) else f"{row['hd95_mean']:.2f}"
        lines.append(
            f"| {row['strategy']} | {row['train_fraction']:g} | {row['dice_mean']:.4f} | "
            f"{row['dice_ci_low']:.4f}–{row['dice_ci_high']:.4f} | {row['dice_median']:.4f} | {row['dice_std']:.4f} | "
            f"{hd95} | {row['cases']} | {delta} | {p_value} |"
        )
    total_time = sum(m.get("wall_time_s", 0.0) for m in runs)
    lines += [
        "",
        "![Dice per case](dice.png)",
        "",
        "## Runs",
        "",
        f"Training and validation took {total_time / 60:.1f} minutes in all, on {runs[0].get('machine', 'an unrecorded machine')}.",
        "",
        "| run | train cases | val cases | steps | mean Dice | wall time (s) |",
        "|---|---|---|---|---|---|",
    ]
    order = {s: i for i, s in enumerate(strategies)}
    for metrics in sorted(runs, key=lambda m: (order.get(m["strategy"], len(order)), m["train_fraction"], m["fold"], m["seed"])):
        lines.append(
            f"| `{metrics['run_id']}` | {metrics['train_cases']} | {metrics['val_cases']} | {metrics['steps']} | "
            f"{metrics['dice_mean']:.4f} | {metrics.get('wall_time_s', float('nan')):.0f} |"
        )
    if stale:
        lines += ["", f"NOTE: {len(stale)} finished runs in this folder belong to an earlier version of the study file and are not included."]
    expected = len(study["strategies"]) * len(study["train_fractions"]) * len(study["folds"]) * len(study["seeds"])
    if len(runs) < expected:
        lines += ["", f"NOTE: only {len(runs)} of {expected} runs have finished; rerun the study to complete it."]
    path = study_dir / "report.md"
    write_text(path, "\n".join(lines) + "\n")
    return path
