"""Every command of the README, run or composed, and the figures it shows checked against
what the code prints now, so that README examples cannot go stale unnoticed.

1. Every command line in README.md's indented code blocks is parsed out and listed
   (`test_command_is_accounted_for`, one id per command): a new one is picked up, and
   one that shows output must be compared by a test here or say why it is not (CHECKS).
2. Every `ganrun` training command composes and passes ganrun's validation, in-process
   (`test_command_composes`): sweeps take the first value of each comma list (and of a
   preset's own sweep), placeholder paths (`~/faces`, `~/data`, `my_pngs`) become
   fixture data. A command the README shows failing must fail with the message shown.
3. The figures the README prints (losses, metrics, `finished:` lines, metrics.json,
   ganrun-sample/-eval, the study tables) are compared with a real run of the same
   command where that is affordable: numbers exactly as printed; timings, dates, paths,
   img/s and seconds left out. Where it is not (thousands of slow steps, hour-long
   studies, a dataset not in the repository), the command's short form runs and CHECKS
   says why its figures are not compared.

Runs are in-process (`ganrun.training.run.run`, the tools' own `main`) except where the
console is what the README shows (Hydra's sweep lines, the SIGTERM messages, errors
Hydra raises while composing). About two minutes on 2 CPU cores. `-m slow` adds a
2-step run of every command and every job of its sweeps, and the examples too long
for CI: DDP on CPU, the ring8 health warning, DynGAN's splits, the interrupted run to
its end.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import runpy
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from pytorch_lightning import Callback

from ganrun.config.compose import compose_config
from ganrun.errors import DivergedError, Interrupted, UserError

from conftest import GANRUN, REPO, cli_env, make_cifar10, make_image_folder, make_mnist

README = REPO / "README.md"
TESTS = Path(__file__).resolve().parent


def stamp(n: int = 0) -> str:
    """A run directory name like Hydra's (compared as <stamp>)."""
    return f"2000-01-01_00-00-{n:02d}"


# --- the README's commands -------------------------------------------------------------


@dataclass
class Command:
    """One command line of an indented code block and the lines shown under it."""

    line: int  # 1-based line number in README.md
    text: str  # without "$ ", environment assignments, /usr/bin/time, .venv/bin/, " &"
    block: list[str]  # the whole code block
    output: list[str] = field(default_factory=list)

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.text)

    @property
    def program(self) -> str:
        return self.argv[0]

    @property
    def id(self) -> str:
        return self.text[:90]  # not the line number: ids stay put as the README grows


_PROGRAM = re.compile(
    r"^(?:[A-Z_]+=\S+ )*(?:/usr/bin/time -v )?(?:\.venv/bin/)?"
    r"(?P<cmd>(?:ganrun(?:-sample|-eval|-report)?|python scripts/\S+)(?:\s.*)?)$")


def code_blocks(text: str) -> list[tuple[int, list[str]]]:
    """Indented code blocks (4 spaces after a blank line, 6 in a list item; fenced blocks
    skipped): (line number of the first line, lines without the block's indent)."""
    blocks: list[tuple[int, list[str]]] = []
    fenced, previous_blank, current, indent = False, True, None, 4
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            fenced, current = not fenced, None
        elif fenced:
            pass
        elif line.startswith("    ") and (current is not None or previous_blank):
            if current is None:
                current = (number, [])
                blocks.append(current)
                indent = len(line) - len(line.lstrip(" "))
            leading = len(line) - len(line.lstrip(" "))
            current[1].append(line[min(indent, leading):])
        elif line.strip():
            current = None
        elif current is not None:
            current[1].append("")
        previous_blank = not line.strip()
    for _, lines in blocks:
        while lines and not lines[-1]:
            lines.pop()
    return blocks


def readme_commands(text: str) -> list[Command]:
    """Every ganrun, ganrun-sample/-eval/-report and scripts/ command of the code blocks.
    In a block with `$ ` prompts, the lines up to the next prompt are the command's
    output; in a block without, every line is a command of its own."""
    commands: list[Command] = []
    for start, lines in code_blocks(text):
        prompted = any(line.startswith("$ ") for line in lines)
        current = None
        for offset, line in enumerate(lines):
            if prompted and not line.startswith("$ "):
                if current is not None:
                    current.output.append(line)
                continue
            match = _PROGRAM.match(line.removeprefix("$ ").removesuffix(" &").strip())
            current = Command(start + offset, match["cmd"].strip(), lines) if match else None
            if current is not None:
                commands.append(current)
    return commands


COMMANDS = readme_commands(README.read_text())
TRAINING = [c for c in COMMANDS if c.program == "ganrun"]


def find(pattern: str) -> Command:
    """The one README command matching `pattern` (searched)."""
    found = [c for c in COMMANDS if re.search(pattern, c.text)]
    assert len(found) == 1, (f"README: {len(found)} commands match {pattern!r}: "
                             f"{[c.text for c in found]} (update tests/test_readme.py)")
    return found[0]


def after_prompt(block: list[str], prompt: str) -> list[str]:
    """The lines after the `$ <prompt>...` line of a block, up to the next prompt."""
    starts = [i for i, line in enumerate(block) if line.startswith("$ " + prompt)]
    assert starts, f"README: no `$ {prompt}` in the block {block[:1]}"
    out = []
    for line in block[starts[0] + 1:]:
        if line.startswith("$ "):
            break
        out.append(line)
    return out


def block_after(marker: str) -> list[str]:
    """The first code block after the README line that contains `marker`."""
    text = README.read_text()
    assert marker in text, f"README no longer says {marker!r} (update tests/test_readme.py)"
    line = text[:text.index(marker)].count("\n") + 1
    return next(lines for start, lines in code_blocks(text) if start > line)


# --- comparing what is printed ---------------------------------------------------------

_PREFIX = re.compile(r"^(?:\[\d{4}-\d\d-\d\d [\d:,]+\](?P<tags>(?:\[[^\]]*\])+)(?: - | )|\.\.\. )")
_VOLATILE = [  # what a rerun does not reproduce
    (re.compile(r"\b\d+(\.\d+)? img/s\b"), "<rate> img/s"),
    (re.compile(r"  eta (\?|(\d+ days?, )?\d+:\d\d:\d\d)$"), ""),  # time left, ganrun's own estimate
    (re.compile(r"\bin \d+(\.\d+)? s\b"), "in <seconds> s"),
    (re.compile(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d"), "<stamp>"),
    (re.compile(r"(?<![\w.])(?:/[^\s;:,()]*)?/(outputs/)"), r"\1"),  # absolute part of paths
]
NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e[+-]?\d+)?(?![\w.])")


def logger_of(line: str) -> str:
    match = _PREFIX.match(line)
    return match["tags"].split("]")[0].lstrip("[") if match and match["tags"] else ""


def normal(line: str, subs: dict[str, str] | None = None) -> str:
    """A printed line without its log prefix, with timings, dates and the absolute part of
    paths replaced; `subs` maps paths of this machine to the README's."""
    for ours, theirs in (subs or {}).items():
        line = line.replace(ours, theirs)
    line = _PREFIX.sub("", line.rstrip())
    for pattern, replacement in _VOLATILE:
        line = pattern.sub(replacement, line)
    return line


def masked(line: str) -> str:
    """The line with every number masked: for short forms, whose figures differ."""
    return NUMBER.sub("<n>", line)


# Lines about this machine's devices (GPU available: ..., DDP's process start-up).
ENVIRONMENT = ("pytorch_lightning", "lightning_fabric", "[rank ")


def machine() -> str:
    """What fixes a run's last digits besides the thread count: torch's build and the
    processor (its model, and the instruction set torch's kernels use). Another one rounds
    otherwise, and a GAN amplifies that into other figures (an AMD EPYC's AVX-512 printed
    loss/d 1.1549 at the quick start's step 1000 where an earlier machine printed 1.1413)."""
    import torch

    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "") if Path("/proc/cpuinfo").exists() else ""
    return f"torch {torch.__version__}, {model or 'unknown CPU'}, " \
           f"{torch.backends.cpu.get_cpu_capability()}"


