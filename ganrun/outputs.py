"""What a run leaves behind besides TensorBoard: metrics.json, written atomically; and
what names a sweep's jobs: their directories and their console log lines."""

from __future__ import annotations

import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback as HydraCallback

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


def heartbeat(path: Path, **fields: Any) -> None:
    """Update a running run's metrics.json with `fields` (its last logged step, ...), so
    that a run killed outright (kill -9, out of memory) says how far it got."""
    try:
        saved = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return
    if saved.get("status") == "running":
        write_json(path, {**saved, **fields})


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


# --- sweeps: what tells a sweep's jobs apart ----------------------------------------

SWEEP_CONFIG = "multirun.yaml"  # the sweep's own config, in its directory
NOT_IN_NAMES = ("ckpt_path",)   # as hydra.job.config.override_dirname.exclude_keys
NAME_DIGITS = 4                 # significant digits of a float in a job's directory name
_FLOAT = re.compile(r"[+-]?(?:\d+\.\d*|\.\d+|\d+(?=[eE]))(?:[eE][+-]?\d+)?")


def parse_overrides(lines) -> list:
    """Hydra's reading of override lines; a line it cannot read is left out."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    out = []
    for line in lines:
        try:
            out.extend(parser.parse_overrides([str(line)]))
        except Exception:  # noqa: BLE001 - naming a directory must not fail a job
            continue
    return out


def sweep_keys(sweep_dir: str | Path | None) -> tuple[set[str], set[str]]:
    """(varied, fixed): the keys the sweep in `sweep_dir` varies (a sweep on its command
    line, `loss=bce,hinge`, or in hydra.sweeper.params, Optuna's search space among
    them) and those it gives every job alike (`train.steps=100`), read from the sweep's
    multirun.yaml; both empty when there is none."""
    import yaml

    try:
        saved = yaml.safe_load((Path(sweep_dir) / SWEEP_CONFIG).read_text()) or {}
        hydra = saved.get("hydra") or {}
        task = list((hydra.get("overrides") or {}).get("task") or [])
        params = (hydra.get("sweeper") or {}).get("params") or {}
        lines = [*(f"{k}={v}" for k, v in params.items()), *task]
    except (OSError, TypeError, AttributeError, yaml.YAMLError):
        return set(), set()
    varied, fixed = set(), set()
    for override in parse_overrides(lines):
        (varied if override.is_sweep_override() else fixed).add(override.key_or_group)
    return varied, fixed - varied


def varied_overrides(task, sweep_dir: str | Path | None) -> list[tuple[str, str]]:
    """The job's overrides that tell it apart from the other jobs of its sweep, as
    (key, "key=value"), sorted: all but those the sweep gives every job alike (and
    ckpt_path); all of them when that leaves none (a sweep of one job)."""
    overrides = [(o.key_or_group, str(o.input_line)) for o in parse_overrides(task)
                 if o.key_or_group not in NOT_IN_NAMES]
    fixed = sweep_keys(sweep_dir)[1] if sweep_dir else set()
    kept = [(key, line) for key, line in overrides if key not in fixed]
    return sorted(kept or overrides, key=lambda item: item[1])


def short_value(line: str, digits: int = NAME_DIGITS) -> str:
    """`key=value` with a float of more digits cut to `digits` significant ones
    (`optim.lr_g=0.00012345678901234` -> `optim.lr_g=0.0001235`); others as they are."""
    key, sep, value = line.partition("=")
    if sep and _FLOAT.fullmatch(value):
        number = float(value)
        short = f"{number:.{digits}g}"
        if float(short) != number:
            return f"{key}={short}"
    return line


def job_dirname(task, sweep_dir: str | Path | None = None) -> str:
    """A sweep job's name: the overrides that tell it apart (`varied_overrides`, seed
    among them), floats cut short. The job's .hydra/overrides.yaml and config keep every
    override and exact values."""
    return ",".join(short_value(line) for _, line in varied_overrides(task, sweep_dir))


class RecordSweep(HydraCallback):
    """Writes the sweep's config (multirun.yaml) into its directory before the first
    job starts, whatever the sweeper: Hydra's basic sweeper writes it too, Optuna's
    does not; a job reads from it which keys the sweep varies."""

    def on_multirun_start(self, config, **kwargs) -> None:
        from omegaconf import OmegaConf

        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            sweep_dir.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(config, sweep_dir / SWEEP_CONFIG)
        except OSError:  # the sweep cannot start: Hydra's own attempt says why, in one line
            return


def job_formatter(format: str, job: int | None = None, datefmt: str | None = None):
    """The console's log formatter (hydra.job_logging): `{job}` in `format` becomes
    `[job 3]` in a sweep's job 3, so that lines of jobs running side by side say whose
    they are, and nothing in a single run (Hydra's own format)."""
    return logging.Formatter(format.replace("{job}", "" if job is None else f"[job {job}]"),
                             datefmt)


_PLAIN_VALUE = re.compile(r"^[A-Za-z0-9_./\-]+$")


def hydra_value(value: str) -> str:
    """`value` as an override's value Hydra reads back as this string: plain where its
    grammar allows, else quoted (a sweep job's directory holds `=` and `,`)."""
    if _PLAIN_VALUE.match(value):
        return value
    # In a quoted value Hydra reads a backslash as an escape only before a quote (or
    # before the closing one): those are doubled, the quotes escaped.
    quoted = re.sub(r'(\\*)"', lambda m: m.group(1) * 2 + '\\"', value)
    return '"' + re.sub(r"(\\+)$", lambda m: m.group(1) * 2, quoted) + '"'



def objective_value(result: dict, target: str) -> float:
    """What a job returns to a sweeper (Optuna) for optimized_metric `target`: its last
    value among the run's losses and metrics; nan unless the run finished."""
    if result.get("status") != "finished":
        return float("nan")
    value = {**result.get("losses", {}), **result.get("metrics", {})}.get(target)
    return float("nan") if value is None else float(value)


def sweep_checkpoint(ckpt_path: str | None, job_dir_name: str) -> str | None:
    """`ckpt_path=<a sweep's directory>` in a sweep: the job directory of the same name
    there (the same job number and overrides: ckpt_path is not in a job's name), whose
    checkpoint the job resumes; any other value as it is."""
    if not ckpt_path:
        return ckpt_path
    sweep = Path(str(ckpt_path)).expanduser()
    return str(sweep / job_dir_name) if (sweep / SWEEP_CONFIG).is_file() else ckpt_path


def resume_command(overrides: list[str], checkpoint: str | Path) -> str:
    """The command that resumes a run from `checkpoint`: its own `overrides` (in place of
    any ckpt_path it had) and the checkpoint, quoted for Hydra, the line for the shell."""
    import shlex

    options = [o for o in overrides if not o.startswith("ckpt_path=")]
    return shlex.join(["ganrun", *options, f"ckpt_path={hydra_value(str(checkpoint))}"])
