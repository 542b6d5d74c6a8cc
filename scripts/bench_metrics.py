"""Benchmark ganrun's metric evaluation, side by side in one process.

1. ours vs standalone: the same generated and real samples, the same extractor,
   the same metrics (FID, KID, IS, precision/recall): torch_fidelity.calculate_metrics
   against ganrun's Evaluator built from scratch (real features not cached yet).
2. cached vs first: a second Evaluator on the same data reads the cached real
   features instead of extracting them again.

Each timing is the median of --repeats runs. Prints one line per ratio:
`RATIO <extractor>_standalone_over_ours <value>` (>= 1: ours is no slower) and
`RATIO <extractor>_first_over_cached <value>` (target >= 2).

    python scripts/bench_metrics.py                       # classifier (digits) and inception
    python scripts/bench_metrics.py --extractors classifier --n 2000

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

from ganrun.data import load_dataset  # noqa: E402
from ganrun.metrics.evaluator import Evaluator  # noqa: E402
from ganrun.metrics.extractors import (  # noqa: E402
    CLASSIFIER_NAME,
    INCEPTION_NAME,
    UInt8Images,
    inception_weights,
    to_uint8_rgb,
    write_random_inception_weights,
)

METRICS = dict(kid_subsets=50, kid_subset_size=1000, pr_k=3)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench(extractor: str, n: int, repeats: int, workdir: Path) -> dict[str, float]:
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
    cfg = OmegaConf.create({
        "names": ["fid", "kid", "is", "pr"], "n_fake": n, "n_real": n, "extractor": extractor,
        "inception_weights": weights, "batch_size": 100, "dc_k": 5, "class_min_share": 0.2,
        "classifier_steps": 400, "classifier_holdout": 0.2, "cache_dir": str(cache),
        "kid_subsets": METRICS["kid_subsets"], "kid_subset_size": min(n, 1000),
        "pr_k": METRICS["pr_k"]})
    Evaluator(cfg, dataset)  # trains / loads the classifier once, outside the timings
    stats_dir = cache / "stats"

    def ours_first():
        for f in stats_dir.glob("*.pt"):
            f.unlink()
        Evaluator(cfg, dataset).evaluate(fake)

    def ours_cached():
        Evaluator(cfg, dataset).evaluate(fake)

    probe = Evaluator(cfg, dataset)
    name = CLASSIFIER_NAME if extractor == "classifier" else INCEPTION_NAME
    path = str(probe.classifier_path) if extractor == "classifier" else weights
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))
    real = dataset.data[order[: probe.n_real]]
    layers = ({"feature_layer_fid": "penultimate", "feature_layer_kid": "penultimate",
               "feature_layer_prc": "penultimate", "feature_layer_isc": "logits"}
              if extractor == "classifier" else {"feature_layer_isc": "logits_unbiased"})

    def standalone():
        torch_fidelity.calculate_metrics(
            input1=UInt8Images(to_uint8_rgb(fake)), input2=UInt8Images(to_uint8_rgb(real)), cuda=False,
            verbose=False, fid=True, kid=True, isc=True, prc=True, feature_extractor=name,
            feature_extractor_weights_path=path, batch_size=100, save_cpu_ram=True,
            kid_subsets=cfg.kid_subsets, kid_subset_size=cfg.kid_subset_size,
            prc_neighborhood=cfg.pr_k, **layers)

    times = {"standalone": [], "first": [], "cached": []}
    for _ in range(repeats):  # interleaved, so drift in machine load hits all three alike
        times["standalone"].append(timed(standalone))
        times["first"].append(timed(ours_first))
        times["cached"].append(timed(ours_cached))
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--extractors", nargs="+", default=["classifier", "inception"],
                        choices=["classifier", "inception"])
    parser.add_argument("--n", type=int, default=None,
                        help="samples per side (default: 2000 classifier, 200 inception)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        for extractor in args.extractors:
            n = args.n or (2000 if extractor == "classifier" else 200)
            t = bench(extractor, n, args.repeats, Path(tmp))
            print(f"{extractor} (n={n} per side, median of {args.repeats}): standalone "
                  f"{t['standalone']:.2f} s, ours first {t['first']:.2f} s, ours cached "
                  f"{t['cached']:.2f} s")
            lines.append(f"RATIO {extractor}_standalone_over_ours {t['standalone'] / t['first']:.2f}")
            lines.append(f"RATIO {extractor}_first_over_cached {t['first'] / t['cached']:.2f}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
