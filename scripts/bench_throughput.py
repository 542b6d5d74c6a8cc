"""Benchmark ganrun's training loop against a hand-written PyTorch loop, side by side.

For each configuration, the same models (ganrun's builders, the same seed), the same
loss, optimizer, batch size, number of D and G steps and penalties are trained by

- ganrun: `ganrun.training.run`'s own Trainer and GANModule, exactly as `ganrun` runs them
  (TensorBoard logging every `log.every` steps; no metrics), and
- hand: the loop a researcher writes: data on the device, index slicing, Adam,
  losses averaged on the device and read back every `log.every` steps,

in one process, taking turns every `--chunk` generator steps (one waits while the
other runs), so that drift in machine load hits both alike. Each side's clock covers
`--steps` generator steps after `--warmup` untimed ones, everything between them
included; setup, the final sample grid and checkpoint are outside it. Prints
generator steps per second for each, and per configuration one line

    RATIO <name> <ganrun / hand, median over repeats of the paired ratio>

    python scripts/bench_throughput.py                                  # the CPU targets
    python scripts/bench_throughput.py --configs ring8_mlp_b256 --steps 500 --repeats 7
    python scripts/bench_throughput.py --device cuda --precision bf16-mixed \\
        --configs dcgan64_digits_b128 resnet32_digits_b64
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ganrun.config.compose import compose_config  # noqa: E402
from ganrun.config.schema import validate  # noqa: E402
from ganrun.data import load_dataset  # noqa: E402
from ganrun.models import build_models  # noqa: E402
from ganrun.training.hparams import choices_of  # noqa: E402
from ganrun.training.run import build  # noqa: E402

# name -> overrides; every one uses Adam and no metrics.
CONFIGS = {
    "ring8_mlp_b256": ["dataset=ring8", "model=mlp", "dataset.batch_size=256"],
    "ring8_mlp_b64": ["dataset=ring8", "model=mlp", "dataset.batch_size=64"],
    "ring8_mlp_wgan_gp_b256": ["dataset=ring8", "model=mlp", "loss=wgan_gp",
                               "dataset.batch_size=256"],
    "dcgan_digits32_b64": ["model=dcgan", "dataset.image_size=32", "dataset.batch_size=64"],
    "dcgan_digits32_b256": ["model=dcgan", "dataset.image_size=32", "dataset.batch_size=256"],
    # GPU targets
    "dcgan64_digits_b128": ["model=dcgan", "dataset.image_size=64", "dataset.batch_size=128"],
    "resnet32_digits_b64": ["model=resnet", "dataset.image_size=32", "dataset.batch_size=64"],
}
CPU_DEFAULT = ["ring8_mlp_b256", "ring8_mlp_b64", "dcgan_digits32_b64", "dcgan_digits32_b256"]


class Baton:
    """Two training loops in one process take turns: each runs `chunk` generator steps
    while the other waits, so both see the same machine, second by second. Only steps
    after the warm-up are timed; setup and teardown run while the other side waits."""

    def __init__(self, sync, first: str = "ganrun"):
        self.sync, self.holder, self.done = sync, first, set()
        self.cv = threading.Condition()
        self.seconds = {"ganrun": 0.0, "hand": 0.0}
        self._t0 = 0.0

    def take(self, who: str) -> None:
        with self.cv:
            self.cv.wait_for(lambda: self.holder == who or self.other(who) in self.done)

    def give(self, who: str, finished: bool = False) -> None:
        with self.cv:
            if finished:
                self.done.add(who)
            self.holder = self.other(who)
            self.cv.notify_all()

    def start(self) -> None:
        self.sync()
        self._t0 = time.perf_counter()

    def stop(self, who: str) -> None:
        self.sync()
        self.seconds[who] += time.perf_counter() - self._t0

    @staticmethod
    def other(who: str) -> str:
        return "hand" if who == "ganrun" else "ganrun"


    def turn(self, who: str, step: int, warmup: int, chunk: int) -> None:
        """At the start of generator step `step`: hand over every `chunk` steps. The
        clock runs from the start of step `warmup` and stops only while the other side
        has its turn, so each side's time includes all its per-step overhead."""
        if step and step % chunk == 0:
            if step > warmup:
                self.stop(who)
            self.give(who)
            self.take(who)
            if step >= warmup:
                self.start()
        elif step == warmup:
            self.start()


