"""Health diagnostics in every run: what a GAN researcher looks at to see a run fail.

Measured at every step the step statistics are logged (log.every), on the device,
and read back with them in the same transfer (no host sync of its own):

- health/collapsed_share: DynGAN's collapse detector as a monitor. On a fixed
  subset of the real data, D's probability of "real" per sample, averaged over the
  logs (exponential average, weight `ema`, started at the first value); a sample
  is collapsed when its average exceeds 1 / (1 + delta), i.e. when (for an optimal
  D) the generator puts less than delta times the data's density there. For
  critic losses the probability is the share of the step's generated samples D
  scores below the real one (ganrun.dyngan.collapse_probability).
- health/d_accuracy_real, health/d_accuracy_fake: D's accuracy on the step's last
  real and generated batch, at the loss's decision boundary.
- health/grad_norm_g, health/grad_norm_d: the L2 norm of G's and D's gradients at
  their last update of the step.

Read against the run's history, they give one warning line each, once per run
(the log and metrics.json's `health`): vanishing gradients (D near-perfect while
G's gradient norm has fallen by `vanish_drop` from its peak), mode collapse
(modes or classes covered at most `coverage_floor` of all, or `coverage_drop` of
their best, at two evaluations in a row; or the collapsed share above
`collapse_warn` at two logs in a row, from the WARM_LOGS-th log on: in its first
steps D tells every real sample from G's noise, which is not yet a collapse),
oscillation (D's margin, its mean score on real minus generated samples over a
log interval, changing sign at least three times over the last `window` logs with
a range of at least `swing`: of the probability for minimax losses, of the mean
absolute score for critics).
"""

from __future__ import annotations

import logging
from collections import deque

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from ganrun.callbacks.metrics import Metrics
from ganrun.callbacks.stats import StepStats
from ganrun.dyngan import collapse_probability
from ganrun.samples import evaluating

log = logging.getLogger("ganrun")
WARM_LOGS = 5  # the collapse detector warns from its 5th log on

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
                 ema: float):
        self.real, self.labels, self.index = real, labels, index
        self.threshold, self.ema = 1.0 / (1.0 + delta), ema
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
        labels = self.labels
        if module.partitioner is not None:
            labels = module.partitioner.real_labels(self.index.to(module.device))
        with evaluating(module.D) as D:
            subset_out = D(self.real, labels)
        p = collapse_probability(subset_out, fake_out, module.probability_outputs)
        self.scores = p if self.scores is None else self.scores.lerp_(p, self.ema)
        zero = real_out.new_zeros(())
        values = [(self.scores > self.threshold).float().mean(),
                  (real_out > decision).float().mean(), (fake_out <= decision).float().mean(),
                  self.norms.get("G", zero), self.norms.get("D", zero)]
        return dict(zip(NAMES, (v.to(real_out) for v in values), strict=True))