# The machine the README's figures were printed on, as the README names it; on another
# one they are compared with their numbers masked (the lines, their order, their words).
FIGURES_MACHINE = re.search(r"digit for digit on `([^`]+)`", README.read_text()).group(1)


def exact_figures() -> bool:
    """Whether this machine printed the README's figures (else they are masked, saying so)."""
    if machine() == FIGURES_MACHINE:
        return True
    warnings.warn(f"the README's figures compared with their numbers masked: they were "
                  f"printed on {FIGURES_MACHINE}, this is {machine()}", stacklevel=3)
    return False


# GANRUN_README_REFRESH=<file>: on the figures' machine, a line (or a JSON value) whose
# numbers alone differ is written to <file> as {"old": README text, "new": the text with
# today's numbers} and passes; `python tests/test_readme.py <file>` then writes them into
# the README: for when torch, the machine or the code moves the figures on purpose.
REFRESH = os.environ.get("GANRUN_README_REFRESH")


def same_json(saved: dict, shown: dict) -> None:
    """A JSON block the README shows equals what was saved: on the figures' machine value
    for value (GANRUN_README_REFRESH: differing numbers recorded), elsewhere key for key
    with values of the same type."""
    if not exact_figures():
        assert {k: type(saved[k]) for k in shown} == {k: type(v) for k, v in shown.items()}
        return
    if REFRESH:
        def leaves(ours, theirs):
            if isinstance(theirs, dict) and isinstance(ours, dict):
                for key in theirs:
                    yield from leaves(ours.get(key), theirs[key])
            elif isinstance(theirs, float) and isinstance(ours, float) and ours != theirs:
                yield theirs, ours
        with open(REFRESH, "a") as out:
            for theirs, ours in leaves(saved, shown):
                out.write(json.dumps({"old": json.dumps(theirs), "new": json.dumps(ours)}) + "\n")
        return
    assert {k: saved[k] for k in shown} == shown


def decimals_masked(line: str) -> str:
    """The line with its decimal figures masked, its counts (steps, classes) kept."""
    return NUMBER.sub(lambda m: "<n>" if re.search(r"[.e]", m.group()) else m.group(), line)


def _refreshed(line: str, expected: str, printed: str) -> str:
    """The README `line` with `expected`'s numbers replaced by `printed`'s, in order."""
    prefix = _PREFIX.match(line)
    cursor = prefix.end() if prefix else 0
    for old, new in zip(NUMBER.findall(expected), NUMBER.findall(printed), strict=True):
        at = re.compile(rf"(?<![\w.]){re.escape(old)}(?![\w.])").search(line, cursor).start()
        line = line[:at] + new + line[at + len(old):]
        cursor = at + len(new)
    return line


def compare(shown: list[str], printed: list[str], subs: dict[str, str] | None = None,
            figures: bool = True, what: str = "") -> None:
    """Every line the README shows (but `...`) is among the printed ones, in order; ` ...`
    inside a line matches anything. figures=False compares with every number masked, as
    on a machine other than the one that printed the README's figures."""
    ours = [normal(p, subs) for p in printed if p.strip()]
    figures = figures and exact_figures()
    if not figures:
        ours = [masked(p) for p in ours]
    position = 0
    for line in shown:
        if not line.strip() or line.strip() == "..." or line.startswith("$ "):
            continue
        if logger_of(line).startswith(ENVIRONMENT) or line.startswith(ENVIRONMENT):
            continue
        expected = normal(line)
        if not figures:
            expected = masked(expected)
        pattern = re.compile(".*?".join(map(re.escape, expected.split(" ..."))) + "$")
        for i in range(position, len(ours)):
            if pattern.match(ours[i]):
                position = i + 1
                break
        else:
            if REFRESH and figures and " ..." not in expected:
                loose = re.compile(re.escape(decimals_masked(expected)) + "$")
                near = [i for i in range(position, len(ours))
                        if loose.match(decimals_masked(ours[i]))]
                if near:
                    with open(REFRESH, "a") as out:
                        out.write(json.dumps({"old": line, "new": _refreshed(
                            line, expected, ours[near[0]])}) + "\n")
                    position = near[0] + 1
                    continue
            head = " ".join(expected.split()[:2])
            near = [p for p in ours if p.startswith(head)] or ours[-10:]
            pytest.fail(f"{what}: the README shows\n  {expected}\nwhich is not printed now (in "
                        "this order); printed:\n  " + "\n  ".join(near[:12]))


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextmanager
def log_lines():
    """The log lines an in-process run prints (messages, without the prefix)."""
    handler, root = _Lines(), logging.getLogger()
    loggers = [root, *map(logging.getLogger, ("ganrun", "pytorch_lightning.utilities.rank_zero"))]
    levels = [logger.level for logger in loggers]
    root.addHandler(handler)
    for logger in loggers:
        logger.setLevel(logging.INFO)
    try:
        yield handler.lines
    finally:
        root.removeHandler(handler)
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def finished_line(result: dict, run_dir: Path) -> str:
    """The line `ganrun` prints after run() returns (ganrun.cli.train logs it, run() does not)."""
    return (f"{result['status']}: {result['g_steps']} generator steps, {result['images_seen']} "
            f"images in {result['wall_seconds']:.1f} s; outputs in {run_dir}")


def cache_subs() -> dict[str, str]:
    return {os.environ["GANRUN_CACHE"]: "~/.cache/ganrun"}


# The README's figures were measured with 2 threads (torch's default on its 2 cores). Another
# count sums floats in another order and trains another, equally valid run (the quick start
# at step 3000, on one day's code: fid 55.28 with 2 threads, 63.55 with OMP_NUM_THREADS=1),
# so its runs here use 2.
README_THREADS = 2


@contextmanager
def readme_threads():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(README_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_in_process(overrides: list[str], run_dir: Path) -> tuple[dict, list[str]]:
    """`ganrun <overrides>` in this process with the README's thread count: (metrics.json's
    dict, the lines printed, the `finished:` line last)."""
    from ganrun.training.run import run

    cfg, choices = compose_config(*overrides)
    with log_lines() as lines, readme_threads():
        result = run(cfg, run_dir=run_dir, hydra_choices=choices)
    return result, [*lines, finished_line(result, run_dir)]


def fails_in_process(overrides: list[str], run_dir: Path, error=UserError
                     ) -> tuple[Exception, list[str]]:
    from ganrun.training.run import run

    cfg, choices = compose_config(*overrides)
    with log_lines() as lines, pytest.raises(error) as raised:
        run(cfg, run_dir=run_dir, hydra_choices=choices)
    return raised.value, lines


class SigtermAt(Callback):
    """Sends this process SIGTERM after generator step `step - 1`, so that the run stops,
    as a `kill -TERM` would, after exactly `step` (the README's interruption, made
    deterministic). Used as `+callbacks.sigterm._target_=test_readme.SigtermAt`."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.g_steps == self.step - 1:
            if threading.current_thread() is not threading.main_thread():  # would kill pytest
                raise RuntimeError("SigtermAt: ganrun handles signals in the main thread only")
            os.kill(os.getpid(), signal.SIGTERM)


def sigterm_at(step: int) -> list[str]:
    return ["+callbacks.sigterm._target_=test_readme.SigtermAt", f"+callbacks.sigterm.step={step}"]


def console(argv: list[str], cwd: Path, env: dict | None = None, timeout: int = 300
            ) -> subprocess.CompletedProcess:
    """A README command as the console runs it, with the README's thread count."""
    env = {**(env or cli_env()), "OMP_NUM_THREADS": str(README_THREADS)}
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env)


