"""Health diagnostics in every run: what a GAN researcher looks at to see a run fail,
and which failure it is (the rules: ganrun.callbacks.diagnoses).

Measured at every step the step statistics are logged (log.every), on the device,
and read back with them in the same transfer (no host sync of its own):

- health/collapsed_share: the collapse detector of Luo et al. (2024) as a monitor. On a fixed
  subset of the real data, D's probability of "real" per sample, averaged over the
  logs (exponential average, weight `rate`, started at the first value); a sample
  is collapsed when its average exceeds 1 / (1 + delta), i.e. when (for an optimal
  D) the generator puts less than delta times the data's density there. For
  critic losses the probability is the share of the step's generated samples D
  scores below the real one (ganrun.losses.real_probability).
- health/d_accuracy_real, health/d_accuracy_fake: D's accuracy on the step's last
  real and generated batch, at the loss's decision boundary.
- health/grad_norm_g, health/grad_norm_d: the L2 norm of G's and D's gradients at
  their last update of the step.

And every `coverage_every` generator steps (the metrics' schedule), where the
generator's mass lies: on the 2-D mixtures from samples of its own (every point to
its nearest mode: modes held, effective modes, share near a mode), on labelled
images from the metrics (classes covered, class KL, precision, recall), on other
images from precision and recall; logged as health/modes_held, ... .

Each failure is an episode: a warning when it begins (the log and metrics.json's
health.warnings, with its evidence in numbers), a line when it ends, and a new
warning if it comes back.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ganrun import loggers
from ganrun.callbacks.base import SideJob, peer
from ganrun.callbacks.diagnoses import (
    COLLAPSE_KINDS,
    Episodes,
    Thresholds,
    describe,
    judge_coverage,
    undecided_message,
)
from ganrun.callbacks.metrics import Metrics
from ganrun.callbacks.stats import StepStats
from ganrun.losses import real_probability
from ganrun.metrics.modes import mass_on_modes
from ganrun.ranges import above, at_least, between
from ganrun.regularizers import remedies
from ganrun.samples import evaluating, generate, noise

log = logging.getLogger("ganrun")
WARM_LOGS = 5  # the collapse detector warns from its 5th log on
MASS_SAMPLES = 10_000  # samples of the monitor's own on the 2-D mixtures (as many as the
#   papers count modes on: fewer make a mode near the 20% line come and go)
MASS_STREAM = 104_729  # their noise: a stream apart from training's and the metrics'

NAMES = ("health/collapsed_share", "health/d_accuracy_real", "health/d_accuracy_fake",
         "health/grad_norm_g", "health/grad_norm_d")


def grad_norm(net: nn.Module) -> Tensor:
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


class Probe:
    """Set on the module for one step (`module.probe`): the step hands it D's outputs
    and its gradients; `tensors()` turns them into the health statistics."""

    def __init__(self, real: Tensor, labels: Tensor | None, index: Tensor, delta: float,
                 rate: float):
        # labels: D's for the subset when they are fixed (the dataset's); None when a
        # regularizer supplies them, asked again at each log (they change as it learns)
        self.real, self.labels, self.index = real, labels, index
        self.threshold, self.rate = 1.0 / (1.0 + delta), rate
        self.scores: Tensor | None = None
        self.outputs: tuple[Tensor, Tensor] | None = None
        self.norms: dict[str, Tensor] = {}

    def record_outputs(self, real_out: Tensor, fake_out: Tensor) -> None:
        self.outputs = (real_out.detach(), fake_out.detach())

    def record_grads(self, name: str, net: nn.Module) -> None:
        self.norms[name] = grad_norm(net)

    @torch.no_grad()
    def tensors(self, module) -> dict[str, Tensor]:
        real_out, fake_out = self.outputs
        decision = module.loss.decision
        if decision is None:
            decision = 0.5 * (real_out.mean() + fake_out.mean())
        labels = (self.labels if module.labeller is None
                  else module.labels_of(self.index, None))
        with evaluating(module.D) as D:
            subset_out = D(self.real.to(real_out.dtype), labels)
        p = real_probability(subset_out, fake_out, module.probability_outputs)
        self.scores = p if self.scores is None else self.scores.lerp_(p, self.rate)
        zero = real_out.new_zeros(())
        values = [(self.scores > self.threshold).float().mean(),
                  (real_out > decision).float().mean(), (fake_out <= decision).float().mean(),
                  self.norms.get("G", zero), self.norms.get("D", zero)]
        return dict(zip(NAMES, (v.to(real_out) for v in values), strict=True))


@dataclass
class HealthRanges:
    """The values each setting takes (checked when the monitor is made)."""

    subset: int = at_least(1)
    delta: float = above(0)
    rate: float = between(0, 1, low_open=True)
    collapse_warn: float = between(0, 1)
    vanish_accuracy: float = between(0, 1)
    vanish_drop: float = at_least(1)
    collapse_share: float = between(0, 1, low_open=True)
    blur_quality: float = between(0, 1)
    blur_precision: float = between(0, 1)
    collapse_recall: float = between(0, 1)
    coverage_every: int = at_least(1)
    swing: float = above(0)
    window: int = at_least(3)


class HealthMonitor(SideJob):
    order = 5  # after the step statistics are read back and the metrics measured
    needs = (StepStats,)  # the statistics it judges are read at StepStats' logs
    uses = (Metrics,)  # where the generator's mass lies, on images
    ranges = HealthRanges

    def __init__(self, subset: int = 256, delta: float = 0.2, rate: float = 0.1,
                 collapse_warn: float = 0.5, vanish_accuracy: float = 0.99,
                 vanish_drop: float = 100.0, collapse_share: float = 0.75,
                 blur_quality: float = 0.5, blur_precision: float = 0.25,
                 collapse_recall: float = 0.2, coverage_every: int = 1000,
                 swing: float = 0.3, window: int = 8):
        self.check(**{k: v for k, v in locals().items() if k != "self"})
        self.subset, self.delta, self.rate = subset, delta, rate
        self.collapse_warn, self.vanish_accuracy = collapse_warn, vanish_accuracy
        self.vanish_drop, self.coverage_every = vanish_drop, coverage_every
        self.thresholds = Thresholds(collapse_share, blur_quality, blur_precision,
                                     collapse_recall)
        self.swing, self.window = swing, window
        self.probe: Probe | None = None
        self.probability = True
        self.fixes = ""  # the techniques to suggest, those not already on
        self.stats: StepStats | None = None
        self.metrics: Metrics | None = None
        self.centres: Tensor | None = None  # the 2-D mixture's modes
        self.std = 0.0
        self.classes = 0  # classes counted by the metrics (class_coverage), else 0
        self.can_tell = False  # whether collapse and blur can be told apart in this run
        self.episodes = Episodes()
        # (begin, end): judgements in a row that begin and end an episode. The mass is
        # judged at evaluations, seldom: one good evaluation ends a collapse or a blur.
        for name, begin, end in (("collapse", 2, 1), ("blur", 2, 1), ("undecided", 2, 2),
                                 ("vanishing_gradients", 2, 2), ("oscillation", 1, 2)):
            self.episodes.track(name, begin, end)
        self.last: dict[str, float] = {}
        self.coverage: dict = {}  # the last evaluation's evidence and state
        self._history: dict = {}
        self._restored: dict | None = None  # a checkpoint's state, applied at train start

    @property
    def warnings(self) -> list[dict]:
        return self.episodes.warnings

    # --- set-up and arming -------------------------------------------------------------

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.stats, self.metrics = peer(trainer, StepStats), peer(trainer, Metrics)
        if trainer.datamodule is None:  # fitted on a bare dataloader: nothing to watch
            return
        cfg = pl_module.cfg
        dataset = trainer.datamodule.dataset
        generator = torch.Generator().manual_seed(cfg.seed)
        n = min(self.subset, len(dataset)) // pl_module.D.pack * pl_module.D.pack
        index = torch.randperm(len(dataset), generator=generator)[:n]
        real = pl_module.as_d_input(dataset.data[index].to(pl_module.device))
        labels = None if pl_module.labeller else pl_module.labels_of(index, dataset.labels)
        self.probe = Probe(real, labels, index, self.delta, self.rate)
        names = set(cfg.metrics.names) if self.metrics is not None else set()
        if pl_module.points:
            from ganrun.data import mixture_centres

            self.centres, self.std = mixture_centres(cfg.dataset), float(cfg.dataset.std)
        elif "class_coverage" in names and dataset.num_classes:
            self.classes = dataset.num_classes
        self.can_tell = self.centres is not None or bool(self.classes) or "pr" in names
        self.probability = pl_module.probability_outputs
        active = set(cfg.regularizer)
        fixes = [f"[{r}]" for r in remedies("mode_collapse") if r not in active]
        self.fixes = (f"try regularizer={', '.join(fixes[:-1])} or {fixes[-1]}" if len(fixes) > 1
                      else f"try regularizer={fixes[0]}" if fixes
                      else "try a longer run or other settings of the active techniques")
        self._history = {"margin": deque(maxlen=self.window), "peak_g": (0.0, 0), "logs": 0,
                         "best_held": 0}

    # --- resumed runs go on where they stopped: the averages, the history, the episodes

    def state_dict(self) -> dict:
        h = self._history
        return {"scores": None if self.probe is None else self.probe.scores,
                "episodes": self.episodes.state_dict(), "last": self.last,
                "coverage": self.coverage,
                "history": {**h, "margin": list(h.get("margin", []))}}

    def load_state_dict(self, state: dict) -> None:
        self._restored = state

    def on_train_start(self, trainer, pl_module) -> None:
        state = self._restored
        if state is None or self.probe is None:
            return
        scores = state.get("scores")
        self.probe.scores = None if scores is None else scores.to(pl_module.device)
        self.episodes.load_state_dict(state.get("episodes")
                                      or {"warnings": state.get("warnings", [])})
        self.last, self.coverage = dict(state["last"]), dict(state.get("coverage", {}))
        history = {**self._history, **state["history"]}
        history["margin"] = deque(history["margin"], maxlen=self.window)
        self._history = history
        self._restored = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        """Arm the probe for the coming step when its statistics will be logged."""
        if self.stats is None or self.probe is None:
            return
        step = pl_module.g_steps + 1
        if step % self.stats.every == 0 or step == pl_module.max_steps:
            pl_module.probe = self.probe

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        pl_module.probe = None
        step = pl_module.trained_step
        if step is None or not trainer.is_global_zero or self.probe is None:
            return
        if self.stats is not None and self.stats.logged_at == step:
            self.last = {k: v for k, v in self.stats.last.items() if k.startswith("health/")}
            if self.last:
                self._judge_step(step, self.stats.last)
        if step % self.coverage_every == 0 or pl_module.finished:
            evidence = self._evidence(pl_module, step)
            if evidence:
                self._judge_coverage(trainer, step, evidence)

    # --- the evidence of where the generator's mass lies ------------------------------

    def _evidence(self, module, step: int) -> dict:
        results = (self.metrics.last if self.metrics is not None
                   and self.metrics.measured_at == step else {})
        evidence: dict = {}
        if self.centres is not None:
            devices = [module.device] if module.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(module.cfg.seed * 100_003 + step + MASS_STREAM)
                points = torch.cat([generate(module, z, y) for z, y in noise(module, MASS_SAMPLES)])
            evidence = {"what": "modes", "total": len(self.centres),
                        **mass_on_modes(points, self.centres, self.std,
                                        self.thresholds.near_std)}
        elif self.classes and "classes_covered" in results:
            evidence = {"what": "classes", "total": self.classes,
                        "held": int(results["classes_covered"]),
                        "effective": self.classes * math.exp(-results["class_kl"])}
        for name in ("precision", "recall"):
            if name in results:
                evidence[name] = float(results[name])
        if not evidence:
            return {}
        if "health/collapsed_share" in self.last:
            evidence["collapsed_share"] = self.last["health/collapsed_share"]
        return evidence

    # --- the rules (ganrun.callbacks.diagnoses) ----------------------------------------

    def _judge_coverage(self, trainer, step: int, evidence: dict) -> None:
        h = self._history
        kind, message = judge_coverage(evidence, h["best_held"], self.thresholds, self.fixes)
        now = describe(evidence)
        self.episodes.observe("collapse", step, kind if kind in COLLAPSE_KINDS else None,
                              message, evidence, now)
        self.episodes.observe("blur", step, kind if kind == "blur" else None, message,
                              evidence, now)
        if "held" in evidence:
            h["best_held"] = max(h["best_held"], evidence["held"])
        self.coverage = {"step": step, "state": kind or "healthy", **evidence}
        if "what" in evidence:
            what = evidence["what"]
            values = {f"health/{what}_held": evidence["held"],
                      f"health/effective_{what}": evidence["effective"]}
            if "near" in evidence:
                values["health/near_share"] = evidence["near"]
            loggers.scalars(trainer, values, step)

    def _judge_step(self, step: int, last: dict[str, float]) -> None:
        h = self._history
        accuracy = 0.5 * (last["health/d_accuracy_real"] + last["health/d_accuracy_fake"])
        norm_g = last["health/grad_norm_g"]
        peak, peak_step = h["peak_g"]
        if norm_g > peak:
            h["peak_g"] = (norm_g, step)
        vanishing = (norm_g <= peak and accuracy >= self.vanish_accuracy
                     and norm_g * self.vanish_drop <= peak)
        self.episodes.observe(
            "vanishing_gradients", step, "vanishing_gradients" if vanishing else None,
            f"D tells real from fake {100 * accuracy:.1f}% of the time and G's gradient norm "
            f"fell from {peak:.3g} (step {peak_step}) to {norm_g:.3g}; try loss=nsgan or "
            "wgan_gp, label smoothing or a slower D",
            {"d_accuracy": accuracy, "grad_norm_g": norm_g, "peak_grad_norm_g": peak,
             "peak_step": peak_step},
            f"D {100 * accuracy:.1f}% accurate, G's gradient norm {norm_g:.3g}")
        share = last["health/collapsed_share"]
        h["logs"] += 1
        if not self.can_tell:
            high = share > self.collapse_warn and h["logs"] >= WARM_LOGS
            self.episodes.observe("undecided", step, "collapse_or_blur" if high else None,
                                  undecided_message(share, self.delta),
                                  {"collapsed_share": share},
                                  f"{100 * share:.0f}% of the watched real samples collapsed")
        # D's margin, its mean score on real minus generated samples over the interval:
        # it changes sign when G and D take turns winning.
        series = h["margin"]
        series.append((last["D/real"] - last["D/fake"],
                       0.5 * (abs(last["D/real"]) + abs(last["D/fake"]))))
        margins = [m for m, _ in series]
        scale = 1.0 if self.probability else sum(s for _, s in series) / len(series)
        # Sign changes between margins at least half a swing from zero: a margin that
        # hovers around zero (G as good as the data) flips sign without anyone winning.
        sides = [m > 0 for m in margins if abs(m) >= 0.5 * self.swing * scale]
        flips = sum(1 for a, b in zip(sides, sides[1:], strict=False) if a != b)
        swinging = flips >= 3 and max(margins) - min(margins) >= self.swing * scale
        self.episodes.observe(
            "oscillation", step, "oscillation" if swinging else None,
            f"D's margin (mean score on real minus generated samples) changed sign {flips} "
            f"times over the last {len(series)} logs, between {min(margins):.3g} and "
            f"{max(margins):.3g}: G and D take turns winning; try lower learning rates, "
            "optim.n_critic > 1 or a gradient penalty",
            {"sign_changes": flips, "logs": len(series), "margin_min": min(margins),
             "margin_max": max(margins)},
            f"{flips} sign changes over the last {len(series)} logs")

    def summary(self) -> dict:
        """metrics.json's `health`: the last measurements, the last evidence of where the
        generator's mass lies, and every episode."""
        out = {k.removeprefix("health/"): v for k, v in self.last.items()}
        if self.coverage:
            out["coverage"] = self.coverage
        return {"health": {**out, "warnings": self.warnings}}
