"""The metrics' registry: a metric is one class in one file of ganrun/metrics/,
filed by `@METRICS.register` under the name `metrics.names` gives it:

    @METRICS.register
    class FID(Metric):
        name = "fid"
        outputs = {"fid": "lower"}  # each value it returns, and which way is better
        quality = {"fid": ("kid", "precision", "recall", "ppl")}  # ranks a sweep by default

        def real_terms(self, real, n_fake, counts):
            return {"fid_stats": lambda: engine.fid_statistics(real)}

        def compute(self, samples):
            return {"fid": engine.fid(engine.fid_statistics(samples.fake),
                                      samples.terms["fid_stats"])}

Everything else asks it: the schema its names and outputs (metrics.names,
optimized_metric), the guards its sides and minimum counts, the evaluator what
it reads, why it is skipped and what of the real side it caches, the HParams
table its columns, ganrun-report which way is better and what to rank by.
Importing ganrun.metrics imports every file of the folder, so a new metric is
one file there (and its name in metrics.names).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ganrun.registry import Registry

if TYPE_CHECKING:
    from torch import Tensor

# The fewest samples a metric reads on each side (its `minimum`); the k-NN metrics need
# KNN_PER_K x k, as their balls grow when the samples thin out (ganrun.metrics.guards).
MIN_SAMPLES = 50
KNN_PER_K = 10
# What a metric reads, in the order the results list them: on a 2-D mixture the exact
# mode figures lead (FID, KID and PR on raw coordinates see the mass at the right scale
# only), on stacked data the mode count read from the images themselves (`read`); the
# generator's own metrics (ppl) are measured by the metrics callback.
READS = ("points", "images", "features", "logits", "generator")
DIRECTIONS = ("lower", "higher", None)  # None: a companion (a spread), never ranked


@dataclass
class Counts:
    """What the metrics will use of their `counted` settings (KID's subset size, IS's
    splits: `counts.kid_subset_size`), and the sentences saying where they differ from
    the configured ones."""

    used: dict[str, int]
    adapted: list[str] = field(default_factory=list)

    def __getattr__(self, key: str) -> int:
        try:
            return self.__dict__["used"][key]
        except KeyError:
            raise AttributeError(key) from None

    def record(self) -> dict:
        """The protocol's entry: the counts used, and what was adapted."""
        return {**self.used, "adapted": self.adapted} if self.adapted else dict(self.used)


@dataclass
class Samples:
    """What a metric is computed from: the generated samples' features (the points
    themselves for 2-D data) and class logits (None without them), the real samples'
    features, the real-only terms cached with them (`Metric.real_terms`), the counts
    the guards settled on, and the dataset (with its config: a mixture's centres)."""

    fake: Tensor
    logits: Tensor | None
    real: Tensor
    terms: dict
    counts: Counts
    dataset: Any
    dataset_cfg: Any
    readings: dict[str, Tensor] = field(default_factory=dict)  # name -> its `read`, in order


