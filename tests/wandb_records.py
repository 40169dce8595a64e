"""Read the records of a W&B offline ``run-*.wandb`` file back, for tests.

wandb 0.31 has no public reader. The file is a 7-byte header followed by a
LevelDB-style log: 32 KiB blocks of chunks, each with a 7-byte header (CRC32C
as uint32, length as uint16, type as uint8: 1 full, 2 first, 3 middle, 4 last).
Joined chunks are serialised ``wandb_internal_pb2.Record`` messages.
"""

from __future__ import annotations

import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2

FILE_HEADER = 7
BLOCK = 32768
CHUNK_HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path) -> list[wandb_internal_pb2.Record]:
    data = Path(path).read_bytes()
    offset = FILE_HEADER
    records, pending = [], b""
    while offset + CHUNK_HEADER <= len(data):
        left_in_block = BLOCK - offset % BLOCK
        if left_in_block < CHUNK_HEADER:
            offset += left_in_block  # block trailer padding
            continue
        _, length, kind = struct.unpack("<IHB", data[offset : offset + CHUNK_HEADER])
        chunk = data[offset + CHUNK_HEADER : offset + CHUNK_HEADER + length]
        offset += CHUNK_HEADER + length
        if kind == 0 and length == 0:
            continue
        if kind == FULL:
            pending = chunk
        elif kind == FIRST:
            pending = chunk
            continue
        elif kind == MIDDLE:
            pending += chunk
            continue
        elif kind == LAST:
            pending += chunk
        else:
            raise ValueError(f"{path}: unknown chunk type {kind} at byte {offset}")
        record = wandb_internal_pb2.Record()
        record.ParseFromString(pending)
        records.append(record)
        pending = b""
    return records


def history_keys_and_values(records) -> dict[str, list[str]]:
    """Every logged history key with its JSON-encoded values in order."""
    values: dict[str, list[str]] = {}
    for record in records:
        if record.WhichOneof("record_type") == "history":
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                values.setdefault(key, []).append(item.value_json)
    return values
