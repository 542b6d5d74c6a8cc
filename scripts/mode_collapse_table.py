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


def table(jobs: list[dict], protocol: str, budgets: list[int]) -> list[str]:
    k = 25 if protocol.endswith("grid") else 8
    paper = protocol.startswith("pacgan")  # PacGAN's Table 1 is on its own protocol only
    head = ["method", "seeds"]
    for budget in budgets:
        head += [f"modes (max {k}) @{budget}", f"high quality % @{budget}", f"reverse KL @{budget}"]
    if paper:
        head += ["PacGAN Table 1 (400k iterations): modes", "high quality %", "reverse KL"]
    head += ["collapse warned", "DynGAN partitions"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for method in METHODS:
        group = [j for j in jobs if j["protocol"] == protocol and j["method"] == method
                 and j["status"] == "finished"]
        if not group:
            continue
        cells = [NAMES[method], str(len(group))]
        for budget in budgets:
            at = [j["evaluations"][budget] for j in group if budget in j["evaluations"]]
            cells += [mean_se([e["modes"] for e in at], digits=1),
                      mean_se([e["high_quality"] for e in at], scale=100, digits=1),
                      mean_se([e["reverse_kl"] for e in at])]
        if paper:
            cells += list(PUBLISHED.get((protocol, method), ("—", "—", "—")))
        cells.append(f"{sum(j['warned'] for j in group)}/{len(group)}")
        parts = [j["partitions"] for j in group if j["partitions"] is not None]
        cells.append(", ".join(map(str, parts)) if parts else "")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sweeps", nargs="+", type=Path)
    parser.add_argument("--budgets", nargs="+", type=int, required=True,
                        help="generator steps at which to read the evaluations")
    args = parser.parse_args()
    jobs = read_jobs(args.sweeps)
    for protocol in sorted({j["protocol"] for j in jobs if j["protocol"]}, reverse=True):
        print(f"\nprotocol={protocol}\n")
        print("\n".join(table(jobs, protocol, args.budgets)))


if __name__ == "__main__":
    main()