class HealthMonitor(pl.Callback):
    order = 5  # after the step statistics are read back, before the checkpoint

    def __init__(self, subset: int = 256, delta: float = 0.2, ema: float = 0.1,
                 collapse_warn: float = 0.5, vanish_accuracy: float = 0.99,
                 vanish_drop: float = 100.0, coverage_floor: float = 0.5,
                 coverage_drop: float = 0.6, swing: float = 0.3, window: int = 8):
        self.subset, self.delta, self.ema = subset, delta, ema
        self.collapse_warn, self.vanish_accuracy = collapse_warn, vanish_accuracy
        self.vanish_drop, self.coverage_floor, self.coverage_drop = (
            vanish_drop, coverage_floor, coverage_drop)
        self.swing, self.window = swing, window
        self.probe: Probe | None = None
        self.probability = True
        self.fixes = ""  # the techniques to suggest, those not already on
        self.stats: StepStats | None = None
        self.metrics: Metrics | None = None
        self.coverage_of: tuple[str, int] | None = None  # (metric, how many there are)
        self.warnings: list[dict] = []
        self.last: dict[str, float] = {}
        self._history: dict = {}
        self._restored: dict | None = None  # a checkpoint's state, applied at train start

    # --- set-up and arming -------------------------------------------------------------

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.stats = next((c for c in trainer.callbacks if isinstance(c, StepStats)), None)
        self.metrics = next((c for c in trainer.callbacks if isinstance(c, Metrics)), None)
        if trainer.datamodule is None:  # fitted on a bare dataloader: nothing to watch
            return
        dataset = trainer.datamodule.dataset
        generator = torch.Generator().manual_seed(pl_module.cfg.seed)
        n = min(self.subset, len(dataset)) // pl_module.D.pack * pl_module.D.pack
        index = torch.randperm(len(dataset), generator=generator)[:n]
        real = pl_module.as_d_input(dataset.data[index].to(pl_module.device))
        labels = (dataset.labels[index].to(pl_module.device)
                  if pl_module.num_classes and pl_module.partitioner is None else None)
        self.probe = Probe(real, labels, index, self.delta, self.ema)
        names = set(pl_module.cfg.metrics.names)
        if "modes" in names and pl_module.points:
            from ganrun.data import mixture_centres

            self.coverage_of = ("modes", len(mixture_centres(pl_module.cfg.dataset)))
        elif "class_coverage" in names and dataset.num_classes:
            self.coverage_of = ("classes_covered", dataset.num_classes)
        self.probability = pl_module.probability_outputs
        active = set(pl_module.cfg.regularizer)
        fixes = [f"[{r}]" for r in ("dyngan", "pacgan", "unrolled", "minibatch_discrimination")
                 if r not in active]
        self.fixes = (f"try regularizer={', '.join(fixes[:-1])} or {fixes[-1]}" if len(fixes) > 1
                      else f"try regularizer={fixes[0]}" if fixes
                      else "try a longer run or other settings of the active techniques")
        self._history = {"margin": deque(maxlen=self.window), "peak_g": (0.0, 0),
                         "collapsed_runs": 0, "best_coverage": (0, 0)}

    # --- resumed runs go on where they stopped: the averages, the history, the warnings

    def state_dict(self) -> dict:
        h = self._history
        return {"scores": None if self.probe is None else self.probe.scores,
                "warnings": self.warnings, "last": self.last,
                "history": {**h, "margin": list(h.get("margin", []))}}

    def load_state_dict(self, state: dict) -> None:
        self._restored = state

    def on_train_start(self, trainer, pl_module) -> None:
        state = self._restored
        if state is None or self.probe is None:
            return
        scores = state.get("scores")
        self.probe.scores = None if scores is None else scores.to(pl_module.device)
        self.warnings, self.last = list(state["warnings"]), dict(state["last"])
        history = dict(state["history"])
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
        if step is None or not trainer.is_global_zero:
            return
        if self.stats is not None and self.stats.logged_at == step:
            self.last = {k: v for k, v in self.stats.last.items() if k.startswith("health/")}
            if self.last:
                self._judge_step(step, self.stats.last)
        if self.metrics is not None and self.metrics.measured_at == step and self.coverage_of:
            self._judge_coverage(step, self.metrics.last)

    # --- the rules ---------------------------------------------------------------------

    def _judge_step(self, step: int, last: dict[str, float]) -> None:
        h = self._history
        accuracy = 0.5 * (last["health/d_accuracy_real"] + last["health/d_accuracy_fake"])
        norm_g = last["health/grad_norm_g"]
        peak, peak_step = h["peak_g"]
        if norm_g > peak:
            h["peak_g"] = (norm_g, step)
        elif accuracy >= self.vanish_accuracy and norm_g * self.vanish_drop <= peak:
            self._warn("vanishing_gradients", step,
                       f"D tells real from fake {100 * accuracy:.1f}% of the time and G's "
                       f"gradient norm fell from {peak:.3g} (step {peak_step}) to {norm_g:.3g}; "
                       "try loss=nsgan or wgan_gp, label smoothing or a slower D")
        share = last["health/collapsed_share"]
        h["collapsed_runs"] = h["collapsed_runs"] + 1 if share > self.collapse_warn else 0
        h["logs"] = h.get("logs", 0) + 1
        if h["collapsed_runs"] >= 2 and h["logs"] >= WARM_LOGS:
            self._warn("mode_collapse", step,
                       f"{100 * share:.0f}% of a fixed set of real samples look collapsed to D "
                       f"(averaged D(x) > 1/(1+{self.delta:g})): G does not produce them; "
                       f"{self.fixes}", evidence="detector")
        # D's margin, its mean score on real minus generated samples over the interval:
        # it changes sign when G and D take turns winning.
        series = h["margin"]
        series.append((last["D/real"] - last["D/fake"],
                       0.5 * (abs(last["D/real"]) + abs(last["D/fake"]))))
        margins = [m for m, _ in series]
        scale = 1.0 if self.probability else sum(s for _, s in series) / len(series)
        flips = sum(1 for a, b in zip(margins, margins[1:], strict=False) if (a > 0) != (b > 0))
        if flips >= 3 and max(margins) - min(margins) >= self.swing * scale:
            self._warn("oscillation", step,
                       f"D's margin (mean score on real minus generated samples) changed sign "
                       f"{flips} times over the last {len(series)} logs, between "
                       f"{min(margins):.3g} and {max(margins):.3g}: G and D take turns winning; "
                       "try lower learning rates, optim.n_critic > 1 or a gradient penalty")

    def _judge_coverage(self, step: int, results: dict) -> None:
        key, total = self.coverage_of
        if key not in results:
            return
        covered = int(results[key])
        best, best_step = self._history["best_coverage"]
        if covered > best:
            self._history["best_coverage"] = best, best_step = covered, step
        low = covered <= self.coverage_floor * total or covered <= self.coverage_drop * best
        # Two evaluations in a row: one early evaluation of a generator still learning
        # is not yet a collapse.
        self._history["low_runs"] = self._history.get("low_runs", 0) + 1 if low else 0
        if self._history["low_runs"] >= 2:
            what = "modes" if key == "modes" else "classes"
            best_so_far = f"best {best} at step {best_step}" if best else "none at any evaluation"
            self._warn("mode_collapse", step,
                       f"the generator covers {covered} of {total} {what} ({best_so_far}); "
                       f"{self.fixes}", evidence="coverage")

    def _warn(self, kind: str, step: int, message: str, evidence: str = "") -> None:
        """Once per kind and evidence (mode collapse: the coverage, or the detector)."""
        if any(w["kind"] == kind and w.get("evidence", "") == evidence for w in self.warnings):
            return
        entry = {"kind": kind, "step": step, "message": message}
        self.warnings.append({**entry, "evidence": evidence} if evidence else entry)
        log.warning("health: %s at generator step %d: %s", kind.replace("_", " "), step, message)

    def summary(self) -> dict:
        """metrics.json's `health`: the last measurements and every warning."""
        return {**{k.removeprefix("health/"): v for k, v in self.last.items()},
                "warnings": self.warnings}
