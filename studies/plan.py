"""Estimate what a study will run and how long it will take, without training."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from augment import build_strategy, derive_generator
from segment.losses import DiceCELoss
from segment.models import build_model

from .runner import is_finished
from .spec import RunSpec, StudySpec, augmentation_reference, expand_runs, model_arguments

# Seconds per run for validation, data loading and W&B start-up. Measured on the
# quick hippocampus study on a 2-core CPU, so it is only an estimate for other datasets.
OVERHEAD_PER_RUN_S = 15.0


@dataclass
class PlannedRun:
    run: RunSpec
    finished: bool
    estimated_s: float


# The network step is timed for at most this long; a GPU-sized study on a CPU would
# otherwise spend many minutes on the estimate alone.
STEP_TIMING_BUDGET_S = 20.0


def measure_network_step(spec: StudySpec, *, steps: int = 5, budget_s: float = STEP_TIMING_BUDGET_S) -> float:
    """Seconds per optimiser step of the study's model, batch and patch on this machine, without augmentation.

    One warm-up step, then up to ``steps`` timed steps, stopping once ``budget_s``
    has passed; returns their median, which ignores steps slowed by other processes.
    """
    torch.manual_seed(0)
    model_kwargs = model_arguments(spec.model.model_dump(), spec.dataset.spatial_dims)
    net = build_model(model_kwargs.pop("name"), 1, 3, **model_kwargs)
    optimizer = torch.optim.AdamW(net.parameters())
    loss_function = DiceCELoss()
    shape = (spec.training.batch_size, 1, *spec.training.patch_size)
    image, label = torch.randn(shape), torch.randint(0, 3, shape)

    durations: list[float] = []
    began = time.perf_counter()
    for step in range(steps + 1):
        started = time.perf_counter()
        loss = loss_function(net(image), label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step > 0:
            durations.append(time.perf_counter() - started)
        if time.perf_counter() - began > budget_s:
            break
    return statistics.median(durations or [time.perf_counter() - began])


def measure_augmentation(spec: StudySpec, strategy: str | dict, *, steps: int = 3) -> float:
    """Seconds the strategy's batch pipeline takes on one training batch (median of ``steps``)."""
    pipeline = build_strategy(strategy)
    shape = (spec.training.batch_size, 1, *spec.training.patch_size)
    batch = {"image": torch.randn(shape), "label": torch.randint(0, 3, shape)}
    durations = []
    for step in range(steps):
        started = time.perf_counter()
        pipeline(batch, derive_generator(0, step))
        durations.append(time.perf_counter() - started)
    return statistics.median(durations)


def plan_study(spec: StudySpec, *, study_path: Path | None, output_dir: Path) -> list[PlannedRun]:
    """List every run of the study with its status and estimated training time in seconds."""
    study_dir = output_dir / spec.name
    network = measure_network_step(spec)
    anchor = study_path or Path(".")
    step_times = {
        strategy: network + measure_augmentation(spec, augmentation_reference(spec, strategy, anchor)) for strategy in spec.strategies
    }
    planned = []
    for run in expand_runs(spec, study_path):
        estimate = spec.training.max_steps * step_times[run.strategy] + OVERHEAD_PER_RUN_S
        planned.append(PlannedRun(run, is_finished(study_dir / run.run_id), estimate))
    return planned
