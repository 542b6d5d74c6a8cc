"""Benchmark ganrun's metric evaluation, side by side in one process.

1. ours vs standalone: the same generated and real samples, the same extractor,
   the same metrics (FID, KID, IS, precision/recall): torch_fidelity.calculate_metrics
   against ganrun's Evaluator with nothing of the real side cached yet.
2. cached vs first: the first evaluation on a machine against the next one, which
   reads the cache. For the classifier the first one also trains the classifier
   (`cold`); `stats` is the first with the classifier already cached. Each
   evaluation builds a new Evaluator, as a new run or `ganrun-eval` does.

Sample counts follow ganrun's protocols: the digits default (2000 generated against
the whole dataset, 1797) and, for inception, `metrics=inception`'s 1:5 (10k generated
against up to 50k real), scaled down to 50:250 for a CPU. With as many real samples
as generated the cached evaluation cannot be 2x faster (the generated side's work is
at least half of the first); `--n-real` equal to `--n` shows that bound.

Each timing is the median of --repeats runs, interleaved. Prints one line per ratio:
`RATIO <extractor>_standalone_over_ours <value>` (>= 1: ours is no slower) and
`RATIO <extractor>_<first>_over_cached <value>` (target >= 2).

    python scripts/bench_metrics.py        # classifier (digits), inception, random_conv
    python scripts/bench_metrics.py --extractors inception --n 100 --n-real 100

The inception run uses torch-fidelity's InceptionV3 with the real weights when they
are in the torch hub cache, else with random weights (same cost, numbers meaningless).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch_fidelity
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ganrun.cli.tools import with_metric_defaults  # noqa: E402
from ganrun.data import load_dataset  # noqa: E402
from ganrun.metrics.evaluator import Evaluator  # noqa: E402
from ganrun.metrics.extractors import (  # noqa: E402
    CLASSIFIER_NAME,
    INCEPTION_NAME,
    RANDOM_CONV_NAME,
    UInt8Images,
    inception_weights,
    random_conv_path,
    to_uint8_rgb,
    write_random_inception_weights,
)

METRICS = dict(kid_subsets=50, kid_subset_size=1000, pr_k=3)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench(extractor: str, n: int, n_real: int, repeats: int, workdir: Path) -> dict[str, float]:
    dataset = load_dataset(OmegaConf.create({"name": "digits", "image_size": 16, "channels": 1}))
    generator = torch.Generator().manual_seed(0)
    # "Generated": real digits (drawn with replacement) plus noise.
    fake = (dataset.data[torch.randint(len(dataset), (n,), generator=generator)]
            + 0.3 * torch.randn(n, 1, 16, 16, generator=generator)).clamp(-1, 1)
    weights = None
    if extractor == "inception":
        weights = inception_weights(None) or str(write_random_inception_weights(
            workdir / "inception.pth"))
    cache = workdir / f"cache-{extractor}"
    with_is = extractor != "random_conv"  # the random embedding has no class probabilities
    cfg = with_metric_defaults(OmegaConf.create({
        "names": ["fid", "kid", "is", "pr"] if with_is else ["fid", "kid", "pr"], "n_fake": n,
        "n_real": n_real, "extractor": extractor, "inception_weights": weights,
        "batch_size": 100, "cache_dir": str(cache), "kid_subsets": METRICS["kid_subsets"],
        "kid_subset_size": min(n, n_real, 1000), "pr_k": METRICS["pr_k"]}))
    Evaluator(cfg, dataset)  # trains / loads the classifier once, outside the timings
    stats_dir = cache / "stats"

    def ours_first():
        for f in stats_dir.glob("*.pt"):
            f.unlink()
        Evaluator(cfg, dataset).evaluate(fake)

    def ours_cold():  # nothing cached: the classifier is trained again too
        for f in cache.rglob("*"):
            if f.is_file() and f.suffix in (".pt", ".json"):
                f.unlink()
        Evaluator(cfg, dataset).evaluate(fake)

    def ours_cached():
        Evaluator(cfg, dataset).evaluate(fake)

    probe = Evaluator(cfg, dataset)
    name, path = {"classifier": (CLASSIFIER_NAME, str(getattr(probe, "classifier_path", ""))),
                  "inception": (INCEPTION_NAME, weights),
                  "random_conv": (RANDOM_CONV_NAME, str(random_conv_path(cache, 32)))}[extractor]
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))
    real = dataset.data[order[: probe.n_real]]
    layers = {"classifier": {"feature_layer_fid": "penultimate", "feature_layer_kid": "penultimate",
                             "feature_layer_prc": "penultimate", "feature_layer_isc": "logits"},
              "inception": {"feature_layer_isc": "logits_unbiased"},
              "random_conv": {}}[extractor]

    def standalone():
        torch_fidelity.calculate_metrics(
            input1=UInt8Images(to_uint8_rgb(fake)), input2=UInt8Images(to_uint8_rgb(real)), cuda=False,
            verbose=False, fid=True, kid=True, isc=with_is, prc=True, feature_extractor=name,
            feature_extractor_weights_path=path, batch_size=100, save_cpu_ram=True,
            kid_subsets=cfg.kid_subsets, kid_subset_size=cfg.kid_subset_size,
            isc_splits=probe.counts.is_splits, prc_neighborhood=cfg.pr_k, **layers)

    runs = {"standalone": standalone, "first": ours_first, "cached": ours_cached}
    if extractor == "classifier":
        runs["cold"] = ours_cold
    times = {key: [] for key in runs}
    for _ in range(repeats):  # interleaved, so drift in machine load hits all alike
        for key, fn in runs.items():
            times[key].append(timed(fn))
    return {"n_real": probe.n_real} | {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--extractors", nargs="+",
                        default=["classifier", "inception", "random_conv"],
                        choices=["classifier", "inception", "random_conv"])
    parser.add_argument("--n", type=int, default=None,
                        help="generated samples (default: 2000 classifier, 50 inception)")
    parser.add_argument("--n-real", type=int, default=None,
                        help="real samples (default: all 1797 digits; 5x --n for inception)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        for extractor in args.extractors:
            n = args.n or (50 if extractor == "inception" else 2000)
            n_real = args.n_real or (5 * n if extractor == "inception" else 2000)
            t = bench(extractor, n, n_real, args.repeats, Path(tmp))
            cold = f", ours cold {t['cold']:.2f} s" if "cold" in t else ""
            print(f"{extractor} ({n} generated vs {t['n_real']} real, median of "
                  f"{args.repeats}): standalone {t['standalone']:.2f} s, ours first "
                  f"{t['first']:.2f} s{cold}, ours cached {t['cached']:.2f} s")
            lines.append(f"RATIO {extractor}_standalone_over_ours {t['standalone'] / t['first']:.2f}")
            if "cold" in t:
                lines.append(f"RATIO {extractor}_cold_over_cached {t['cold'] / t['cached']:.2f}")
                lines.append(f"RATIO {extractor}_stats_over_cached {t['first'] / t['cached']:.2f}")
            else:
                lines.append(f"RATIO {extractor}_first_over_cached {t['first'] / t['cached']:.2f}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
