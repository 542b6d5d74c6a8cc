"""The command lines of `ganrun-sample` and `ganrun-eval`: key=value options, each read
by its own parser (a wrong one is one line naming the key, the value and what it
expects), the run directory or checkpoint, and --images FOLDER for ganrun-eval."""

from __future__ import annotations

import sys
from pathlib import Path

from ganrun.errors import UserError

USAGE_SAMPLE = ("usage: ganrun-sample <run dir or checkpoint> [n=64] [out=PATH] [folder=true] "
                "[seed=0] [truncation=T|none] [class=K] [memory_limit=0.8]")
USAGE_EVAL = ("usage: ganrun-eval <run dir or checkpoint> [--images FOLDER] [n_fake=N] "
              "[n_real=N] [seed=0] [names=fid,kid,...] [extractor=auto|classifier|inception|random_conv|raw] "
              "[inception_weights=PATH] [ppl_samples=N] [ppl_sampling=end|full] "
              "[ppl_net=auto|lpips|extractor] [lpips_weights=PATH] [memory_limit=0.8]")

def boolean(value: str) -> bool:
    """true/false (also yes/no, 1/0): anything else is refused, not read as false."""
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise ValueError("expected true or false")


def truncation_value(value: str) -> float | None:
    """truncation=T, or truncation=none: off, whatever the run's sample.truncation."""
    if value.lower() in ("none", "null"):
        return None
    try:
        return float(value)
    except ValueError:
        raise ValueError("expected a number > 0, or none") from None


def parse(argv: list[str], allowed: dict, usage: str, images_ok: bool
           ) -> tuple[str, dict, str | None]:
    """The positional path, key=value options (each read by its parser: int, float, str, or
    a function raising ValueError with what it expects), and --images FOLDER where images_ok."""
    path, options, images = None, {}, None
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg in ("-h", "--help"):
            print(usage)
            sys.exit(0)
        if arg == "--images" and images_ok:
            if not args:
                raise UserError("--images needs a folder")
            images = args.pop(0)
        elif path is None and not arg.startswith("-") and Path(arg).expanduser().exists():
            path = arg  # a sweep job's directory holds '=': a path that exists is a path
        elif "=" in arg and not arg.startswith("-"):
            key, value = arg.split("=", 1)
            if key not in allowed and ("/" in key or key.startswith(".")):
                raise UserError(f"{arg}: no such run directory or checkpoint")
            if key not in allowed:
                raise UserError(f"unknown option {key}; valid: {', '.join(allowed)}")
            kind = allowed[key]
            try:
                options[key] = kind(value)
            except ValueError as e:
                expected = f"expected {kind.__name__}" if kind in (int, float) else e
                raise UserError(f"{key}={value}: {expected}") from None
        elif path is None and not arg.startswith("-"):
            path = arg
        else:
            raise UserError(f"unexpected argument {arg}\n{usage}")
    if path is None:
        raise UserError(f"give a run directory or a checkpoint\n{usage}")
    return path, options, images


def names_list(value: str) -> list[str]:
    """names=fid,kid: the metrics to compute, checked against metrics.names' choices
    (in any case: names=FID is fid)."""
    from ganrun.config.schema import metric_name

    names = [n.strip() for n in value.strip("[]").split(",") if n.strip()]
    return [metric_name("names", name) for name in names]
