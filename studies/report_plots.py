"""PNG plots of a study report: per-case distributions, paired differences, learning curves, augmented samples."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segment.files import atomic_write

logger = logging.getLogger(__name__)

# Augmented versions of the sample case per strategy, next to the original.
SAMPLE_DRAWS = 3


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> Path:
    plt = _pyplot()
    figure.tight_layout()
    atomic_write(path, lambda handle: figure.savefig(handle, format="png", dpi=110), binary=True)
    plt.close(figure)
    return path


def _boxes_per_fraction(values: Mapping[tuple[str, float], list[float]], strategies: list[str], *, ylabel: str):
    """Draw one panel per training fraction with a box and the jittered points of each strategy."""
    plt = _pyplot()
    fractions = sorted({fraction for _, fraction in values})
    width = max(4.0, 1.6 + 1.2 * len(strategies)) * len(fractions)
    figure, axes = plt.subplots(1, len(fractions), figsize=(width, 3.8), squeeze=False, sharey=True)
    # Fixed seed: the same results give the same picture.
    jitter = np.random.default_rng(0)
    for axis, fraction in zip(axes[0], fractions):
        present = [s for s in strategies if values.get((s, fraction))]
        data = [values[(s, fraction)] for s in present]
        if data:
            axis.boxplot(data, showmeans=True, showfliers=False)
            for position, points in enumerate(data, start=1):
                offsets = jitter.uniform(-0.15, 0.15, size=len(points))
                axis.scatter(position + offsets, points, s=10, alpha=0.6, color="C0", linewidths=0)
        axis.set_xticks(range(1, len(present) + 1), present, rotation=20)
        axis.set_title(f"training fraction {fraction:g}")
        axis.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    return figure, axes


def plot_case_distributions(values: Mapping[tuple[str, float], list[float]], strategies: list[str], path: Path, *, ylabel: str) -> Path:
    """Write box plots of a per-case metric, keyed by (strategy, training fraction), to ``path``."""
    figure, _ = _boxes_per_fraction(values, strategies, ylabel=ylabel)
    return _save(figure, path)


def plot_paired_differences(differences: Mapping[tuple[str, float], list[float]], strategies: list[str], baseline: str, path: Path) -> Path:
    """Write box plots of per-case Dice differences to the baseline, with the zero line, to ``path``."""
    figure, axes = _boxes_per_fraction(differences, [s for s in strategies if s != baseline], ylabel=f"Dice minus Dice of {baseline}, per case")
    for axis in axes[0]:
        axis.axhline(0.0, color="black", linewidth=0.8)
    return _save(figure, path)


def plot_learning_curves(summary: list[dict[str, Any]], strategies: list[str], path: Path) -> Path:
    """Write mean Dice against the number of training cases, one line per strategy with 95 % CI error bars.

    Each strategy is shifted sideways by a few per cent of the case count, so
    the error bars do not hide each other. The tick labels give the true counts.
    """
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7.0, 4.4))
    for index, strategy in enumerate(strategies):
        rows = sorted((row for row in summary if row["strategy"] == strategy), key=lambda row: row["train_cases"])
        if not rows:
            continue
        shift = 1.0 + 0.02 * (index - (len(strategies) - 1) / 2)
        means = np.array([row["dice_mean"] for row in rows])
        errors = np.array([means - [row["dice_mean_ci_low"] for row in rows], [row["dice_mean_ci_high"] for row in rows] - means])
        axis.errorbar(
            [row["train_cases"] * shift for row in rows], means, yerr=errors,
            marker="o", markersize=4, capsize=3, color=f"C{index % 10}", label=strategy,
        )
    all_cases = sorted({row["train_cases"] for row in summary})
    if all_cases and all_cases[-1] >= 4 * all_cases[0]:
        axis.set_xscale("log")
    axis.set_xticks(all_cases, [f"{cases:g}" for cases in all_cases])
    axis.minorticks_off()
    axis.set_xlabel("training cases (mean over folds)")
    axis.set_ylabel("mean foreground Dice, 95 % CI")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(figure, path)


class _TrainingAugmentation:
    """A strategy as training applies it: the per-sample worker transform first, then the batch pipeline.

    ``preview_grid`` calls it once per draw; the draw number seeds the worker transform.
    """

    def __init__(self, pipeline, worker_transform) -> None:
        self.pipeline = pipeline
        self.worker_transform = worker_transform
        self.draws = 0

    def __call__(self, batch: dict[str, Any], generator: torch.Generator) -> dict[str, Any]:
        if self.worker_transform is not None:
            images = [
                self.worker_transform(image, spacing=spacing, seed=0, index=self.draws * len(batch["image"]) + index)
                for index, (image, spacing) in enumerate(zip(batch["image"], batch["spacing"]))
            ]
            batch = {**batch, "image": torch.stack(images)}
        self.draws += 1
        return self.pipeline(batch, generator)


def write_augmentation_samples(case, strategy_configs: Mapping[str, dict[str, Any]], folder: Path) -> dict[str, str]:
    """Write one PNG per strategy with ``case`` and ``SAMPLE_DRAWS`` augmented versions of it.

    ``case`` is a loaded ``segment.data`` case and ``strategy_configs`` maps a
    file name stem to a resolved strategy mapping. Returns the written file
    names by stem. A strategy that ``augment`` cannot build is left out with a
    logged note.
    """
    from augment import StrategyError, build_strategy, build_worker_transform
    from augment.preview import preview_grid

    pair = {
        "image": torch.from_numpy(np.ascontiguousarray(case.image, dtype=np.float32)),
        "label": torch.from_numpy(np.ascontiguousarray(case.label)).long(),
        "spacing": torch.as_tensor(np.asarray(case.spacing, dtype=np.float64)),
    }
    written = {}
    for stem, config in strategy_configs.items():
        try:
            augmentation = _TrainingAugmentation(build_strategy(config), build_worker_transform(config))
        except StrategyError as error:
            logger.info("leaving the augmented samples of %s out of the report: %s", stem, error)
            continue
        name = f"augment-{stem}.png"
        preview_grid(augmentation, [pair], folder / name, draws=SAMPLE_DRAWS, seed=0)
        written[stem] = name
    logger.debug("wrote augmented samples of case %s for %d strategies", case.case_id, len(written))
    return written