class TakeTurns(pl.Callback):
    """ganrun's side of the baton, at generator-step boundaries."""

    def __init__(self, baton: Baton, warmup: int, chunk: int):
        self.baton, self.warmup, self.chunk = baton, warmup, chunk

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.baton.turn("ganrun", module.g_steps, self.warmup, self.chunk)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if module.g_steps == module.max_steps:
            self.baton.stop("ganrun")


def ganrun_loop(cfg, baton: Baton, warmup: int, chunk: int) -> None:
    baton.take("ganrun")
    try:
        with tempfile.TemporaryDirectory() as run_dir:
            module, trainer, datamodule, _ = build(cfg, Path(run_dir), choices_of(cfg))
            # First: its clock stops at the end of the last step, before the side jobs of
            # the end of a run (final grid, checkpoint) that the hand loop does not do.
            trainer.callbacks.insert(0, TakeTurns(baton, warmup, chunk))
            trainer.fit(module, datamodule=datamodule)
            assert module.g_steps == cfg.train.steps
    finally:
        baton.give("ganrun", finished=True)


def hand_loop(cfg, baton: Baton, warmup: int, chunk: int) -> None:
    """The hand-written loop: nsgan or wgan_gp, Adam, n_critic D steps then one G step."""
    baton.take("hand")
    device = torch.device("cuda" if cfg.trainer.accelerator == "gpu" else "cpu")
    torch.manual_seed(cfg.seed)
    dataset = load_dataset(cfg.dataset)
    data = dataset.data.to(device)
    if data.dtype == torch.uint8:
        data = data.float().div_(127.5).sub_(1.0)
    G, D = build_models(cfg.model, dataset.shape)
    G, D = G.to(device), D.to(device)
    opt = cfg.optim
    opt_g = torch.optim.Adam(G.parameters(), lr=opt.lr_g, betas=tuple(opt.betas), eps=opt.eps)
    opt_d = torch.optim.Adam(D.parameters(), lr=opt.lr_d, betas=tuple(opt.betas), eps=opt.eps)
    wasserstein = cfg.loss.name in ("wgan", "wgan_gp")
    gp_weight = cfg.regularizer.gradient_penalty.weight if "gradient_penalty" in cfg.regularizer else 0
    batch, latent, n_critic = cfg.dataset.batch_size, cfg.model.latent_dim, opt.n_critic
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16)
                if cfg.trainer.precision == "bf16-mixed" else contextlib.nullcontext())
    batches = data.shape[0] // batch
    generator = torch.Generator().manual_seed(cfg.seed)
    order, cursor = None, batches
    sums, count = None, 0

    def next_real():
        nonlocal order, cursor
        if cursor == batches:
            order, cursor = torch.randperm(data.shape[0], generator=generator).to(device), 0
        cursor += 1
        return data[order[(cursor - 1) * batch:cursor * batch]]

    def set_grad(net, flag):
        for p in net.parameters():
            p.requires_grad_(flag)

    for step in range(cfg.train.steps):
        baton.turn("hand", step, warmup, chunk)
        set_grad(D, True)
        for i in range(n_critic):
            real = next_real()
            z = torch.randn(batch, latent, device=device)
            with autocast:
                if i < n_critic - 1:
                    with torch.no_grad():
                        fake = G(z)
                else:
                    fake = G(z)
                real_out, fake_out = D(real), D(fake.detach())
                if wasserstein:
                    d_loss = fake_out.mean() - real_out.mean()
                else:
                    d_loss = F.softplus(-real_out).mean() + F.softplus(fake_out).mean()
                loss = d_loss
                if gp_weight:
                    eps = torch.rand(batch, *[1] * (real.dim() - 1), device=device)
                    x_hat = (eps * real + (1 - eps) * fake.detach()).requires_grad_(True)
                    grad, = torch.autograd.grad(D(x_hat).sum(), x_hat, create_graph=True)
                    loss = loss + gp_weight * (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()
            opt_d.zero_grad(set_to_none=True)
            loss.backward()
            opt_d.step()
        set_grad(D, False)
        with autocast:
            out = D(fake)
            g_loss = -out.mean() if wasserstein else F.softplus(-out).mean()
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        score = (lambda t: t) if wasserstein else torch.sigmoid
        stats = torch.stack([d_loss, g_loss, score(real_out).mean(), score(fake_out).mean()]).detach()
        sums = stats if sums is None else sums + stats
        count += 1
        if (step + 1) % cfg.log.every == 0:
            (sums / count).tolist()  # what a hand loop prints
            sums, count = None, 0
    baton.stop("hand")
    baton.give("hand", finished=True)


def side_by_side(cfg, warmup: int, chunk: int, sync, first: str) -> tuple[float, float]:
    """Generator steps per second of ganrun and of the hand loop, taking turns."""
    baton = Baton(sync, first)
    errors = []

    def ganrun_thread():
        try:
            ganrun_loop(cfg, baton, warmup, chunk)
        except BaseException as e:  # re-raised in the main thread
            errors.append(e)

    thread = threading.Thread(target=ganrun_thread)
    thread.start()
    hand_loop(cfg, baton, warmup, chunk)
    thread.join()
    if errors:
        raise errors[0]
    timed = cfg.train.steps - warmup
    return timed / baton.seconds["ganrun"], timed / baton.seconds["hand"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="+", default=CPU_DEFAULT, choices=sorted(CONFIGS))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed"])
    parser.add_argument("--steps", type=int, default=None,
                        help="timed generator steps (default: 400 for MLP, 60 for conv models)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--chunk", type=int, default=None,
                        help="generator steps per turn (default: 20 for MLP, 2 for conv models)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "ganrun"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if args.threads:
        torch.set_num_threads(args.threads)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    accelerator = "gpu" if args.device == "cuda" else "cpu"
    where = torch.cuda.get_device_name() if args.device == "cuda" else (
        f"CPU, {torch.get_num_threads()} threads")
    print(f"torch {torch.__version__}, lightning {pl.__version__}, {where}, {args.precision}")
    lines = []
    chunk = args.chunk
    for name in args.configs:
        steps = args.steps or (400 if "mlp" in name else 60)
        args.chunk = chunk or (20 if "mlp" in name else 2)
        cfg, _ = compose_config(*CONFIGS[name], "metrics=none", f"trainer.accelerator={accelerator}",
                      f"trainer.precision={args.precision}",
                      f"train.steps={args.warmup + steps}", "log.sample_every=1000000",
                      "train.ckpt_every=1000000")
        cfg = validate(cfg)
        rates = {"ganrun": [], "hand": []}
        for r in range(args.repeats):
            ganrun, hand = side_by_side(cfg, args.warmup, args.chunk, sync,
                                        first="ganrun" if r % 2 == 0 else "hand")
            rates["ganrun"].append(ganrun)
            rates["hand"].append(hand)
        ratios = [g / h for g, h in zip(rates["ganrun"], rates["hand"], strict=True)]
        print(f"{name}: {steps} steps x {args.repeats} repeats; generator steps/s, median: "
              f"ganrun {statistics.median(rates['ganrun']):.1f}, "
              f"hand {statistics.median(rates['hand']):.1f}; paired ratios "
              + " ".join(f"{x:.3f}" for x in ratios), flush=True)
        lines.append(f"RATIO {name} {statistics.median(ratios):.3f}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
