"""Time training steps of the quick study's U-Net with and without augmentation, side by side.

One training step here is what a run of the quick hippocampus study does per
optimiser step with ``num_workers=0``. It draws a batch of 8 random 32x48x32
patches from cases in memory (``segment.PatchDataset``) and moves it to the
device. It augments the batch with a strategy preset (``augment.build_strategy``).
Then it runs forward, Dice + cross-entropy loss, backward and one AdamW step of
``UNet(1, 3, features=(8, 16, 32, 64))``. Validation is not timed.

Every strategy trains its own copy of the same initial network. Within each
repeat, every strategy runs ``--steps`` consecutive steps, in an order rotated
from repeat to repeat, so load from other processes that changes during the run
affects all strategies alike. The report gives medians over repeats: time per
step and its parts, samples per second, and the step time divided by that of
``none`` in the same repeat. It also gives the augmentation's share of each
step: augmentation time divided by the rest of the same steps (loading and
training). That share compares parts measured within one second of each other,
so it is less affected by other processes than the ratio between strategies.

Patches come from the first ``--cases`` cases of Task04_Hippocampus under
``$MEDAUG_DATA`` (or ``--data-root``), or from synthetic volumes when neither
is set.

Run: ``python benchmarks/training_throughput.py [--threads 1] [--repeats 15] [--steps 2]``.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import default_collate

from augment import build_strategy, build_worker_transform, derive_generator
from segment import PatchDataset
from segment.data import Case, MSDDataset
from segment.losses import DiceCELoss
from segment.models import UNet

BATCH_SIZE = 8
PATCH_SIZE = (32, 48, 32)
FEATURES = (8, 16, 32, 64)
DEFAULT_STRATEGIES = ["none", "rigid", "nonrigid", "nnunet"]


@dataclass
class Timings:
    """Seconds per step of one strategy, one value per repeat for each part of the step."""

    load: list[float] = field(default_factory=list)
    augment: list[float] = field(default_factory=list)
    train: list[float] = field(default_factory=list)
    step: list[float] = field(default_factory=list)


def load_cases(data_root: str | None, count: int) -> tuple[list[Case], str]:
    """Load the first ``count`` hippocampus cases, or make synthetic ones when no data root is set; also return a description."""
    if data_root:
        dataset = MSDDataset(Path(data_root) / "Task04_Hippocampus")
        ids = [case.case_id for case in dataset.cases[:count]]
        return [dataset.load(case_id) for case_id in ids], f"{len(ids)} Task04_Hippocampus cases from {dataset.folder}"

    rng = np.random.default_rng(0)
    cases = []
    for index in range(count):
        # Hippocampus-sized volumes with two box classes, z-scored like the real loader's output.
        shape = (36, 50, 36)
        label = np.zeros(shape, dtype=np.int64)
        label[10:20, 15:30, 10:25] = 1
        label[20:26, 15:30, 10:25] = 2
        image = (rng.normal(size=shape) + label).astype(np.float32)
        cases.append(Case(f"synthetic_{index:03d}", image[None], label[None], np.eye(4), np.ones(3)))
    return cases, f"{count} synthetic 36x50x36 volumes (MEDAUG_DATA not set)"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StrategyTrainer:
    """One strategy's patch source, augmentation pipeline, network and optimiser."""

    def __init__(self, strategy: str, cases: list[Case], net: torch.nn.Module, device: torch.device, seed: int) -> None:
        self.strategy = strategy
        self.device = device
        self.seed = seed
        # Long enough for any run of this script; items are drawn lazily.
        self.patches = PatchDataset(cases, PATCH_SIZE, length=1 << 30, seed=seed, worker_transform=build_worker_transform(strategy))
        self.pipeline = build_strategy(strategy)
        self.net = copy.deepcopy(net).to(device)
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=3e-3, weight_decay=1e-5)
        self.loss = DiceCELoss()
        self.step_index = 0

    def step(self) -> tuple[float, float, float]:
        """Run one training step; return the seconds spent loading, augmenting and training."""
        started = time.perf_counter()
        start = self.step_index * BATCH_SIZE
        batch = default_collate([self.patches[index] for index in range(start, start + BATCH_SIZE)])
        batch = {key: value.to(self.device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}
        synchronize(self.device)
        loaded = time.perf_counter()

        batch = self.pipeline(batch, derive_generator(self.seed, self.step_index))
        synchronize(self.device)
        augmented = time.perf_counter()

        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(self.net(batch["image"]), batch["label"])
        loss.backward()
        self.optimizer.step()
        synchronize(self.device)
        finished = time.perf_counter()

        self.step_index += 1
        return loaded - started, augmented - loaded, finished - augmented


def measure(trainers: list[StrategyTrainer], repeats: int, steps: int, progress: Callable[[str], None]) -> dict[str, Timings]:
    """Per-step timings of every trainer, interleaved: each repeat runs ``steps`` steps of each, in rotated order."""
    for trainer in trainers:
        trainer.step()  # warm-up: first-call allocations and kernel selection
    timings = {trainer.strategy: Timings() for trainer in trainers}
    for repeat in range(repeats):
        order = trainers[repeat % len(trainers) :] + trainers[: repeat % len(trainers)]
        for trainer in order:
            parts = [trainer.step() for _ in range(steps)]
            entry = timings[trainer.strategy]
            entry.load.append(sum(p[0] for p in parts) / steps)
            entry.augment.append(sum(p[1] for p in parts) / steps)
            entry.train.append(sum(p[2] for p in parts) / steps)
            entry.step.append(sum(sum(p) for p in parts) / steps)
        progress(f"repeat {repeat + 1}/{repeats} done")
    return timings


def step_ratio(entry: Timings, baseline: Timings) -> float:
    """Return the median over repeats of this strategy's step time divided by the baseline's in the same repeat."""
    return statistics.median([value / base for value, base in zip(entry.step, baseline.step)])


def augmentation_share(entry: Timings) -> float:
    """Return the median over repeats of augmentation time divided by loading plus training time of the same steps."""
    return statistics.median([augment / (load + train) for augment, load, train in zip(entry.augment, entry.load, entry.train)])


def report(timings: dict[str, Timings], baseline: str) -> str:
    """Format a Markdown table of medians over repeats."""
    lines = [
        f"| strategy | step (ms) | samples/s | load (ms) | augment (ms) | forward + backward + AdamW (ms) | step / {baseline} step | augment / rest of step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for strategy, entry in timings.items():
        step = statistics.median(entry.step)
        lines.append(
            f"| {strategy} | {step * 1e3:.1f} | {BATCH_SIZE / step:.2f} | {statistics.median(entry.load) * 1e3:.1f} "
            f"| {statistics.median(entry.augment) * 1e3:.1f} | {statistics.median(entry.train) * 1e3:.1f} "
            f"| {step_ratio(entry, timings[baseline]):.3f} | {100 * augmentation_share(entry):.1f} % |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads value (default 1)")
    parser.add_argument("--repeats", type=int, default=15, help="interleaved repeats (default 15)")
    parser.add_argument("--steps", type=int, default=2, help="consecutive steps of one strategy per repeat (default 2)")
    parser.add_argument("--strategies", nargs="+", default=DEFAULT_STRATEGIES, help="strategy presets; the first is the baseline of the ratios")
    parser.add_argument("--cases", type=int, default=20, help="cases to draw patches from (default 20)")
    parser.add_argument("--data-root", default=os.environ.get("MEDAUG_DATA"), help="folder containing Task04_Hippocampus (default: $MEDAUG_DATA)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="training device (default: cuda when available)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cases, source = load_cases(args.data_root, args.cases)
    torch.manual_seed(0)
    net = UNet(1, 3, features=FEATURES)
    trainers = [StrategyTrainer(strategy, cases, net, device, seed=0) for strategy in args.strategies]

    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {hardware}, Python {platform.python_version()}")
    print(f"patches: {source}; batch {BATCH_SIZE}x1x{'x'.join(map(str, PATCH_SIZE))}; UNet features {FEATURES}")
    print(f"{args.repeats} repeats x {args.steps} steps per strategy, interleaved; medians over repeats")
    print(f"load average before: {', '.join(f'{value:.1f}' for value in os.getloadavg())}\n", flush=True)

    timings = measure(trainers, args.repeats, args.steps, progress=lambda message: print(message, flush=True))
    print(f"load average after: {', '.join(f'{value:.1f}' for value in os.getloadavg())}\n")
    print(report(timings, baseline=args.strategies[0]))
    print()
    baseline = timings[args.strategies[0]]
    for strategy in args.strategies[1:]:
        entry = timings[strategy]
        print(
            f"{strategy}: step {100 * (step_ratio(entry, baseline) - 1):+.1f} % against {args.strategies[0]}; "
            f"augmentation adds {100 * augmentation_share(entry):.1f} % to the rest of its steps"
        )


if __name__ == "__main__":
    main()
