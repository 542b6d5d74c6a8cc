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


NON_FINITE = "non_finite"  # beside values written as null: {name: "inf" | "-inf" | "nan"}


def _finite(value: Any) -> Any:
    """JSON has no NaN or Infinity (Python writes them, most readers refuse them): a
    non-finite number in a dict is written as null, and the dict gets
    `"non_finite": {name: "inf"}` saying what it was. In a list, null alone."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        out, why = {}, {}
        for k, v in value.items():
            if isinstance(v, float) and not math.isfinite(v):
                why[k] = str(v)
            out[k] = _finite(v)
        if why:
            out[NON_FINITE] = why
        return out
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def restore_non_finite(value: Any) -> Any:
    """The inverse of what metrics.json / metrics.jsonl do: the nulls a `non_finite`
    entry explains become float('inf'), float('-inf') or float('nan') again."""
    if isinstance(value, dict):
        why = value.get(NON_FINITE) if isinstance(value.get(NON_FINITE), dict) else {}
        return {k: float(why[k]) if k in why and v is None else restore_non_finite(v)
                for k, v in value.items() if k != NON_FINITE}
    if isinstance(value, list):
        return [restore_non_finite(v) for v in value]
    return value


def read_json(path: Path) -> Any:
    """A metrics.json, its non-finite values restored."""
    return restore_non_finite(json.loads(Path(path).read_text()))


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line (flushed, so a killed run keeps every finished evaluation)."""
    with open(path, "a") as f:
        f.write(json.dumps(_finite(record)) + "\n")
        f.flush()
        os.fsync(f.fileno())
