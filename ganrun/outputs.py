"""What a run leaves behind besides TensorBoard: metrics.json, written atomically."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from ganrun.errors import UserError

METRICS_FILE = "metrics.json"
METRICS_LOG = "metrics.jsonl"  # one line per evaluation, with its protocol
CHECKPOINT_FILE = "last.ckpt"  # in checkpoints/, written atomically


def checkpoint_of(path: str) -> Path:
    """A checkpoint file, or a run directory's checkpoints/last.ckpt."""
    p = Path(path).expanduser()
    if p.is_dir():
        ckpt = p / "checkpoints" / CHECKPOINT_FILE
        if not ckpt.is_file():
            raise UserError(f"{path}: a directory without a checkpoint (expected {ckpt})")
        return ckpt
    if not p.is_file():
        raise UserError(f"{path}: no such file")
    return p


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write `payload` to `path` via a temporary file and a rename (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        json.dump(_finite(payload), f, indent=2, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


def _finite(value: Any) -> Any:
    """JSON has no NaN / Infinity: write them as strings a reader can still parse."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line (flushed, so a killed run keeps every finished evaluation)."""
    with open(path, "a") as f:
        f.write(json.dumps(_finite(record)) + "\n")
        f.flush()
        os.fsync(f.fileno())
