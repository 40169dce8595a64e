"""Training one run on several processes (Lightning DDP): process ranks and gathering per-case validation rows.

Lightning's ``ddp`` strategy starts the extra processes of a node by running
the same command again (``LOCAL_RANK`` set in their environment), torchrun sets
``RANK``, and Slurm starts one task per process (``SLURM_PROCID``). Every
process runs the whole training path, so work that writes files must run on
global rank zero only, and validation results must be gathered from all ranks.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch.distributed as dist


def distributed_ready() -> bool:
    """Return whether a process group with more than one process is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_global_zero() -> bool:
    """Return whether this process is global rank zero, the one that writes a run's files.

    Before the process group exists, the rank is read from the environment
    that the launcher set. The order follows Lightning's own rank detection:
    ``LOCAL_RANK`` wins over ``SLURM_PROCID``, because an interactive Slurm
    shell sets ``SLURM_PROCID=0`` in every process that Lightning starts in it.
    A process started without any of these variables is rank zero unless
    ``NODE_RANK`` names another node.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    environment = os.environ
    if "RANK" in environment:
        return int(environment["RANK"]) == 0
    if "LOCAL_RANK" in environment:
        return int(environment["LOCAL_RANK"]) == 0 and int(environment.get("NODE_RANK", 0)) == 0
    if "SLURM_PROCID" in environment:
        return int(environment["SLURM_PROCID"]) == 0
    return int(environment.get("NODE_RANK", 0)) == 0


def gather_case_rows(rows: Sequence[dict[str, Any]], *, key: str = "case_id") -> list[dict[str, Any]]:
    """Merge the per-case rows of every process so that each case appears exactly once.

    ``torch.utils.data.DistributedSampler`` without shuffling (Lightning's
    default for validation) gives rank ``r`` of ``W`` the sample indices
    ``r, r + W, r + 2W, ...`` and, with ``drop_last=False``, pads the last
    round with samples from the start of the dataset, so some cases are
    evaluated twice (torch 2.13). Reading the gathered lists round by round restores the
    dataset order, and the later copy of a repeated case is dropped. Rows of
    one case are identical on every rank because the weights are.

    Without an initialised process group of more than one process, the rows
    are returned unchanged. Every process must call this, because it is a
    collective operation.

    Args:
        rows: this process's rows in the order it evaluated them, one per case.
        key: the field that identifies a case.

    Returns:
        The rows of all processes in dataset order, identical on every rank.
    """
    if not distributed_ready():
        return list(rows)

    parts: list[list[dict[str, Any]]] = [[] for _ in range(dist.get_world_size())]
    dist.all_gather_object(parts, list(rows))

    merged: list[dict[str, Any]] = []
    seen: set[Any] = set()
    for position in range(max(len(part) for part in parts)):
        for part in parts:
            if position < len(part) and part[position][key] not in seen:
                seen.add(part[position][key])
                merged.append(part[position])
    return merged