# --- from a README command to overrides --------------------------------------------------


class Data:
    """Fixture data standing in for the README's placeholder paths, made when needed."""

    def __init__(self, root: Path):
        self.root = root

    def substitute(self, value: str) -> str:
        if value == "~/data":  # torchvision's sets (cifar10, mnist, fashion_mnist)
            folder = self.root / "data"
            if not folder.exists():
                make_mnist(folder, "MNIST")
                make_mnist(folder, "FashionMNIST", seed=1)
                make_cifar10(folder, n_per_batch=80)  # 400: a step of sngan_paper takes 320
            return str(folder)
        if value in ("~/faces", "my_pngs"):
            folder = self.root / "images"
            if not folder.exists():
                make_image_folder(folder, n=64, size=(40, 40))  # one batch of 64
            return str(folder)
        return os.path.expanduser(value)


def overrides_of(command: Command, data: Data | None = None, every_job: bool = False
                 ) -> list[list[str]]:
    """The override lists `ganrun <args>` runs: the first job of its comma sweeps (every
    job if asked), `-m` dropped, placeholder dataset roots replaced by fixture data."""
    choices: list[list[str]] = []
    for arg in command.argv[1:]:
        if arg in ("-m", "--multirun"):
            continue
        key, is_override, value = arg.partition("=")
        if data is not None and key.endswith("dataset.root"):
            value = data.substitute(value)
        values = split_sweep(value) if is_override and not key.startswith("hydra") else [value]
        choices.append([f"{key}={v}" for v in values] if is_override else [arg])
    if not every_job:
        return [[c[0] for c in choices]]
    return [list(job) for job in itertools.product(*choices)]


def split_sweep(value: str) -> list[str]:
    """`a,b,c` -> [a, b, c]; commas inside [...] (a list value) do not split."""
    parts, depth, current = [], 0, ""
    for char in value:
        depth += (char == "[") - (char == "]")
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


