"""What the health monitor concludes from its evidence: the rules as functions of
numbers, and the episodes they begin and end (ganrun.callbacks.health gathers the
numbers).

Failures that look alike are told apart by where the generator's mass lies:

- mode collapse: few modes (2-D mixtures) or classes (labelled images) hold its
  samples, near them or not; on unlabelled images, recall is low. A collapse that
  follows a phase where the modes were held is a collapse *onset*.
- blur (or underfitting): the samples spread over the modes or classes, but few lie
  near a mode (2-D) or on the data (precision low). Its cure is not a mode-collapse
  technique.
- vanishing gradients: D near-perfect while G's gradient norm has fallen far below
  its peak.
- oscillation: D's margin (mean score on real minus generated samples) changing sign
  again and again.

the collapse detector of Luo et al. 2024 (the share of real samples D still tells from the generated ones)
is evidence, not a verdict: a blurred generator also leaves most real samples
"collapsed". It decides nothing where the modes can be counted; where they cannot
(no metric), a high share is named as what it is: collapse or blur, not told apart.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("ganrun")

COLLAPSE_KINDS = ("mode_collapse", "collapse_onset")


@dataclass
class Thresholds:
    collapse_share: float = 0.75   # collapse: at most this share of the modes / classes held
    blur_quality: float = 0.5      # blur (2-D): under this share of samples near a mode
    blur_precision: float = 0.25   # blur (images): precision under this
    collapse_recall: float = 0.2   # collapse (unlabelled images): recall under this
    near_std: float = 3.0          # "near a mode": within this many std of its centre


def _num(value: float) -> str:
    return f"{value:.3g}"


def judge_coverage(evidence: dict[str, Any], best_held: int, t: Thresholds,
                   fixes: str) -> tuple[str | None, str]:
    """(kind, message) of one evaluation's evidence: `mode_collapse`, `collapse_onset`
    (held modes fell after `best_held`, the most held before, was above the collapse
    line), `blur`, or None (healthy, or nothing to judge: message "")."""
    what, total = evidence.get("what"), evidence.get("total", 0)
    precision, recall = evidence.get("precision"), evidence.get("recall")
    detector = evidence.get("collapsed_share")
    seen = (f"; D's detector: {100 * detector:.0f}% of the watched real samples collapsed"
            if detector is not None else "")
    pr = "".join(f", {name} {_num(v)}" for name, v in (("precision", precision),
                                                       ("recall", recall)) if v is not None)
    if what is not None:
        held, effective = evidence["held"], evidence["effective"]
        line = t.collapse_share * total
        spread = f"effective {what} {effective:.3g}"
        if held <= line:
            if best_held > line:
                return "collapse_onset", (
                    f"the samples now sit on {held} of {total} {what}, down from {best_held} "
                    f"({spread}{pr}){seen}: the generator is dropping {what}; {fixes}")
            return "mode_collapse", (
                f"the samples sit on {held} of {total} {what} ({spread}{pr}){seen}: "
                f"the generator's mass is on a subset; {fixes}")
        near = evidence.get("near")
        if what == "modes" and near is not None and near < t.blur_quality:
            return "blur", (
                f"the samples spread over {held} of {total} modes ({spread}) but "
                f"{100 * near:.1f}% lie within {t.near_std:g} std of one{pr.replace(', ', ' (', 1)}"
                f"{')' if pr else ''}: blur between "
                f"the modes, not mode collapse; {BLUR_ADVICE}")
        if what == "classes" and precision is not None and precision < t.blur_precision:
            return "blur", (
                f"the samples spread over {held} of {total} classes ({spread}) but precision "
                f"is {_num(precision)} (recall {_num(recall) if recall is not None else '-'}): "
                "blurred or unformed samples, not mode "
                f"collapse; {BLUR_ADVICE}")
        return None, ""
    if recall is None or precision is None:
        return None, ""
    if precision < t.blur_precision:
        return "blur", (f"precision {_num(precision)} and recall {_num(recall)}: samples off "
                        f"the data (blur or underfitting), not mode collapse; {BLUR_ADVICE}")
    if recall < t.collapse_recall:
        return "mode_collapse", (f"recall {_num(recall)} with precision {_num(precision)}: "
                                 f"the samples cover a small part of the data{seen}; {fixes}")
    return None, ""


BLUR_ADVICE = ("train longer, or give D more capacity (model.hidden_dims_d) or a higher "
               "learning rate (optim.lr_d); instance noise and label smoothing blur on purpose")


def describe(evidence: dict[str, Any]) -> str:
    """The evidence in a few words: "8 of 8 modes held, 96.1% near one, recall 0.99"."""
    parts = []
    if evidence.get("what"):
        parts.append(f"{evidence['held']} of {evidence['total']} {evidence['what']} held")
    if evidence.get("near") is not None:
        parts.append(f"{100 * evidence['near']:.1f}% near one")
    parts += [f"{name} {_num(evidence[name])}" for name in ("precision", "recall")
              if evidence.get(name) is not None]
    return ", ".join(parts)


def undecided_message(share: float, delta: float) -> str:
    return (f"{100 * share:.0f}% of a fixed set of real samples look collapsed to D "
            f"(averaged D(x) > 1/(1+{delta:g})): the generator does not produce them, which "
            "mode collapse and blur between modes both cause; with no metric that counts "
            "modes or classes or measures recall (metrics.names: modes, class_coverage, pr) "
            "they cannot be told apart")


@dataclass
class Tracker:
    """One kind of failure over a run's judgements: it begins after `begin` judgements
    in a row that see it, and ends after `end` in a row that do not."""

    begin: int = 1
    end: int = 2
    present: int = 0
    absent: int = 0
    open: dict | None = None


@dataclass
class Episodes:
    """Every failure episode of a run: a warning when one begins, a log line when it
    ends ("recovered" when nothing else took its place). metrics.json's
    health.warnings holds each episode: kind, step, message, evidence, ended_at."""

    trackers: dict[str, Tracker] = field(default_factory=dict)
    warnings: list[dict] = field(default_factory=list)

    def track(self, name: str, begin: int, end: int = 2) -> None:
        self.trackers.setdefault(name, Tracker(begin, end))

    def observe(self, name: str, step: int, kind: str | None, message: str = "",
                evidence: dict | None = None, now: str = "") -> None:
        """`kind` is the failure seen by tracker `name` at this judgement (None: not
        seen); `now` says, for an episode that ends, what the evidence shows instead."""
        t = self.trackers[name]
        if kind is None:
            t.present, t.absent = 0, t.absent + 1
            if t.open is not None and t.absent >= t.end:
                self._close(t, step, now)
            return
        t.present, t.absent = t.present + 1, 0
        if t.open is None and t.present >= t.begin:
            t.open = {"kind": kind, "step": step, "message": message,
                      "evidence": dict(evidence or {}), "ended_at": None}
            self.warnings.append(t.open)
            log.warning("health: %s at generator step %d: %s", kind.replace("_", " "), step,
                        message)

    def _close(self, t: Tracker, step: int, now: str) -> None:
        entry, t.open = t.open, None
        entry["ended_at"] = step
        others = [w["kind"] for w in self.warnings if w["ended_at"] is None]
        how = (f"gave way to {others[-1].replace('_', ' ')}" if others
               else "recovered")
        log.info("health: %s (from step %d) %s at generator step %d%s",
                 entry["kind"].replace("_", " "), entry["step"], how, step,
                 f": {now}" if now else "")

    def state_dict(self) -> dict:
        return {"warnings": self.warnings,
                "trackers": {n: {"present": t.present, "absent": t.absent,
                                 "open": None if t.open is None else self.warnings.index(t.open)}
                             for n, t in self.trackers.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.warnings = [dict(w) for w in state.get("warnings", [])]
        for name, saved in state.get("trackers", {}).items():
            t = self.trackers.get(name)
            if t is None:
                continue
            t.present, t.absent = saved["present"], saved["absent"]
            t.open = None if saved["open"] is None else self.warnings[saved["open"]]
