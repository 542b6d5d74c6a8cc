"""The health monitor measured on labelled runs: does it name the failure a run has,
when it has it, and nothing else?

    python scripts/bench_health.py              # every case (about 10 minutes on 2 cores)
    python scripts/bench_health.py --quick      # the constructed cases only
    python scripts/bench_health.py --only ring8_default grid25_default

Each case is a real ganrun run. Its truth is read from the generator's samples at
every evaluation, by a callback of this script that draws samples of its own (five
times the monitor's, another noise stream) and never touches training:

- 2-D mixtures: every sample counts for its nearest mode; a mode is held when it gets
  at least 20% of a uniform generator's share. collapse: at most 3/4 of the modes
  held; blur: more held, but under half the samples within 3 std of a mode;
  healthy otherwise.
- labelled images: the classes the run's digits classifier gives 5,000 samples;
  collapse: at most 3/4 of the classes held (blur is not labelled on images).
- vanishing gradients, in every run: at the evaluation's log, D at least 99% accurate
  while G's gradient norm is 100 times below its peak so far (the health values
  the run logs: D's accuracy and G's gradient norm, measured on the step's batch);
- oscillation: by construction (a flipping D), from its first steps.

A failure the monitor must name is a state the truth shows at two evaluations in a
row or more (a state seen at one evaluation only is counted, but not required);
it is named in time when the monitor's warning comes by the second evaluation of
the episode. A false alarm is a warning of a kind the truth does not show at that
evaluation (collapse while the truth is blur, or any warning while healthy).

Prints per case the truth over time, what the monitor said and when, then the
confusion matrix over all evaluations (rows: the truth; columns: the monitor's open
episodes) and the two targets.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

REPO = Path(__file__).resolve().parents[1]
TRUTH_FILE = "truth.json"
TRUTH_SAMPLES = 10_000
TRUTH_STREAM = 7_777_777  # apart from training's, the metrics' and the monitor's noise
COLLAPSE, BLUR, HEALTHY = "collapse", "blur", "healthy"
# The monitor's kinds as truth states.
SAID = {"mode_collapse": COLLAPSE, "collapse_onset": COLLAPSE, "blur": BLUR,
        "vanishing_gradients": "vanishing", "oscillation": "oscillation",
        "collapse_or_blur": "collapse_or_blur"}


class Truth(pl.Callback):
    """At every judgement of the monitor (callbacks.health.coverage_every and the last
    step), the state read from samples of its own: truth.json in the run directory."""

    order = 6  # after the monitor

    def __init__(self, every: int, construction: str | None = None):
        self.every, self.construction = every, construction
        self.records: list[dict] = []
        self.gradients = (0.0, 0.0, 0.0)  # D's accuracy, G's gradient norm, its peak

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = pl_module.trained_step
        if step is None:
            return
        self._read_gradients(trainer, step)
        if not (step % self.every == 0 or pl_module.finished):
            return
        from ganrun.samples import generate_many

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(pl_module.cfg.seed * 100_003 + step + TRUTH_STREAM)
            fake = generate_many(pl_module, TRUTH_SAMPLES if pl_module.points else 5000)
        record = {"step": step, **(self._points(pl_module, fake) if pl_module.points
                                   else self._classes(trainer, pl_module, fake))}
        # D's accuracy and G's gradient norm at the last log: vanishing gradients when D is
        # near-perfect and the norm 100 times below its peak so far.
        accuracy, norm, peak = self.gradients
        vanishing = ["vanishing"] if accuracy >= 0.99 and norm * 100 <= peak else []
        record.update(d_accuracy=round(accuracy, 4), grad_norm_g=norm, peak_grad_norm_g=peak)
        # A step failure made on purpose is there from the start, beside the mass's state.
        record["states"] = sorted({record["state"], *vanishing, *([self.construction]
                                                                  if self.construction else [])}
                                  - {HEALTHY})
        self.records.append(record)
        path = Path(trainer.default_root_dir) / TRUTH_FILE
        path.write_text(json.dumps(self.records, indent=1))

    def _read_gradients(self, trainer, step: int) -> None:
        from ganrun.callbacks.stats import StepStats

        stats = next((c for c in trainer.callbacks if isinstance(c, StepStats)), None)
        if stats is None or stats.logged_at != step or "health/grad_norm_g" not in stats.last:
            return
        last = stats.last
        accuracy = 0.5 * (last["health/d_accuracy_real"] + last["health/d_accuracy_fake"])
        norm = last["health/grad_norm_g"]
        self.gradients = (accuracy, norm, max(self.gradients[2], norm))

    @staticmethod
    def _points(module, fake) -> dict:
        from ganrun.data import mixture_centres
        from ganrun.metrics.modes import mass_on_modes

        centres = mixture_centres(module.cfg.dataset)
        k = len(centres)
        mass = mass_on_modes(fake, centres, module.cfg.dataset.std)
        held, near = mass["held"], mass["near"]
        state = COLLAPSE if held <= 0.75 * k else BLUR if near < 0.5 else HEALTHY
        return {"state": state, "held": held, "of": k, "near": round(near, 4)}

    @staticmethod
    def _classes(trainer, module, fake) -> dict:
        from ganrun.callbacks.metrics import Metrics

        evaluator = next(c.evaluator for c in trainer.callbacks if isinstance(c, Metrics))
        logits = evaluator.features(fake)["logits"]
        k = module.trainer.datamodule.dataset.num_classes
        share = torch.bincount(logits.argmax(1), minlength=k).double() / len(fake)
        held = int((share >= 0.2 / k).sum())
        return {"state": COLLAPSE if held <= 0.75 * k else HEALTHY, "held": held, "of": k}


FAULT = "+callbacks.fault._target_=ganrun.callbacks.faults."
RING = ("dataset=ring8", "train.steps=200", "log.every=10", "metrics.every=20",
        "metrics.names=[modes,pr]", "metrics.n_fake=1000")
# name: (overrides, construction (a step failure's truth), constructed?)
CASES: dict[str, tuple[tuple[str, ...], str | None, bool]] = {
    "one_mode": ((*RING, FAULT + "OneModeG"), None, True),
    "segment": ((*RING, FAULT + "SegmentG"), None, True),
    "spread": ((*RING, FAULT + "SpreadG"), None, True),
    "data": ((*RING, FAULT + "DataG"), None, True),
    "onset": ((*RING, FAULT + "DataG", "+callbacks.fault.collapsed=[[100,200]]"), None, True),
    "d_wins": (("dataset=ring8", "loss=bce", "optim.lr_d=0.01", "optim.lr_g=1e-6",
                "train.steps=200", "log.every=10", "metrics.every=50",
                "metrics.names=[modes]"), None, True),
    "flipping_d": (("dataset=ring8", "train.steps=200", "log.every=10", "metrics.every=50",
                    "metrics.names=[modes]", "optim.lr_d=2e-3",
                    "+callbacks.flip._target_=ganrun.callbacks.faults.FlipD",
                    "+callbacks.flip.every=20",
                    "+callbacks.collapse._target_=ganrun.callbacks.faults.CollapseG"),
                   "oscillation", True),
    "ring8_default": (("dataset=ring8",), None, False),
    "grid25_default": (("dataset=grid25",), None, False),
    "dyngan_grid_gan": (("protocol=dyngan_grid", "method=gan", "train.steps=10000",
                         "metrics.every=1000"), None, False),
    "digits_default": ((), None, False),
    "digits_hinge": (("loss=hinge",), None, False),
    "digits_wgan_gp": (("loss=wgan_gp", "train.steps=1500", "metrics.every=500"), None, False),
}


def run_case(name: str, out: Path) -> Path:
    sys.path.insert(0, str(REPO / "scripts"))
    from ganrun.config.compose import compose_config
    from ganrun.training.run import run

    overrides, construction, _ = CASES[name]
    cfg, choices = compose_config(*overrides, "trainer.accelerator=cpu",
                                  "+callbacks.truth._target_=bench_health.Truth",
                                  "+callbacks.truth.every=${callbacks.health.coverage_every}",
                                  f"+callbacks.truth.construction={construction or 'null'}")
    run_dir = out / name
    run(cfg, run_dir=run_dir, hydra_choices=choices)
    return run_dir


def said_at(warnings: list[dict], step: int) -> set[str]:
    """The monitor's open episodes at `step`, as truth states."""
    return {SAID[w["kind"]] for w in warnings
            if w["step"] <= step and (w["ended_at"] is None or step < w["ended_at"])}


