"""One run trained with Lightning DDP on two CPU processes (gloo) against a single-process evaluation.

The training script runs in a subprocess because Lightning's ``ddp`` strategy
starts the second process by running the same command again.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch.utils.data import DistributedSampler

from segment.checkpoint import load_checkpoint
from segment.data import MSDDataset
from segment.distributed import gather_case_rows, is_global_zero
from segment.inference import predict_labels
from segment.metrics import dice_per_class, mean_over_cases
from segment.train_config import TrainingOptions
from tests.conftest import make_msd_dataset
from tests.wandb_records import read_records

REPOSITORY = Path(__file__).resolve().parents[2]

TRAIN_SCRIPT = textwrap.dedent(
    """
    import json
    import sys
    from pathlib import Path

    import torch

    torch.set_num_threads(1)

    from segment.data import MSDDataset
    from segment.train_config import TrainingOptions
    from segment.training import train_segmenter
    from studies.spec import TrackingSpec
    from studies.tracking import finish_wandb, make_wandb_logger

    output, data = Path(sys.argv[1]), Path(sys.argv[2])
    dataset = MSDDataset(data)
    cases = {case.case_id: dataset.load(case.case_id) for case in dataset.cases}
    train_ids, val_ids = json.loads(sys.argv[3]), json.loads(sys.argv[4])
    options = TrainingOptions(
        max_steps=4, batch_size=2, patch_size=[8, 8, 8], val_every_steps=2, threads=1,
        accelerator="cpu", devices=2, strategy="ddp",
    )
    wandb_logger = make_wandb_logger(TrackingSpec(mode="offline"), study="ddp", run_id="ddp-run", run_dir=output, config={"strategy": "nonrigid"})

    def finish(per_case, metrics):
        return {"wandb_dir": finish_wandb(wandb_logger, per_case=per_case, summary={"dice_mean": metrics["dice_mean"]})}

    metrics, per_case = train_segmenter(
        [cases[c] for c in train_ids],
        [cases[c] for c in val_ids],
        num_classes=3,
        class_names=["first", "second"],
        model={"name": "unet", "features": [4, 8]},
        augmentation="nonrigid",
        options=options,
        seed=0,
        output_dir=output,
        run_id="ddp-run",
        config={"strategy": "nonrigid"},
        lightning_logger=wandb_logger,
        on_finish=finish,
    )
    rank = torch.distributed.get_rank()
    (output.parent / f"rank{rank}.json").write_text(json.dumps([row["case_id"] for row in per_case]))
    """
)


@pytest.mark.slow
def test_ddp_two_processes_count_each_case_once(tmp_path):
    # Three validation cases on two processes: DistributedSampler pads rank 1 with case 0 again.
    data = make_msd_dataset(tmp_path / "Synthetic", n_cases=5)
    train_ids, val_ids = ["case_000", "case_001"], ["case_002", "case_003", "case_004"]
    script = tmp_path / "train_ddp.py"
    script.write_text(TRAIN_SCRIPT)
    output = tmp_path / "runs" / "ddp-run"
    environment = {key: value for key, value in os.environ.items() if key not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "SLURM_PROCID", "WANDB_API_KEY")}
    environment.update(PYTHONPATH=str(REPOSITORY), MASTER_ADDR="127.0.0.1", OMP_NUM_THREADS="1", WANDB_MODE="offline")

    completed = subprocess.run(
        [sys.executable, str(script), str(output), str(data), json.dumps(train_ids), json.dumps(val_ids)],
        cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]

    # Per-case rows: every validation case exactly once, in dataset order, on both ranks.
    rows = (output / "per_case.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == val_ids
    for rank in (0, 1):
        assert json.loads((tmp_path / "runs" / f"rank{rank}.json").read_text()) == val_ids
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["val_cases"] == 3
    assert metrics["steps"] == 4

    # One W&B run, written by rank zero only, anywhere under the test folder.
    run_files = sorted(tmp_path.rglob("run-*.wandb"))
    assert len(run_files) == 1, run_files
    assert run_files[0].parent.parent == output / "wandb"

    # Logged steps increase across training and validation entries.
    history = [_history_entry(record) for record in read_records(run_files[0]) if record.WhichOneof("record_type") == "history"]
    steps = [int(entry["_step"]) for entry in history]
    assert steps == list(range(len(history)))
    global_steps = [float(entry["trainer/global_step"]) for entry in history]
    assert global_steps == sorted(global_steps)
    # Lightning logs a validation inside fit at the index of the last training batch: 1 and 3 for steps 2 and 4.
    validation_steps = [float(entry["trainer/global_step"]) for entry in history if "val/dice_mean" in entry]
    assert validation_steps == [1.0, 3.0]

    # The mean Dice of the run equals a single-process evaluation of its checkpoint.
    net, _ = load_checkpoint(output / "model.pt")
    dataset = MSDDataset(data)
    dice = []
    for case_id in val_ids:
        case = dataset.load(case_id)
        prediction = predict_labels(net, torch.from_numpy(case.image)[None], net.divisor)[0]
        per_class = dice_per_class(prediction, torch.from_numpy(case.label)[0], [1, 2])
        dice.append(sum(per_class.values()) / len(per_class))
    assert metrics["dice_mean"] == pytest.approx(mean_over_cases(dice)[0], abs=1e-6)


def _history_entry(record) -> dict[str, str]:
    return {item.key or "/".join(item.nested_key): item.value_json for item in record.history.item}


def _gather_in_process(rank: int, world_size: int, port: int, output: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        indices = list(DistributedSampler(range(5), num_replicas=world_size, rank=rank, shuffle=False))
        rows = [{"case_id": f"case_{index}", "dice_mean": index / 10} for index in indices]
        merged = gather_case_rows(rows)
    finally:
        torch.distributed.destroy_process_group()
    Path(output, f"rank{rank}.json").write_text(json.dumps({"evaluated": indices, "merged": merged}))


@pytest.mark.slow
def test_gather_drops_sampler_padding(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    torch.multiprocessing.spawn(_gather_in_process, args=(2, port, str(tmp_path)), nprocs=2)

    expected = [{"case_id": f"case_{index}", "dice_mean": index / 10} for index in range(5)]
    for rank, evaluated in ((0, [0, 2, 4]), (1, [1, 3, 0])):
        result = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert result["evaluated"] == evaluated
        assert result["merged"] == expected


def test_gather_without_process_group_keeps_rows():
    rows = [{"case_id": "b", "dice_mean": 0.5}, {"case_id": "a", "dice_mean": 0.25}]

    assert gather_case_rows(rows) == rows


@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        ({}, True),
        ({"LOCAL_RANK": "1"}, False),
        ({"LOCAL_RANK": "0", "NODE_RANK": "1"}, False),
        ({"LOCAL_RANK": "0", "SLURM_PROCID": "3"}, True),
        ({"SLURM_PROCID": "1"}, False),
        ({"RANK": "0", "LOCAL_RANK": "1"}, True),
        ({"NODE_RANK": "2"}, False),
    ],
)
def test_global_zero_from_launcher_environment(monkeypatch, environment, expected):
    for key in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(key, raising=False)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)

    assert is_global_zero() is expected


@pytest.mark.parametrize("strategy", ["ddp_spawn", "ddp_fork", "ddp_notebook"])
def test_training_options_reject_spawned_strategies(strategy):
    with pytest.raises(ValueError, match="use 'ddp'"):
        TrainingOptions(max_steps=1, patch_size=[8, 8, 8], devices=2, strategy=strategy)


def test_training_options_split_batch_among_processes():
    options = TrainingOptions(max_steps=1, batch_size=8, patch_size=[8, 8, 8], devices=2, num_nodes=2)

    assert options.processes == 4
    with pytest.raises(ValueError, match="batch_size 6 must be divisible by the 4 training processes"):
        TrainingOptions(max_steps=1, batch_size=6, patch_size=[8, 8, 8], devices=2, num_nodes=2)
