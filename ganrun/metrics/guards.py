"""The sample counts each metric needs, checked before it is computed.

Every sample-based metric needs at least its `minimum()` on each side it reads (its
`sides`; MIN_SAMPLES, or for precision/recall and density/coverage, whose k-NN balls
grow as the samples thin out, KNN_PER_K x k; IS reads only the generated side).
Below that ganrun refuses, naming the minimum: `ganrun-eval --images` on five images
would otherwise print a KID of -6390 and a recall of 1. A metric's `counted` setting
adapts instead, with a warning and a record in the protocol: KID's subsets shrink to
the samples there are, and IS uses fewer splits so each keeps its minimum. Class and
mode coverage count samples and have no minimum.
"""

from __future__ import annotations

from ganrun.errors import UserError
from ganrun.metrics.registry import METRICS, Counts


def counts(cfg, n_fake: int, n_real: int | None, fake_name: str = "generated samples",
           names: list[str] | None = None) -> Counts:
    """The counts for n_fake generated and n_real real samples (None: not known yet, as
    when a config is validated) of the metrics `names` (default metrics.names); raises
    UserError when one of them has too few."""
    metrics = [METRICS[name](cfg) for name in (cfg.names if names is None else names)]
    for metric in metrics:
        metric.check()
    for side, n, noun in (("fake", n_fake, fake_name), ("real", n_real, "real samples")):
        short: dict[int, list[str]] = {}
        for metric in metrics:
            if side in metric.sides and n is not None and n < metric.minimum():
                short.setdefault(metric.minimum(), []).append(metric.name)
        if short:
            needs = "; ".join(f"{', '.join(group)} need{'s' * (len(group) == 1)} at least {m}"
                              for m, group in sorted(short.items()))
            raise UserError(f"{n} {noun} are too few: {needs}; use more samples or leave "
                            "them out (metrics.names; ganrun-eval names=)")
    # Every counted setting goes into the record, measured or not, so records compare.
    out = Counts({cls.counted: cfg[cls.counted] for cls in METRICS.values() if cls.counted})
    for metric in metrics:
        if metric.counted:
            out.used[metric.counted], adapted = metric.count(n_fake, n_real)
            if adapted:
                out.adapted.append(adapted)
    return out