def episodes(truth: list[dict]) -> list[tuple[str, int, int]]:
    """(state, first evaluation index, length) of each run of evaluations that show a
    failure state."""
    out: list[tuple[str, int, int]] = []
    for state in sorted({s for record in truth for s in record["states"]}):
        first = None
        for i, record in enumerate([*truth, {"states": []}]):
            if state in record["states"] and first is None:
                first = i
            elif state not in record["states"] and first is not None:
                out.append((state, first, i - first))
                first = None
    return sorted(out, key=lambda e: e[1])


def judge(name: str, run_dir: Path) -> dict:
    truth = json.loads((run_dir / TRUTH_FILE).read_text())
    warnings = json.loads((run_dir / "metrics.json").read_text())["health"]["warnings"]
    cells, false_alarms, misses, named = [], [], [], []
    for record in truth:
        said = said_at(warnings, record["step"])
        cells.append((record["states"] or [HEALTHY], said))
        wrong = said - set(record["states"])
        if wrong:
            false_alarms.append((record["step"], sorted(wrong), record["states"] or [HEALTHY]))
    for state, first, length in episodes(truth):
        steps = [truth[i]["step"] for i in range(first, first + length)]
        hit = next((i for i, s in enumerate(steps) if state in said_at(warnings, s)), None)
        if length >= 2 and (hit is None or hit > 1):
            misses.append((state, steps[0], None if hit is None else steps[hit]))
        elif hit is not None:
            named.append((state, steps[0], steps[hit]))
    return {"truth": truth, "warnings": warnings, "cells": cells,
            "false_alarms": false_alarms, "misses": misses, "named": named}