class Metric:
    """A metric of generated samples against real ones, made with the metrics group's
    config (`cfg`: its flat keys, pr_k, kid_subsets, ... stay there)."""

    name = "metric"
    outputs: dict[str, str | None] = {}  # value it returns -> "lower"/"higher" is better, or None
    quality: dict[str, tuple[str, ...]] = {}  # outputs that rank a sweep by default, each
    #                                            with what report.md shows beside it
    reads = "features"  # one of READS
    sides: tuple[str, ...] = ("fake", "real")  # the sides that need `minimum()` samples
    neighbours: str | None = None  # the key of its k, for k-NN balls: KNN_PER_K x k samples
    counted: str | None = None  # a count setting the guards may adapt (`count`), recorded

    def __init__(self, cfg):
        self.cfg = cfg

    @classmethod
    def ranked(cls) -> list[str]:
        """Its outputs that can rank runs (optimized_metric, HParams' columns)."""
        return [output for output, direction in cls.outputs.items() if direction is not None]

    def check(self) -> None:
        """Rules of its settings beyond their ranges; raises UserError."""

    def minimum(self) -> int:
        """The fewest samples it accepts on each of its `sides`."""
        if self.neighbours is None:
            return MIN_SAMPLES
        return max(MIN_SAMPLES, KNN_PER_K * self.cfg[self.neighbours])

    def count(self, n_fake: int, n_real: int | None) -> tuple[int, str | None]:
        """Its `counted` setting for n_fake and n_real samples (None: not known yet),
        and the sentence saying why it differs from the configured one (None: it
        does not)."""
        return self.cfg[self.counted], None

    def skipped(self, extractor: str, dataset: str | None = None) -> str | None:
        """Why it cannot be measured with `extractor` on the dataset named `dataset`
        (None: not known); None when it can."""
        if self.reads == "points" and extractor != "raw":
            return "for the 2-D mixtures"
        if self.reads == "logits" and extractor in ("raw", "random_conv"):
            return f"extractor {extractor} gives no class probabilities"
        return None

    def prepare(self, evaluator) -> None:
        """Load (or train and cache) what it needs beyond the evaluator's extractor, once,
        when it applies (a classifier of its own)."""

    def read(self, images: Tensor) -> Tensor:
        """`reads = "images"`: its per-sample reading (N, ...) of generated images in
        [-1, 1], taken batch by batch with the features (and gathered under DDP)."""
        raise NotImplementedError

    def record(self) -> dict | None:
        """How it measures, for the protocol written beside its numbers (its rules, its
        classifier's accuracy); None: nothing beyond the common record."""
        return None

    def picture(self):
        """A picture (uint8 (H, W, 3)) of its last computation, or None: the metrics
        callback writes it beside the numbers (samples/<name>_step_<N>.png, TensorBoard)."""
        return None

    def real_terms(self, real: Tensor, n_fake: int, counts: Counts) -> dict[str, Callable]:
        """The real-only parts of it for n_fake generated samples, cached with the real
        features: cache key -> how to compute it."""
        return {}

    def compute(self, samples: Samples) -> dict[str, float]:
        """Its outputs."""
        raise NotImplementedError

    def working_set(self, n_fake: int, n_real: int, dim: int) -> float:
        """The bytes it holds at its peak beyond the features (n_fake and n_real of `dim`
        values), its real terms' included: what a run or an evaluation is refused by when
        it would not fit (ganrun.memory). An upper bound; nothing worth counting by default."""
        return 0.0


class MetricRegistry(Registry):
    """name -> Metric class, checked as it is filed."""

    def __init__(self):
        super().__init__("metric")

    def register(self, cls: type) -> type:
        if cls.reads not in READS:
            raise ValueError(f"metric {cls.name!r} reads {cls.reads!r}; valid: {READS}")
        wrong = {o: d for o, d in cls.outputs.items() if d not in DIRECTIONS}
        if wrong or not set(cls.quality) <= set(cls.ranked()):
            raise ValueError(f"metric {cls.name!r}: each output is lower or higher is better "
                             f"(or None), and only those rank a sweep ({wrong or cls.quality})")
        return super().register(cls)

    def in_order(self, names) -> list[str]:
        """`names` as the results list them: by what they read (READS), then as filed."""
        filed = list(self)
        return sorted(names, key=lambda name: (READS.index(self[name].reads), filed.index(name)))

    def direction(self, output: str) -> str | None:
        """"lower" or "higher" is better for a metric's output; None for a companion or
        something no metric gives."""
        return next((cls.outputs[output] for cls in self.values() if output in cls.outputs),
                    None)

    def quality(self) -> dict[str, tuple[str, ...]]:
        """The outputs that rank a sweep by default, first first, each with its
        companions (those of every metric giving it: `modes` on mixtures and stacked
        data)."""
        out: dict[str, tuple[str, ...]] = {}
        for name in self.in_order(self):
            for output, shown in self[name].quality.items():
                out[output] = tuple(dict.fromkeys(out.get(output, ()) + shown))
        return out


METRICS = MetricRegistry()
