"""The README's mode-collapse table from `experiment=mode_collapse_study` sweeps, beside
PacGAN's published Table 1.

Reads every job directory under the given sweep directories (metrics.json for its
choices and status, metrics.jsonl for the evaluations), groups the jobs by
(protocol, method) and prints, for each budget asked (generator steps at which the
jobs were evaluated), modes covered, high-quality share and reverse KL as mean ±
standard error over seeds, as the paper reports them, with DynGAN's partitions and
the share of jobs that warned of mode collapse.

    python scripts/mode_collapse_table.py outputs/study/pacgan_grid outputs/study/pacgan_ring \\
        --budgets 1500 3000

The runs behind the README's tables are kept in docs/mode_collapse_study (each job's
metrics.json, metrics.jsonl, overrides and DynGAN's partitions):

    python scripts/mode_collapse_table.py docs/mode_collapse_study/pacgan_* --budgets 1500 3000
    python scripts/mode_collapse_table.py docs/mode_collapse_study/dyngan_30k --budgets 15000 30000
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

from ganrun.outputs import read_json, restore_non_finite

# PacGAN (Lin et al., NeurIPS 2018), Table 1: 10 trials, mean ± standard error, 400 epochs
# of 1,000 iterations; read from the authors' repository (fjxmlzn/PacGAN,
# synthetic_data_experiments/results/Table1.png). (modes, high quality %, reverse KL)
PUBLISHED = {
    ("pacgan_ring", "gan"): ("6.3±0.5", "98.2±0.2", "0.45±0.09"),
    ("pacgan_ring", "pacgan2"): ("7.9±0.1", "95.6±2.0", "0.07±0.03"),
    ("pacgan_ring", "pacgan3"): ("7.8±0.1", "97.7±0.3", "0.10±0.02"),
    ("pacgan_ring", "pacgan4"): ("7.8±0.1", "95.9±1.4", "0.07±0.02"),
    ("pacgan_grid", "gan"): ("17.3±0.8", "94.8±0.7", "0.70±0.07"),
    ("pacgan_grid", "pacgan2"): ("23.8±0.7", "91.3±0.8", "0.13±0.04"),
    ("pacgan_grid", "pacgan3"): ("24.6±0.4", "94.2±0.4", "0.06±0.02"),
    ("pacgan_grid", "pacgan4"): ("24.8±0.2", "93.6±0.6", "0.04±0.01"),
}
# PacGAN, Tables 2 and 3 (Stacked MNIST, 1000 modes; read from the authors' repository,
# stacked_MNIST_experiments/results/Table2.png and Table3.png): (modes, KL).
# Table 2: VEEGAN's protocol, 26,000 generated samples, 10 trials ± standard error; the
# DCGAN and Unrolled GAN rows without a ± are VEEGAN's (Srivastava et al. 2017, Table 2).
TABLE_2 = {"gan": ("78.9±6.46", "4.50±0.127"), "pacgan2": ("1000.0±0.00", "0.06±0.003"),
           "pacgan3": ("1000.0±0.00", "0.06±0.003"), "pacgan4": ("1000.0±0.00", "0.07±0.005"),
           "unrolled": ("48.7", "4.32")}
# Table 3: Unrolled GAN's protocol, D at 1/4 and 1/2 of G, 50 trials ± standard error;
# Unrolled GAN (5 steps) as PacGAN quotes it from Metz et al.
TABLE_3 = {"gan": ("78.5±17.56", "5.21±0.19", "487.7±34.59", "2.24±0.15"),
           "pacgan2": ("484.5±32.99", "2.61±0.22", "840.7±15.92", "1.00±0.05"),
           "pacgan3": ("601.3±32.18", "2.00±0.17", "866.6±12.10", "0.90±0.04"),
           "pacgan4": ("667.4±29.00", "1.81±0.15", "820.2±25.50", "1.15±0.14"),
           "unrolled": ("236.4±63.30", "4.67±0.43", "732.0±44.98", "1.66±0.09")}
METHODS = ("gan", "pacgan2", "pacgan3", "pacgan4", "unrolled", "dyngan", "wgan_gp")
NAMES = {"gan": "GAN", "pacgan2": "PacGAN2", "pacgan3": "PacGAN3", "pacgan4": "PacGAN4",
         "unrolled": "Unrolled GAN", "dyngan": "DynGAN", "wgan_gp": "WGAN-GP"}


def mean_se(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    if not values:
        return "—"
    if not all(math.isfinite(v) for v in values):
        return "inf"
    mean = statistics.fmean(values) * scale
    if len(values) == 1:
        return f"{mean:.{digits}f} (1 seed)"
    se = statistics.stdev(values) * scale / math.sqrt(len(values))
    return f"{mean:.{digits}f}±{se:.{digits}f}"


def read_jobs(sweeps: list[Path]) -> list[dict]:
    jobs = []
    for sweep in sweeps:
        for job in sorted(p for p in sweep.iterdir() if (p / "metrics.json").is_file()):
            saved = read_json(job / "metrics.json")
            evaluations = {}
            log = job / "metrics.jsonl"
            if log.is_file():
                for line in log.read_text().splitlines():
                    record = restore_non_finite(json.loads(line))
                    evaluations[record["step"]] = record["metrics"]
            partitions = None
            ckpt, kept = job / "checkpoints" / "last.ckpt", job / "dyngan.json"
            if "dyngan" in saved:  # metrics.json of runs after 2026-11-30
                partitions = saved["dyngan"]["partitions"]
            elif kept.is_file():  # docs/mode_collapse_study keeps it beside the metrics
                partitions = json.loads(kept.read_text())["partitions"]
            elif saved["choices"].get("method") == "dyngan" and ckpt.is_file():
                import torch

                state = torch.load(ckpt, map_location="cpu", weights_only=False)
                partitions = state["ganrun"]["regularizers"]["dyngan"]["partitions"]
            jobs.append({"protocol": saved["choices"].get("protocol"),
                         "method": saved["choices"].get("method"), "seed": saved.get("seed"),
                         "status": saved["status"], "evaluations": evaluations,
                         "warned": any(w["kind"] in ("mode_collapse", "collapse_onset")
                                       for w in (saved.get("health") or {}).get("warnings", [])),
                         "partitions": partitions})
    return jobs


def modes_max(protocol: str) -> int:
    return 1000 if "stacked" in protocol else 25 if protocol.endswith("grid") else 8


def published(protocol: str) -> tuple[list[str], dict]:
    """The paper's columns beside a protocol's rows, and its numbers by method."""
    if protocol == "pacgan_stacked_small_d":
        return (["PacGAN Table 3, D 1/4 of G: modes", "KL", "D 1/2 of G: modes", "KL"], TABLE_3)
    if protocol == "pacgan_stacked":
        return ["PacGAN Table 2 (50 epochs): modes", "KL"], TABLE_2
    if protocol.startswith("pacgan"):  # PacGAN's Table 1 is on its own protocol only
        return (["PacGAN Table 1 (400k iterations): modes", "high quality %", "reverse KL"],
                {method: cells for (p, method), cells in PUBLISHED.items() if p == protocol})
    return [], {}


def table(jobs: list[dict], protocol: str, budgets: list[int],
          methods: tuple[str, ...] = METHODS) -> list[str]:
    """Rows per method; the seeds column counts the finished jobs evaluated at each budget
    (sweeps of different budgets may be read together), "collapse warned" the jobs
    evaluated at the last one (the longest runs)."""
    k = modes_max(protocol)
    stacked = k == 1000  # stacked data: no high-quality share
    paper, numbers = published(protocol)
    head = ["method", "seeds" + (" @" + "/".join(map(str, budgets)) if len(budgets) > 1 else "")]
    for budget in budgets:
        head += [f"modes (max {k}) @{budget}"]
        head += [] if stacked else [f"high quality % @{budget}"]
        head += [f"{'KL' if stacked else 'reverse KL'} @{budget}"]
    head += paper + ["collapse warned", "DynGAN partitions"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for method in (m for m in METHODS if m in methods):
        group = [j for j in jobs if j["protocol"] == protocol and j["method"] == method
                 and j["status"] == "finished"]
        if not group:
            continue
        seeds = [sum(budget in j["evaluations"] for j in group) for budget in budgets]
        cells = [NAMES[method], "/".join(map(str, seeds))]
        for budget in budgets:
            at = [j["evaluations"][budget] for j in group if budget in j["evaluations"]]
            cells += [mean_se([e["modes"] for e in at], digits=1)]
            cells += [] if stacked else [mean_se([e["high_quality"] for e in at], scale=100,
                                                 digits=1)]
            cells += [mean_se([e["reverse_kl"] for e in at])]
        cells += list(numbers.get(method, ("—",) * len(paper)))
        longest = [j for j in group if budgets[-1] in j["evaluations"]]
        cells.append(f"{sum(j['warned'] for j in longest)}/{len(longest)}")
        parts = [j["partitions"] for j in longest if j["partitions"] is not None]
        cells.append(", ".join(map(str, parts)) if parts else "")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sweeps", nargs="+", type=Path)
    parser.add_argument("--budgets", nargs="+", type=int, required=True,
                        help="generator steps at which to read the evaluations")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=METHODS,
                        help="the rows to show (default: every method run)")
    args = parser.parse_args()
    jobs = read_jobs(args.sweeps)
    for protocol in sorted({j["protocol"] for j in jobs if j["protocol"]}, reverse=True):
        print(f"\nprotocol={protocol}\n")
        print("\n".join(table(jobs, protocol, args.budgets, tuple(args.methods))))


if __name__ == "__main__":
    main()
