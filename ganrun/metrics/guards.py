"""The sample counts each metric needs, checked before it is computed.

Every sample-based metric needs at least MIN_SAMPLES on each side it reads (IS reads
only the generated side); precision/recall and density/coverage, whose k-NN balls
grow as the samples thin out, need at least KNN_PER_K x k. Below that ganrun refuses,
naming the minimum: `ganrun-eval --images` on five images would otherwise print a
KID of -6390 and a recall of 1. Two settings adapt instead, with a warning and a
record in the protocol: KID's subsets shrink to the samples there are, and IS uses
fewer splits so each keeps MIN_SAMPLES. Class and mode coverage count samples and
have no minimum.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ganrun.errors import UserError

MIN_SAMPLES = 50
KNN_PER_K = 10
PPL_MIN_PAIRS = 100
# The sides each metric reads: generated ("fake") and real.
SIDES = {"fid": ("fake", "real"), "kid": ("fake", "real"), "pr": ("fake", "real"),
         "dc": ("fake", "real"), "is": ("fake",)}


@dataclass
class Counts:
    """What the metrics will use: KID's subset size and IS's splits, and the sentences
    saying where they differ from the configured ones."""

    kid_subset_size: int
    is_splits: int
    adapted: list[str] = field(default_factory=list)

    def record(self) -> dict:
        """The protocol's entry: the counts used, and what was adapted."""
        out = {"kid_subset_size": self.kid_subset_size, "is_splits": self.is_splits}
        return {**out, "adapted": self.adapted} if self.adapted else out


def minimum(cfg, name: str) -> int:
    """The fewest samples metric `name` accepts on each side it reads."""
    k = {"pr": cfg.pr_k, "dc": cfg.dc_k}.get(name, 0)
    return max(MIN_SAMPLES, KNN_PER_K * k)


def counts(cfg, n_fake: int, n_real: int | None, fake_name: str = "generated samples",
           names: list[str] | None = None) -> Counts:
    """The counts for n_fake generated and n_real real samples (None: not known yet, as
    when a config is validated) of the metrics `names` (default metrics.names); raises
    UserError when one of them has too few."""
    names = list(cfg.names if names is None else names)
    if "kid" in names and cfg.kid_subset_size < MIN_SAMPLES:
        raise UserError(f"metrics.kid_subset_size={cfg.kid_subset_size}: KID needs subsets of "
                        f"at least {MIN_SAMPLES} samples")
    if "ppl" in names and cfg.ppl_samples < PPL_MIN_PAIRS:
        raise UserError(f"metrics.ppl_samples={cfg.ppl_samples}: ppl needs at least "
                        f"{PPL_MIN_PAIRS} latent pairs (its 1%/99% trimming)")
    for side, n, noun in (("fake", n_fake, fake_name), ("real", n_real, "real samples")):
        short: dict[int, list[str]] = {}
        for name in names:
            if side in SIDES.get(name, ()) and n is not None and n < minimum(cfg, name):
                short.setdefault(minimum(cfg, name), []).append(name)
        if short:
            needs = "; ".join(f"{', '.join(group)} need{'s' * (len(group) == 1)} at least {m}"
                              for m, group in sorted(short.items()))
            raise UserError(f"{n} {noun} are too few: {needs}; use more samples or leave "
                            "them out (metrics.names; ganrun-eval names=)")
    out = Counts(cfg.kid_subset_size, cfg.is_splits)
    available = min(n for n in (n_fake, n_real) if n is not None)
    if "kid" in names and available < cfg.kid_subset_size:
        out.kid_subset_size = available
        out.adapted.append(f"kid: subsets of {available} samples, not kid_subset_size="
                           f"{cfg.kid_subset_size} (only {available} on one side)")
    if "is" in names and n_fake < cfg.is_splits * MIN_SAMPLES:
        out.is_splits = n_fake // MIN_SAMPLES
        out.adapted.append(f"is: {out.is_splits} splits, not is_splits={cfg.is_splits} "
                           f"(each split keeps at least {MIN_SAMPLES} of {n_fake} samples)")
    return out