def preset_sweep(overrides: list[str], every_job: bool = False) -> list[list[str]]:
    """A preset that is a sweep by itself (experiment=optimizer_study): its jobs, from
    hydra.sweeper.params (the first only unless asked), less what the command sets."""
    if not any(o.startswith(("experiment=", "hparams_search=")) for o in overrides):
        return [[]]
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_module("ganrun.configs", version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    given = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    lists = [[f"{k}={v}" for v in split_sweep(str(values))] for k, values in params.items()
             if k not in given and "choice(" not in str(values) and "interval(" not in str(values)]
    if not every_job:
        return [[values[0] for values in lists]]
    return [list(job) for job in itertools.product(*lists)]


def error_shown(command: Command) -> list[str]:
    """The README's error output for a command shown failing (empty if it is not)."""
    lines = [line for line in command.output if line.strip() and line.strip() != "..."]
    if any(line.startswith(("ganrun: error:", "ganrun: diverged:")) for line in lines):
        return lines
    if lines and re.match(r"(In '\w+': )?Could not (find|override)", lines[0]):
        return lines
    return []


# --- how each command is checked ------------------------------------------------------------
# Regexes searched in a command's text -> how it is checked. Every command that is not a
# plain `ganrun` training command without output must be here. "compared": its figures are
# compared with a real run; "short": its short form runs, and why its figures are not.

CHECKS = {
    r"^ganrun$": ("compared", "test_quick_start: 3000 steps in-process, its lines and metrics.json"),
    r"^ganrun train\.steps=200 log\.every=100$": ("compared", "test_resume"),
    r"^ganrun ckpt_path=\S+last\.ckpt train\.steps=400 log\.every=100$": ("compared", "test_resume"),
    r"^ganrun ckpt_path=\S+ train\.steps=3100 metrics=none$": ("compared", "test_resume"),
    r"^ganrun ckpt_path=/tmp/qs$": ("compared", "test_resume: the error, for an empty directory"),
    r"^ganrun-sample \S+ n=30$": ("compared", "test_sample_and_eval (of `ganrun train.steps=300`)"),
    r"^ganrun-sample \S+ n=5 folder=true out=pngs$": ("compared", "test_sample_and_eval"),
    r"^ganrun-eval \S+10-17-04 n_fake=1000$": (
        "masked", "test_sample_and_eval: numbers masked, because ganrun-eval draws its samples "
                  "unseeded and every process prints other figures (test_eval_is_reproducible, "
                  "xfail)"),
    r"^ganrun-eval \S+ --images ~/my_samples$": (
        "short", "test_sample_and_eval: on 60 samples of the run; the README shows no output"),
    r"^ganrun -m loss=nsgan,hinge seed=0,1 .*logger=\[tensorboard,csv,mlflow,wandb\]$": (
        "compared", "tests/test_loggers.py: its sweep fixture runs it, compares the two listings "
                    "and reads every logger's store back"),
    r"^ganrun -m loss=bce,hinge optim=adam,sgd train\.steps=20$": (
        "compared", "test_sweep: the console (Hydra's lines), the finished lines, the job folders"),
    r"^ganrun-report outputs/multiruns/<stamp>": (
        "short", "test_sweep: ganrun-report on the 4-job sweep above, with these options"),
    r"^ganrun experiment=optimizer_study$": (
        "short", "test_studies_short: 18 runs of 2000 steps take ~15 min on 2 cores; its first "
                 "job runs 2 steps"),
    r"^ganrun-report \S+13-54-15 --columns": (
        "short", "test_sweep: its table needs the optimizer study's 18 runs (and the README says "
                 "an earlier ganrun-report printed it); ganrun-report runs on the 4-job sweep "
                 "with these --columns"),
    r"^ganrun dataset=image_folder dataset\.root=my_pngs": (
        "short", "test_image_folder_offline: the README's 300 disc PNGs are not in the "
                 "repository and 300 DCGAN steps take ~50 s; 2 steps on 300 fixture discs: "
                 "its lines compared with the numbers masked"),
    r"^ganrun-eval \S+13-37-23$": (
        "short", "test_image_folder_offline: evaluates that 2-step run, numbers masked"),
    r"^ganrun-eval \S+13-37-23 --images five$": (
        "compared", "test_image_folder_offline: the refusal of five images"),
    r"^ganrun optim=sgd optim\.lr_d=1e6": ("compared", "test_divergence (and its metrics.json)"),
    r"^ganrun-eval \S+<ring8-run> n_fake=400000$": (
        "compared", "test_eval_too_big: the refusal, on a machine of this one's 23.5 GiB"),
    r"^ganrun train\.steps=600 metrics=none log\.every=100$": (
        "compared", "test_interruption: SIGTERM after step 214 as in the README, the console"),
    r"^ganrun train\.steps=600 metrics=none log\.every=100 ckpt_path=": (
        "compared", "test_interruption: resumed to its end, the console"),
    r"^ganrun ckpt_path=truncated\.ckpt$": ("compared", "test_truncated_checkpoint"),
    r"^ganrun train\.steps=40 metrics=none hydra\.run\.dir=outputs/runs/first$": (
        "compared", "test_nothing_written_over: the refusal, after the 20-step run before it"),
    r"^ganrun experiment=mode_collapse_study protocol=pacgan_(grid|ring) ": (
        "short", "test_studies_short: 21 jobs of 3000 steps, hours on 2 cores; the first job "
                 "runs 2 steps (the table from the kept runs: test_mode_collapse_tables)"),
    r"^ganrun -m protocol=dyngan_grid,dyngan_ring ": (
        "short", "test_studies_short: 12 jobs of 30,000 steps; the first job runs 2 steps"),
    r"^ganrun -m protocol=pacgan_stacked_small_d seed=": (
        "short", "test_studies_short: the stacked study, 15 jobs of 2000 steps (74 minutes); "
                 "the first job runs 2 steps (the table from the kept runs: "
                 "test_mode_collapse_tables)"),
    r"^ganrun -m protocol=pacgan_(ring|grid) method=gan,pacgan2 seed=0,1,2,3,4 ": (
        "short", "test_studies_short: 10 jobs of 20,000 steps each; the first job runs 2 "
                 "steps (the table from the kept runs: test_mode_collapse_tables)"),
    r"^ganrun -m dataset=ring8 method=gan,pacgan2,unrolled,dyngan ": (
        "short", "test_studies_short: the strips' example, 4 jobs of 3000 steps; the first job "
                 "runs 2 steps (the strips themselves: tests/test_strips.py)"),
    r"^python scripts/mode_collapse_table\.py": (
        "compared", "test_mode_collapse_tables: on the runs kept in docs/mode_collapse_study"),
    r"^ganrun trainer=ddp trainer\.accelerator=cpu trainer\.devices=2 ": (
        "short", "composed here; DDP's start-up and 100 steps take ~30 s: compared under "
                 "-m slow (test_slow_ddp); tests/test_distributed.py covers DDP"),
    r"^python scripts/bench_throughput\.py": (
        "short", "test_bench_scripts_short: timings only; ring8_mlp_b64 for 4 steps"),
    r"^ganrun dataset=(grid25 train\.steps=1000|ring8 train\.steps=500)$": (
        "short", "test_command_composes: the default MLP GAN on the 2-D mixtures, the baselines "
                 "of PacGAN and Unrolled GAN (those run 2 steps: test_short_run); minutes of "
                 "training on 2 cores, the mode figures not compared"),
    r"^python scripts/bench_metrics\.py$": (
        "short", "test_bench_scripts_short: timings only; random_conv on 60 samples"),
    r"^ganrun -m hydra/launcher=fleet protocol=dyngan_grid ": (
        "compared", "test_fleet_sweep: the console, every member's finished line and metrics.json"),
    r"^python scripts/bench_fleet\.py --runs ": (
        "short", "test_bench_scripts_short: timings only; 2 jobs of 20 steps"),
    r"^python scripts/bench_fleet\.py --configs ": (
        "short", "test_bench_scripts_short: timings only; dyngan_grid, 2 members, 2 steps"),
    r"^python scripts/bench_health\.py$": (
        "short", "test_bench_health_short: two constructed cases (the natural runs take ~8 "
                 "minutes); the README's table is its full output, summarised"),
}
ORPHAN_BLOCKS = {  # output blocks with figures whose command is in the prose around them
    '"status": "finished"': "test_quick_start: the quick start's metrics.json",
    '{"step": 300,': "test_sample_and_eval: metrics.jsonl of `ganrun train.steps=300`",
    "health: blur": "test_slow_ring8_blur: `ganrun dataset=ring8`, its 3000 steps",
    "dyngan: step ": "test_slow_dyngan_partitions: 6000 of 10,000 steps",
}


def how_checked(command: Command) -> tuple[str, str]:
    for pattern, how in CHECKS.items():
        if re.search(pattern, command.text):
            return how
    if command.program != "ganrun":
        return "", ""
    if error_shown(command):
        return "compared", "test_command_composes: the error message shown"
    if any(re.search(pattern, command.text) for pattern in SHORT_RUNS):
        return "short", "test_short_run: 2 steps, metrics off"
    return "composed", "test_command_composes"


@pytest.mark.parametrize("command", COMMANDS, ids=[c.id for c in COMMANDS])
def test_command_is_accounted_for(command):
    """A command that shows output is compared, or CHECKS says why not; every command
    other than `ganrun` runs in some form."""
    shows = [line for line in command.output if line.strip() and line.strip() != "..."]
    kind, _ = how_checked(command)
    assert kind, (f"README line {command.line}: `{command.text}` is checked by no test; add it "
                  "to CHECKS in tests/test_readme.py, with a test")
    if shows:
        assert kind != "composed", (
            f"README line {command.line}: `{command.text}` shows output that no test compares; "
            "add it to CHECKS in tests/test_readme.py (compared, or short and why)")


def test_figures_are_exact_on_their_machine_and_masked_elsewhere(monkeypatch, tmp_path):
    shown = ["[2026-11-30 20:18:29,958][ganrun][INFO] - step 1000/3000  loss/d 1.1413  "
             "loss/g 1.0752  4659 img/s  eta 0:00:27"]
    printed = ["step 1000/3000  loss/d 1.1549  loss/g 1.0752  5000 img/s  eta 0:00:20"]
    monkeypatch.setattr(sys.modules[__name__], "FIGURES_MACHINE", machine())
    with pytest.raises(pytest.fail.Exception, match="loss/d 1.1413"):
        compare(shown, printed, what="here")
    refresh = tmp_path / "refresh.jsonl"  # the figures' machine, refreshing: recorded
    monkeypatch.setattr(sys.modules[__name__], "REFRESH", str(refresh))
    compare(shown, printed + ["step 2000/3000  loss/d 1.0  loss/g 1.0  1 img/s"], what="here")
    (record,) = map(json.loads, refresh.read_text().splitlines())
    assert record == {"old": shown[0], "new": shown[0].replace("1.1413", "1.1549")}
    monkeypatch.setattr(sys.modules[__name__], "REFRESH", None)
    monkeypatch.setattr(sys.modules[__name__], "FIGURES_MACHINE", "torch 0.0, another CPU, AVX2")
    with pytest.warns(UserWarning, match="printed on torch 0.0, another CPU, AVX2, this is "):
        compare(shown, printed, what="here")  # the words still compared
    with pytest.raises(pytest.fail.Exception), pytest.warns(UserWarning):
        compare(shown, [printed[0].replace("loss/g", "loss/G")], what="here")


def test_readme_commands_are_found():
    texts = [c.text for c in COMMANDS]
    assert len(COMMANDS) >= 40 and "ganrun" in texts, texts
    assert find(r"^ganrun ckpt_path=/tmp/qs$").output[0].startswith("ganrun: error:")
    assert not find(r"^ganrun loss=wgan_gp optim=adam$").output
    for pattern in CHECKS:
        assert any(re.search(pattern, t) for t in texts), f"CHECKS: {pattern!r} matches nothing"
    text = README.read_text()
    for marker in ORPHAN_BLOCKS:
        assert marker in text, f"ORPHAN_BLOCKS: {marker!r} is no longer in the README"
    commands_at = {c.line for c in COMMANDS}
    for start, lines in code_blocks(text):
        if lines and re.match(r"\[\d{4}-|\{", lines[0]) and start not in commands_at:
            shown = "\n".join(lines)
            assert any(m in shown for m in ORPHAN_BLOCKS), (
                f"README line {start}: a block of output with no command is checked by no test:"
                f"\n{shown[:300]}")


# --- 2. every training command composes ---------------------------------------------------


@pytest.mark.parametrize("command", TRAINING, ids=[c.id for c in TRAINING])
def test_command_composes(command, tmp_path):
    """Composed and validated as `ganrun` would (the first job of a sweep); a command the
    README shows failing fails with the message shown."""
    from ganrun.config.schema import validate

    (overrides,) = overrides_of(command, Data(tmp_path))
    shown = error_shown(command)
    try:
        cfg, _ = compose_config(*overrides)
        (job,) = preset_sweep(overrides)
        cfg, _ = compose_config(*overrides, *job)
        validate(cfg)
        error = None
    except Exception as e:
        error = e
    if error is None and not shown:
        return
    assert shown, (f"README line {command.line}: `{command.text}` fails: "
                   f"{error.__class__.__name__}: {error}")
    if isinstance(error, UserError):  # ganrun's validation: `ganrun: error: ...` (ganrun.cli.train)
        compare(shown, [f"ganrun: error: {error}"], what=command.text)
    elif error is not None:  # Hydra's own composition errors: as the console says them
        compare(shown, run_console(command, tmp_path), what=command.text)
    elif re.search(r"ckpt_path=|optim\.lr_d=1e6|hydra\.run\.dir=outputs/runs/first", command.text):
        pass  # an error while training or of its directory: test_resume,
        # test_truncated_checkpoint, test_divergence, test_nothing_written_over
    else:  # refused by the command line (launchers) or at the start of the run (devices)
        message = "\n".join(shown)
        if "torch sees no GPU" in message and _cuda():
            pytest.skip("the README shows the refusal on a machine without a GPU")
        if "sbatch" in message and shutil.which("sbatch"):
            pytest.skip("the README shows the refusal on a machine without SLURM")
        guard = ["train.steps=2", "metrics=none"]  # should it not fail after all
        try:
            run_in_process([*overrides, *guard], tmp_path / "run")
        except UserError as e:
            compare(shown, [f"ganrun: error: {e}"], what=command.text)
        else:
            compare(shown, run_console(command, tmp_path, guard), what=command.text)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def run_console(command: Command, cwd: Path, extra: list[str] = ()) -> list[str]:
    """A command that should fail, as the console runs it: the lines it printed."""
    proc = console([GANRUN, *command.argv[1:], *extra], cwd=cwd, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return (proc.stdout + proc.stderr).splitlines()


# Commands in the prose (`ganrun key=value ...` in backticks): composed likewise. The
# drift example adds a regularizer the README writes out first: tests/test_extending.py.
INLINE = [span for span in dict.fromkeys(re.findall(r"`(ganrun (?:-m )?[\w.+~/]+=[^`]*)`",
                                                    README.read_text()))
          if "..." not in span and "<" not in span and "drift" not in span]


@pytest.mark.parametrize("text", INLINE)
def test_inline_command_composes(text, tmp_path):
    from ganrun.config.schema import validate

    command = Command(0, text, [])
    (overrides,) = overrides_of(command, Data(tmp_path))
    (job,) = preset_sweep(overrides)
    validate(compose_config(*overrides, *job)[0])


# --- 3. the figures the README shows ------------------------------------------------------


def test_quick_start(quick_start):
    result, run_dir, lines, cold = quick_start
    command = find(r"^ganrun$")
    shown = command.output
    if not cold:  # another test trained the digits classifier: its accuracy is in the cache
        # the quick start's classifier: the one its metrics lines name (other tests may
        # have cached classifiers of digits at other sizes beside it)
        used = re.search(r"\((digits-[0-9a-f]+)\)", "\n".join(lines)).group(1)
        info = Path(os.environ["GANRUN_CACHE"]) / "classifiers" / f"{used}.json"
        accuracy = json.loads(info.read_text())["accuracy"]
        trained = [line for line in shown if "metrics: training the" in line]
        shown = [line for line in shown if "metrics: training the" not in line]
        assert trained and f"classifier held-out accuracy {accuracy:.4f}" in "\n".join(shown)
        shown = [line for line in shown if "classifier held-out accuracy" not in line]
    compare(shown, lines, subs=cache_subs(), what="ganrun (quick start)")

    shown_json = json.loads("\n".join(block_after("The `metrics.json` of that run:")))
    saved = json.loads((run_dir / "metrics.json").read_text())
    for key in ("pid", "wall_seconds", "images_per_second"):  # this process, this machine
        shown_json.pop(key)
    same_json(saved, shown_json)

    tree = block_after("Every run leaves one directory:")
    for line in tree[1:]:
        name = line.lstrip("├└─ ").split()[0]
        if name in (".hydra/", "ganrun.log"):  # written by Hydra, not by run()
            continue
        assert (run_dir / name.rstrip("/")).exists(), name
    samples = next(line for line in tree if "samples/" in line).split(None, 2)[2]
    assert sorted(p.name for p in (run_dir / "samples").iterdir()) == samples.split(", ")


def test_resume(quick_start, tmp_path):
    first = find(r"^ganrun train\.steps=200 log\.every=100$")
    then = find(r"^ganrun ckpt_path=\S+last\.ckpt train\.steps=400 log\.every=100$")
    onwards = find(r"^ganrun ckpt_path=\S+ train\.steps=3100 metrics=none$")
    wrong = find(r"^ganrun ckpt_path=/tmp/qs$")
    runs = tmp_path / "outputs" / "runs"

    result, lines = run_in_process(overrides_of(first)[0], runs / stamp(1))
    compare(first.output, lines, what=first.text)

    def resumed(command: Command, run_dir: Path) -> list[str]:
        return [re.sub(r"^ckpt_path=outputs/runs/[\d_-]+", f"ckpt_path={run_dir}", o)
                for o in overrides_of(command)[0]]

    result, lines = run_in_process(resumed(then, runs / stamp(1)), runs / stamp(2))
    compare(then.output, lines, what=then.text)
    assert result["g_steps"] == 400

    _, quick_dir, _, _ = quick_start  # ckpt_path=<the quick start's run directory>
    result, lines = run_in_process(resumed(onwards, quick_dir), runs / stamp(3))
    compare(onwards.output, lines, what=onwards.text)

    empty = tmp_path / "qs"
    empty.mkdir()
    error, _ = fails_in_process([f"ckpt_path={empty}"], runs / stamp(4))
    compare(wrong.output, [f"ganrun: error: {error}"], subs={str(empty): "/tmp/qs"},
            what=wrong.text)


def test_nothing_written_over(tmp_path):
    """The README's second run into a finished run's directory: refused as shown, on the
    console, with nothing written."""
    first = find(r"^ganrun train\.steps=20 metrics=none hydra\.run\.dir=outputs/runs/first$")
    again = find(r"^ganrun train\.steps=40 metrics=none hydra\.run\.dir=outputs/runs/first$")
    assert console([GANRUN, *first.argv[1:]], cwd=tmp_path).returncode == 0
    run_dir = tmp_path / "outputs" / "runs" / "first"
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    proc = console([GANRUN, *again.argv[1:]], cwd=tmp_path)
    assert proc.returncode == 1
    compare(again.output, proc.stderr.splitlines(), subs={str(tmp_path): "/tmp/qs"},
            what=again.text)
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


def test_sample_and_eval(tmp_path, monkeypatch, capsys):
    """ganrun-sample and ganrun-eval of a 300-step run, `ganrun train.steps=300`, whose
    metrics.jsonl line the README shows too."""
    from ganrun.cli.tools import eval_main, sample_main

    jsonl = block_after("(here `ganrun train.steps=300`)")
    run_dir = tmp_path / "outputs" / "runs" / stamp()
    result, _ = run_in_process(["train.steps=300"], run_dir)
    shown = json.loads(jsonl[0])
    saved = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    shown.pop("seconds"), saved.pop("seconds")
    assert saved.keys() == shown.keys()
    same_json(saved, shown)

    monkeypatch.chdir(tmp_path)
    subs = {str(run_dir): "outputs/runs/2026-11-23_10-17-04"}
    for pattern in (r"^ganrun-sample \S+ n=30$", r"^ganrun-sample \S+ n=5 folder=true out=pngs$",
                    r"^ganrun-eval \S+10-17-04 n_fake=1000$"):
        command = find(pattern)
        monkeypatch.setattr(sys, "argv", [command.program, str(run_dir), *command.argv[2:]])
        (sample_main if command.program == "ganrun-sample" else eval_main)()
        compare(command.output, capsys.readouterr().out.splitlines(), subs=subs,
                what=command.text)
    assert len(list((tmp_path / "pngs").iterdir())) == 5

    command = find(r"^ganrun-eval \S+ --images ~/my_samples$")  # short form: nothing shown
    monkeypatch.setattr(sys, "argv", ["ganrun-sample", str(run_dir), "n=60", "folder=true",
                                      "out=my_samples"])
    sample_main()
    monkeypatch.setattr(sys, "argv", ["ganrun-eval", str(run_dir), "--images", "my_samples"])
    eval_main()
    header = next(line for line in capsys.readouterr().out.splitlines() if " samples vs " in line)
    assert header.startswith("my_samples: 60 samples vs 1797 real (digits, "), header


def test_eval_too_big(tmp_path, monkeypatch, capsys):
    """The README's ganrun-eval request over memory_limit, of a 2-step ring8 run, on a
    machine of the README's size (23.5 GiB): refused in one line with the estimate's parts,
    nothing written."""
    from ganrun import memory
    from ganrun.cli.tools import eval_main

    command = find(r"^ganrun-eval \S+<ring8-run> n_fake=400000$")
    run_dir = tmp_path / "outputs" / "runs" / stamp()
    run_in_process(["dataset=ring8", "train.steps=2", "metrics=none"], run_dir)
    before = sorted(run_dir.rglob("*"))
    monkeypatch.setattr(memory, "machine_memory", lambda: int(23.5 * 2**30))
    monkeypatch.setattr(sys, "argv", [command.program, str(run_dir), *command.argv[2:]])
    with pytest.raises(SystemExit) as exit_:
        eval_main()
    assert exit_.value.code == 1
    printed = capsys.readouterr()
    assert "Traceback" not in printed.err
    compare(command.output, printed.err.splitlines(), what=command.text)
    assert sorted(run_dir.rglob("*")) == before


def test_eval_is_reproducible(tmp_path):
    # ganrun-eval draws its samples from seed= (0): the same command prints the same
    # figures whatever torch's global state, and another seed other ones.
    import torch

    from ganrun.cli.tools import evaluate

    run_dir = tmp_path / "run"
    run_in_process(["train.steps=2", "metrics=none"], run_dir)
    torch.manual_seed(1)
    first = evaluate(str(run_dir), n_fake=100, n_real=100, names=["fid"])["metrics"]
    torch.manual_seed(2)
    assert evaluate(str(run_dir), n_fake=100, n_real=100, names=["fid"])["metrics"] == first
    other = evaluate(str(run_dir), n_fake=100, n_real=100, names=["fid"], seed=1)["metrics"]
    assert other != first


def test_sweep(tmp_path, monkeypatch, capsys):
    """The sweep as the console shows it, then ganrun-report on it (the README's report
    commands in their short form: the optimizer study's table needs its 18 runs)."""
    from ganrun.cli.report import main as report_main

    command = find(r"^ganrun -m loss=bce,hinge optim=adam,sgd train\.steps=20$")
    proc = console([GANRUN, *command.argv[1:]], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    compare(command.output, (proc.stdout + proc.stderr).splitlines(), what=command.text)
    (sweep,) = (tmp_path / "outputs" / "multiruns").iterdir()
    listed = " ".join(after_prompt(command.block, "ls ")).split()
    assert sorted(p.name for p in sweep.iterdir() if not p.name.startswith(".")) == sorted(listed)

    generic = find(r"^ganrun-report outputs/multiruns/<stamp> \[--metric")  # [--columns C | all]
    metric = re.search(r"\[--metric (\S+)\]", generic.text)[1]
    listed_columns = re.search(r"\[--columns (\S+) \| all\]", generic.text)[1]
    study = find(r"^ganrun-report \S+13-54-15 --columns")
    columns = study.argv[study.argv.index("--columns") + 1]
    for args in (["--metric", metric, "--columns", listed_columns], ["--columns", "all"],
                 ["--columns", columns]):
        monkeypatch.setattr(sys, "argv", ["ganrun-report", str(sweep), *args])
        report_main()
        out = capsys.readouterr().out
        header = next(line for line in out.splitlines() if line.startswith("| configuration"))
        if args[-1] != "all":
            wanted = args[-1].split(",")
            cells = [c.strip() for c in header.strip("|").split("|")]
            assert [c for c in cells if c in wanted] == wanted, header
    assert out.startswith(f"# Sweep {sweep.name}: 4 configurations\n"), out[:500]
    page = find(r"^ganrun-report outputs/multiruns/<stamp> --html$")  # opened in Chromium in
    monkeypatch.setattr(sys, "argv", ["ganrun-report", str(sweep), *page.argv[2:]])  # test_loggers
    report_main()
    assert capsys.readouterr().out.splitlines()[-1].endswith(f"{sweep / 'report.html'}")
    assert "4 configurations, sorted by fid (lower is better)" in out, out[:500]
    assert "| vs next |" in header and "| health warnings |" in header, header


def test_fleet_sweep(tmp_path):
    """The fleet launcher's sweep as the console shows it; each member's metrics.json says
    which fleet it trained in."""
    command = find(r"^ganrun -m hydra/launcher=fleet protocol=dyngan_grid ")
    proc = console([GANRUN, *command.argv[1:]], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    compare(command.output, (proc.stdout + proc.stderr).splitlines(), what=command.text)
    (sweep,) = (tmp_path / "outputs" / "multiruns").iterdir()
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    for k, job in enumerate(jobs):
        saved = json.loads((job / "metrics.json").read_text())
        assert saved["status"] == "finished"
        assert saved["fleet"] == {"size": 4, "member": k, "members": [j.name for j in jobs]}


def test_divergence(tmp_path):
    command = find(r"^ganrun optim=sgd optim\.lr_d=1e6")
    run_dir = tmp_path / "outputs" / "runs" / stamp()
    error, _ = fails_in_process(overrides_of(command)[0], run_dir, DivergedError)
    compare(command.output, [f"ganrun: diverged: {error}"], what=command.text)
    saved = json.loads((run_dir / "metrics.json").read_text())
    for line in after_prompt(command.block, "cat "):
        match = re.match(r'\s+"(\w+)": (.+?),?$', line)
        if match:
            assert saved[match[1]] == json.loads(match[2]), line


def test_interruption(tmp_path):
    """`kill -TERM` after the step the README shows (SigtermAt, for the same step every
    time), the console's lines, then the resumed run to its end."""
    first = find(r"^ganrun train\.steps=600 metrics=none log\.every=100$")
    resume = find(r"^ganrun train\.steps=600 metrics=none log\.every=100 ckpt_path=")
    killed = after_prompt(first.block, "kill -TERM")
    step = int(re.search(r"SIGTERM at generator step (\d+)", "\n".join(killed))[1])

    env = {**cli_env(), "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get(
        "PYTHONPATH", "")])}
    helper = sigterm_at(step)
    proc = console([GANRUN, *first.argv[1:], *helper], cwd=tmp_path, env=env)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-3000:]
    printed = (proc.stdout + proc.stderr).splitlines()
    compare(first.output, printed, what=first.text)
    compare(killed, printed, subs={" " + " ".join(helper): ""}, what="kill -TERM")

    (ckpt,) = tmp_path.glob("outputs/runs/*/checkpoints/last.ckpt")
    overrides = [re.sub(r"^ckpt_path=.*", f"ckpt_path={ckpt}", o) for o in overrides_of(resume)[0]]
    result, lines = run_in_process(overrides, tmp_path / "outputs" / "runs" / stamp(2))
    assert result["status"] == "finished" and result["g_steps"] == 600
    compare(resume.output, lines, what=resume.text)


