"""Reads a wandb offline run's transaction log (run-<id>.wandb): the records wandb
wrote, parsed with wandb's own protobuf definitions (wandb_internal_pb2.Record).
The file is wandb's LevelDB-style log: a 7-byte header (":W&B", magic, version),
then 32 KiB blocks of chunks, each with a 7-byte header (CRC32C, length, type:
1 full, 2 first, 3 middle, 4 last)."""

from __future__ import annotations

import struct
from pathlib import Path

BLOCK = 32768
HEADER = 7


def records(path: Path) -> list:
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a wandb log"
    out, pending, pos = [], b"", HEADER
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # the rest of a block too small for a chunk header: padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        chunk = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind == 0 and length == 0:
            pos += BLOCK - pos % BLOCK if pos % BLOCK else 0
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            out.append(record)
            pending = b""
    return out


def value(item) -> object:
    """A history or summary item's value (wandb keeps it as JSON)."""
    import json

    return json.loads(item.value_json)


def key(item) -> str:
    return item.key or "/".join(item.nested_key)


def read_run(run_dir: Path) -> dict:
    """A job's offline wandb run (<run>/wandb/offline-run-*/): its name, group, project,
    config, history rows, final summary, saved files and exit code."""
    found = sorted((Path(run_dir) / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(found) == 1, f"{run_dir}: expected one offline wandb run, found {found}"
    out: dict = {"config": {}, "history": [], "summary": {}, "files": [], "exit": None}
    for record in records(found[0]):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out.update(name=record.run.display_name, group=record.run.run_group,
                       project=record.run.project)
            out["config"].update({i.key: value(i) for i in record.run.config.update})
        elif kind == "config":
            out["config"].update({i.key: value(i) for i in record.config.update})
        elif kind == "history":
            out["history"].append({key(i): value(i) for i in record.history.item})
        elif kind == "summary":
            out["summary"].update({key(i): value(i) for i in record.summary.update})
        elif kind == "files":
            out["files"] += [f.path for f in record.files.files]
        elif kind == "exit":
            out["exit"] = record.exit.exit_code
    return out