def show(name: str, result: dict, seconds: float) -> None:
    timeline = "  ".join(f"{r['step']}:{'+'.join(r['states']) or HEALTHY}"
                         + (f"({r['held']}/{r['of']})" if "held" in r else "")
                         for r in result["truth"])
    print(f"\n== {name} ({seconds:.0f} s)\n   truth:   {timeline}")
    for w in result["warnings"]:
        ended = f", ended at {w['ended_at']}" if w["ended_at"] is not None else ""
        print(f"   monitor: {w['kind']} at step {w['step']}{ended}: {w['message'][:110]}...")
    if not result["warnings"]:
        print("   monitor: silent")
    for state, onset, at in result["named"]:
        print(f"   named:   {state} from step {onset}, warned at step {at}")
    for state, onset, at in result["misses"]:
        print(f"   MISSED:  {state} from step {onset} (warned at {at})")
    for step, kinds, states in result["false_alarms"]:
        print(f"   FALSE ALARM at step {step}: {', '.join(kinds)} while the truth is "
              f"{'+'.join(states)}")


def confusion(results: dict[str, dict]) -> None:
    rows = [HEALTHY, BLUR, COLLAPSE, "vanishing", "oscillation"]
    columns = ["silent", BLUR, COLLAPSE, "vanishing", "oscillation", "collapse_or_blur"]
    counts = {(r, c): 0 for r in rows for c in columns}
    for result in results.values():
        for states, said in result["cells"]:
            for state in states:
                for column in sorted(said) or ["silent"]:
                    counts[(state, column)] += 1
    width = max(len(c) for c in columns) + 2
    print("\nconfusion over evaluations (rows: truth, columns: the monitor's open episodes)")
    print(" " * 12 + "".join(c.rjust(width) for c in columns))
    for r in rows:
        print(r.ljust(12) + "".join(str(counts[(r, c)]).rjust(width) for c in columns))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the constructed cases only")
    parser.add_argument("--only", nargs="*", help="these cases")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench_health")
    args = parser.parse_args()
    names = args.only or [n for n, (_, _, constructed) in CASES.items()
                          if constructed or not args.quick]
    results = {}
    for name in names:
        started = time.perf_counter()
        run_dir = run_case(name, args.out)
        results[name] = judge(name, run_dir)
        show(name, results[name], time.perf_counter() - started)
    confusion(results)
    alarms = sum(len(r["false_alarms"]) for r in results.values())
    misses = sum(len(r["misses"]) for r in results.values())
    failures = sum(len(r["named"]) + len(r["misses"]) for r in results.values())
    print(f"\nfalse alarms: {alarms} (target 0); true failures named within two evaluations: "
          f"{failures - misses} of {failures} (target all)")
    return 0 if alarms == 0 and misses == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
