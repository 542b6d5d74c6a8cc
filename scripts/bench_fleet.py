"""Fleet throughput (issue 21), measured side by side in one process so both ways see
the same machine.

At the step (default): N members' non-saturating GAN steps, one after another (each
member its own ganrun models and torch.optim.Adam) and as one fleet (ganrun.fleet:
stacked networks, StackedAdam): the networks and the optimizer alone. Prints generator
steps per second of all members and `RATIO <config> <N> <fleet / sequential>`.

    python scripts/bench_fleet.py --configs ring8 dyngan_grid pacgan_grid dcgan_digits32 --members 4 16

Whole runs (--runs): N ganrun jobs as they run under Hydra's basic launcher, one
after another (ganrun.training.run.run: callbacks, health monitor, metrics at the
end, checkpoints, TensorBoard, everything written) and as one fleet
(ganrun.fleet.run.run_fleet, what hydra/launcher=fleet runs), seeds 0..N-1. Prints
the wall time of both and `RATIO runs:<config> <N> <sequential / fleet>`.

    python scripts/bench_fleet.py --runs --configs dyngan_grid --members 8 --run-steps 2000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ganrun.config.compose import compose_config  # noqa: E402
from ganrun.config.schema import validate  # noqa: E402
from ganrun.fleet.optim import StackedAdam  # noqa: E402
from ganrun.fleet.stack import stack_models  # noqa: E402
from ganrun.losses import build_loss  # noqa: E402
from ganrun.models import build_models  # noqa: E402

CONFIGS = {  # name -> (ganrun overrides: the models, batch and optimizer; the data's shape)
    "ring8": (("dataset=ring8",), (2,)),
    "dyngan_grid": (("protocol=dyngan_grid",), (2,)),
    "pacgan_grid": (("protocol=pacgan_grid",), (2,)),
    "dcgan_digits32": (("model=dcgan", "dataset.image_size=32"), (1, 32, 32)),
}


class Members:
    """N members of one config: as N models with their own Adam, and as one fleet."""

    def __init__(self, cfg, n: int, shape: tuple[int, ...]):
        self.cfg, self.n, self.batch = cfg, n, cfg.dataset.batch_size
        self.latent = cfg.model.latent_dim
        self.loss = build_loss(cfg.loss)
        nets = []
        for seed in range(n):
            torch.manual_seed(seed)
            nets.append(build_models(cfg.model, shape, 0))
        betas = tuple(cfg.optim.betas)
        self.alone = [(G, D, torch.optim.Adam(G.parameters(), cfg.optim.lr_g, betas=betas),
                       torch.optim.Adam(D.parameters(), cfg.optim.lr_d, betas=betas))
                      for G, D in nets]
        G, D = stack_models([g for g, _ in nets]), stack_models([d for _, d in nets])
        eps, wd = [1e-8] * n, [0.0] * n
        self.fleet = (G, D, StackedAdam(list(G.parameters()), [cfg.optim.lr_g] * n, [betas] * n,
                                        eps, wd),
                      StackedAdam(list(D.parameters()), [cfg.optim.lr_d] * n, [betas] * n, eps, wd))
        self.data = torch.randn(n * self.batch, *shape)

    def _step(self, G, D, opt_g, opt_d, real: torch.Tensor, members: int) -> None:
        b = self.batch
        fake = G(torch.randn(members * b, self.latent))
        real_out, fake_out = D(real), D(fake.detach())
        d = sum(self.loss.d_loss(real_out[k * b:(k + 1) * b], fake_out[k * b:(k + 1) * b])
                for k in range(members))
        opt_d.zero_grad()
        d.backward()
        opt_d.step()
        out = D(fake)
        g = sum(self.loss.g_loss(out[k * b:(k + 1) * b], None) for k in range(members))
        opt_g.zero_grad()
        g.backward()
        opt_g.step()

    def sequential(self, steps: int) -> float:
        started = time.perf_counter()
        for _ in range(steps):
            for G, D, opt_g, opt_d in self.alone:
                self._step(G, D, opt_g, opt_d, self.data[:self.batch], 1)
        return time.perf_counter() - started

    def together(self, steps: int) -> float:
        started = time.perf_counter()
        for _ in range(steps):
            self._step(*self.fleet, self.data, self.n)
        return time.perf_counter() - started


def whole_runs(name: str, n: int, steps: int, root: Path) -> float:
    """Wall seconds of N whole jobs one after another, and as one fleet: the ratio."""
    import shutil

    from ganrun.fleet.run import run_fleet
    from ganrun.training.run import run

    overrides, _ = CONFIGS[name]
    every = max(steps // 4, 1)
    common = (*overrides, f"train.steps={steps}", f"train.ckpt_every={steps}",
              f"log.every={every}", f"log.sample_every={steps}", f"metrics.every={steps}",
              "trainer.accelerator=cpu")
    cfgs = [compose_config(*common, f"seed={seed}")[0] for seed in range(n)]
    shutil.rmtree(root, ignore_errors=True)
    started = time.perf_counter()
    for seed, cfg in enumerate(cfgs):
        run(cfg, root / f"alone{seed}")
    sequential = time.perf_counter() - started
    started = time.perf_counter()
    run_fleet(cfgs, [root / f"member{seed}" for seed in range(n)])
    fleet = time.perf_counter() - started
    print(f"runs:{name} N={n} ({steps} generator steps each, metrics at the end): "
          f"one after another {sequential:.1f} s, as a fleet {fleet:.1f} s", flush=True)
    return sequential / fleet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="+", default=sorted(CONFIGS), choices=sorted(CONFIGS))
    parser.add_argument("--members", nargs="+", type=int, default=[4, 16])
    parser.add_argument("--steps", type=int, default=10, help="generator steps per turn")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--runs", action="store_true", help="whole jobs, not steps")
    parser.add_argument("--run-steps", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=Path("/tmp/ganrun-bench-fleet"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    print(f"torch {torch.__version__}, CPU, {torch.get_num_threads()} threads")
    if args.runs:
        import logging

        logging.getLogger("ganrun").setLevel(logging.WARNING)
        logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
        found = [(name, n, whole_runs(name, n, args.run_steps, args.out))
                 for name in args.configs for n in args.members]
        for name, n, ratio in found:
            print(f"RATIO runs:{name} {n} {ratio:.2f}")
        return
    ratios = []
    for name in args.configs:
        overrides, shape = CONFIGS[name]
        cfg = validate(compose_config(*overrides, "metrics=none")[0])
        for n in args.members:
            members = Members(cfg, n, shape)
            members.sequential(2), members.together(2)  # warm-up
            pairs = [(members.sequential(args.steps), members.together(args.steps))
                     for _ in range(args.repeats)]
            ratio = statistics.median(s / f for s, f in pairs)
            seq = statistics.median(args.steps * n / s for s, _ in pairs)
            fleet = statistics.median(args.steps * n / f for _, f in pairs)
            print(f"{name} N={n}: member generator steps/s, median: sequential {seq:.1f}, "
                  f"fleet {fleet:.1f}; paired ratios "
                  + " ".join(f"{s / f:.2f}" for s, f in pairs), flush=True)
            ratios.append((name, n, ratio))
    for name, n, ratio in ratios:
        print(f"RATIO {name} {n} {ratio:.2f}")


if __name__ == "__main__":
    main()