def test_truncated_checkpoint(quick_start, tmp_path, monkeypatch):
    command = find(r"^ganrun ckpt_path=truncated\.ckpt$")
    _, quick_dir, _, _ = quick_start
    whole = (quick_dir / "checkpoints" / "last.ckpt").read_bytes()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "truncated.ckpt").write_bytes(whole[:len(whole) // 2])
    error, _ = fails_in_process(overrides_of(command)[0], tmp_path / "outputs" / "runs" / stamp())
    compare(command.output, [f"ganrun: error: {error}"], what=command.text)


def make_discs(folder: Path, n: int, size: int = 32, seed: int = 0) -> Path:
    """n PNGs of one coloured disc each on a dark ground, like the README's `my_pngs`."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for i in range(n):
        img = Image.new("RGB", (size, size), tuple(int(c) for c in rng.integers(0, 40, 3)))
        r = int(rng.integers(size // 6, size // 3))
        x, y = (int(v) for v in rng.integers(r, size - r, 2))
        colour = tuple(int(c) for c in rng.integers(60, 256, 3))
        ImageDraw.Draw(img).ellipse([x - r, y - r, x + r, y + r], fill=colour)
        img.save(folder / f"disc_{i:03d}.png")
    return folder


def test_image_folder_offline(tmp_path, monkeypatch, capsys):
    """The offline image-folder run in its short form: 2 steps, not 300 (~50 s), on 300
    fixture discs, not the README's own PNGs: its lines are compared with every number
    masked; ganrun-eval of it likewise, its refusal of five images exactly."""
    from ganrun.cli.tools import eval_main, sample_main

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no Inception weights at hand
    monkeypatch.chdir(tmp_path)
    command = find(r"^ganrun dataset=image_folder dataset\.root=my_pngs")
    folder = make_discs(tmp_path / "my_pngs", 300)
    overrides = [f"dataset.root={folder}" if o == "dataset.root=my_pngs" else o
                 for o in overrides_of(command)[0] if not o.startswith("train.steps=")]
    run_dir = tmp_path / "outputs" / "runs" / stamp()
    _, lines = run_in_process([*overrides, "train.steps=2"], run_dir)
    written = any("embedding written to" in line for line in lines)
    shown = [line for line in command.output  # said only by the run that writes it
             if written or "embedding written to" not in line]
    compare(shown, lines, subs=cache_subs(), figures=False, what=command.text)

    subs = {str(run_dir): "outputs/runs/2026-11-30_13-37-23"}
    evaluated = find(r"^ganrun-eval \S+13-37-23$")
    monkeypatch.setattr(sys, "argv", ["ganrun-eval", str(run_dir)])
    eval_main()
    compare(evaluated.output, capsys.readouterr().out.splitlines(), subs=subs, figures=False,
            what=evaluated.text)

    refused = find(r"^ganrun-eval \S+13-37-23 --images five$")
    monkeypatch.setattr(sys, "argv", ["ganrun-sample", str(run_dir), "n=5", "folder=true",
                                      "out=five"])
    sample_main()
    monkeypatch.setattr(sys, "argv", ["ganrun-eval", str(run_dir), *refused.argv[2:]])
    with pytest.raises(SystemExit) as exited:
        eval_main()
    assert exited.value.code == 1
    compare(refused.output, capsys.readouterr().err.splitlines(), subs=subs, what=refused.text)


STUDIES = [r"^ganrun experiment=optimizer_study$",
           r"^ganrun experiment=mode_collapse_study protocol=pacgan_grid ",
           r"^ganrun experiment=mode_collapse_study protocol=pacgan_ring ",
           r"^ganrun -m protocol=dyngan_grid,dyngan_ring ",
           r"^ganrun -m dataset=ring8 method=gan,pacgan2,unrolled,dyngan ",
           r"^ganrun -m protocol=pacgan_stacked_small_d seed=",
           r"^ganrun -m protocol=pacgan_ring method=gan,pacgan2 seed=",
           r"^ganrun -m protocol=pacgan_grid method=gan,pacgan2 seed="]


@pytest.mark.parametrize("pattern", STUDIES, ids=["optimizer", "pacgan_grid", "pacgan_ring",
                                                  "dyngan", "strips", "stacked", "ring_20k",
                                                  "grid_20k"])
def test_studies_short(pattern, tmp_path):
    """The studies' first job, 2 steps (the studies take from 15 minutes to hours)."""
    (overrides,) = overrides_of(find(pattern))
    (job,) = preset_sweep(overrides)
    overrides = [o for o in overrides if not o.startswith("train.steps=")]
    result, _ = run_in_process([*overrides, *job, "train.steps=2"], tmp_path / "run")
    assert result["status"] == "finished" and result["g_steps"] == 2 and result["metrics"]


@pytest.mark.parametrize("pattern", [r"pacgan_grid outputs/study/pacgan_ring", r"dyngan_30k",
                                     r"stacked_small_d", r"pacgan_ring_20k"])
def test_mode_collapse_tables(pattern):
    """The README's tables from the study runs kept in docs/mode_collapse_study (each
    sweep's third seed ran apart, in <sweep>_seed2), every row exactly."""
    command = find(r"^python scripts/mode_collapse_table\.py .*" + pattern)
    args = []
    for arg in command.argv[2:]:
        if arg.startswith("outputs/study/"):
            name, kept_in = Path(arg).name, REPO / "docs" / "mode_collapse_study"
            kept = sorted([*kept_in.glob(name), *kept_in.glob(name + "_seed*")])
            assert kept, arg
            args += map(str, kept)
        else:
            args.append(arg)
    proc = console([sys.executable, str(REPO / command.argv[1]), *args], cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    printed = [line for line in proc.stdout.splitlines() if line.startswith("|")]
    text = README.read_text().splitlines()
    after = text[command.line:]
    end = next(i for i, line in enumerate(after) if line.startswith("#"))
    shown = [line for line in after[:end] if line.startswith("|")]
    assert shown == printed


def _masked_runs(line: str) -> str:
    return re.sub(r"<n>(?: <n>)+", "<n>", masked(line))


BENCHES = [
    pytest.param(r"^python scripts/bench_throughput\.py",
                 ["--configs", "ring8_mlp_b64", "--steps", "4", "--warmup", "1", "--repeats", "1",
                  "--chunk", "2"], ("ring8_mlp_b64:", "RATIO ring8_mlp_b64 "), id="throughput"),
    pytest.param(r"^python scripts/bench_fleet\.py --runs ",
                 ["--runs", "--configs", "dyngan_grid", "--members", "2", "--run-steps", "20",
                  "--out", "/tmp/ganrun-readme-bench-fleet"],
                 ("runs:dyngan_grid N=", "RATIO runs:dyngan_grid "), id="fleet_runs"),
    pytest.param(r"^python scripts/bench_fleet\.py --configs ",
                 ["--configs", "dyngan_grid", "--members", "2", "--steps", "2", "--repeats", "1"],
                 ("RATIO dyngan_grid ",), id="fleet_steps"),
    pytest.param(r"^python scripts/bench_metrics\.py$",
                 ["--extractors", "random_conv", "--n", "60", "--n-real", "60", "--repeats", "1"],
                 ("random_conv (", "RATIO random_conv_"), id="metrics"),
]


@pytest.mark.parametrize("pattern,args,starts", BENCHES)
def test_bench_scripts_short(pattern, args, starts, monkeypatch, capsys):
    """The benchmarks in a short form (their figures are timings): lines of the README's
    shape for the configuration run, numbers masked."""
    command = find(pattern)
    script = REPO / command.argv[1]
    monkeypatch.setattr(sys, "argv", [str(script), *args])
    loggers = [logging.getLogger(n) for n in ("pytorch_lightning", "lightning.pytorch",
                                              "lightning_fabric", "ganrun")]
    levels = [logger.level for logger in loggers]
    try:
        with warnings.catch_warnings():
            runpy.run_path(str(script), run_name="__main__")
    finally:  # the script quiets them for its own output
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
    printed = [_masked_runs(line) for line in capsys.readouterr().out.splitlines()]
    shown = [_masked_runs(line) for line in command.output if line.startswith(starts)]
    assert shown and all(line in printed for line in shown), (shown, printed)


def test_bench_health_short(tmp_path, monkeypatch, capsys):
    """scripts/bench_health.py on a collapsed and a healthy constructed case: the monitor's
    warning as the README's table gives it, no false alarm, the confusion matrix."""
    command = find(r"^python scripts/bench_health\.py$")
    script = REPO / command.argv[1]
    monkeypatch.setattr(sys, "argv", [str(script), "--only", "one_mode", "data",
                                      "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as exited:
        runpy.run_path(str(script), run_name="__main__")
    printed = capsys.readouterr().out
    assert exited.value.code == 0, printed
    assert "monitor: mode_collapse at step 40: the samples sit on 1 of 8 modes" in printed
    assert "named:   collapse from step 20, warned at step 40" in printed
    assert "== data (" in printed and "monitor: silent" in printed
    assert ("false alarms: 0 (target 0); true failures named within two evaluations: 1 of 1 "
            "(target all)") in printed


# --- -m slow: the rest ----------------------------------------------------------------------


# Commands whose parts no other test here trains: 2 steps each in the default selection
# (every command, as written, under -m slow). Their README blocks show no figures.
SHORT_RUNS = {
    # 2 steps of the preset's ResNet (256/128 channels, 5 D steps of 64) take ~40 s on 2
    # cores: the same blocks, spectral norm, hinge loss and decay, narrower.
    r"^ganrun experiment=sngan_paper ": ["dataset.batch_size=16", "model.g_channels=64",
                                        "model.d_channels=64"],
    r"^ganrun regularizer=\[spectral_norm,ema,diversity\]": [],
    r"^ganrun model=dcgan dataset\.image_size=32 model\.conditional=true$": [],
    r"^ganrun protocol=dyngan_grid method=dyngan ": [],
    r"^ganrun dataset=grid25 train\.steps=1000 regularizer=\[pacgan\]": [],
    r"^ganrun dataset=ring8 train\.steps=500 regularizer=\[unrolled\]": [],
    r"^ganrun loss=wgan_gp optim=adam$": [],
}


@pytest.mark.parametrize("pattern", list(SHORT_RUNS),
                         ids=[re.sub(r"[\\^$]", "", p).removeprefix("ganrun ").strip()
                              for p in SHORT_RUNS])
def test_short_run(pattern, tmp_path):
    """2 steps, no metrics: the command trains (the full runs take minutes to hours)."""
    command = find(pattern)
    (overrides,) = overrides_of(command, Data(tmp_path))
    overrides = [o for o in overrides if not o.startswith("train.steps=")]
    result, _ = run_in_process([*overrides, *SHORT_RUNS[pattern], "train.steps=2", "log.every=1",
                                "metrics=none"], tmp_path / "run")
    assert result["status"] == "finished" and result["g_steps"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("command", TRAINING, ids=[c.id for c in TRAINING])
def test_slow_every_job_composes_and_runs_two_steps(command, tmp_path):
    """Every job of a command's sweeps (and of its preset's) composes and validates, and
    its first job trains 2 steps."""
    from ganrun.config.schema import validate

    if error_shown(command) or "ckpt_path=" in command.text:
        pytest.skip("an error example or a resume: run by the tests above")
    data = Data(tmp_path)
    for overrides in overrides_of(command, data, every_job=True):
        for job in preset_sweep(overrides, every_job=True):
            validate(compose_config(*overrides, *job)[0])
    (overrides,) = overrides_of(command, data)
    (job,) = preset_sweep(overrides)
    # Launchers, DDP (test_slow_ddp) and the README's my_callbacks.py (tests/test_extending.py)
    # are left out: this is about the training options.
    overrides = [o for o in [*overrides, *job] if not o.startswith(
        ("hydra", "train.steps=", "trainer=ddp", "trainer.devices", "+callbacks.weight_norm"))]
    result, _ = run_in_process([*overrides, "train.steps=2", "log.every=1"], tmp_path / "run")
    assert result["status"] == "finished" and result["g_steps"] == 2


@pytest.mark.slow
def test_slow_ddp(tmp_path):
    command = find(r"^ganrun trainer=ddp trainer\.accelerator=cpu trainer\.devices=2 ")
    proc = console([GANRUN, *command.argv[1:]], cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    compare(command.output, (proc.stdout + proc.stderr).splitlines(), what=command.text)


@pytest.mark.slow
def test_slow_ring8_blur(tmp_path):
    """`ganrun dataset=ring8` to its end: the metrics lines and the blur the README shows."""
    shown = block_after("every mode held, few on a mode yet (`ganrun dataset=ring8`)")
    _, lines = run_in_process(["dataset=ring8"], tmp_path / "run")
    compare(shown, lines, what="ganrun dataset=ring8")


@pytest.mark.slow
def test_slow_dyngan_partitions(tmp_path):
    """DynGAN's split lines, `ganrun protocol=dyngan_grid method=dyngan train.steps=10000`
    (seed 0), up to the last split shown."""
    marker = "(`ganrun protocol=dyngan_grid method=dyngan train.steps=10000`, seed 0)"
    shown = block_after(marker)
    last = max(int(s) for s in re.findall(r"dyngan: step (\d+)", "\n".join(shown)))
    overrides = ["protocol=dyngan_grid", "method=dyngan", "train.steps=10000"]
    _, lines = fails_in_process([*overrides, *sigterm_at(last + 1)], tmp_path / "run",
                                Interrupted)
    compare(shown, lines, what=marker)


if __name__ == "__main__":  # python tests/test_readme.py <file>: see REFRESH
    text = README.read_text()
    for record in map(json.loads, Path(sys.argv[1]).read_text().splitlines()):
        if record["old"] not in text and record["new"] not in text:
            sys.exit(f"{record['old']!r} is not in the README: change it by hand")
        text = text.replace(record["old"], record["new"])  # a value shown twice: both
    README.write_text(text)
