"""What a run or a request would hold in memory, estimated before anything is allocated,
and refused in one line when it is over the limit: `memory_limit` (0.8) of this
machine's memory (of the GPU's, for what lives on a GPU). The allocator's own
answer comes much later, as a traceback (`you tried to allocate 800000000000 bytes`),
or never, when the machine swaps.

The estimate is what the run holds at once: the training data (at its peak while it
is loaded), the two networks' weights with their gradients and the optimizer's two
moments (4 copies), their activations on one batch (x 3: D on real and fake, kept for
the backward pass), and the samples an evaluation holds. The networks are
built on PyTorch's `meta` device, which allocates nothing, so every model family is
measured by its own code, never by a formula that could drift from it."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from omegaconf import DictConfig

from ganrun.errors import UserError

GiB = 2**30
WEIGHT_COPIES = 4  # weights, gradients, Adam's two moments
ACTIVATION_COPIES = 3  # D on real and on fake, kept for the backward pass; their gradients
LABEL_BYTES = 8  # a class or mode per sample (int64), kept with the data


def machine_memory() -> int:
    """This machine's physical memory in bytes (its cgroup's limit where that is lower)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        if limit.isdigit():
            total = min(total, int(limit))
    except OSError:
        pass
    return total


def gpu_memory() -> int | None:
    import torch

    return torch.cuda.get_device_properties(0).total_memory if torch.cuda.is_available() else None


def size(nbytes: float) -> str:
    """1.2 GiB, 340 MiB, 12 KiB."""
    for unit, scale in (("TiB", 2**40), ("GiB", GiB), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{int(nbytes)} B"


@dataclass
class Estimate:
    parts: dict[str, float]  # what is held -> bytes

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    def plus(self, other: Estimate, times: int = 1) -> Estimate:
        """The two held together (`other` `times` over)."""
        names = {**self.parts, **other.parts}
        return Estimate({k: self.parts.get(k, 0) + times * other.parts.get(k, 0) for k in names})

    def describe(self) -> str:
        return ", ".join(f"{name} {size(n)}" for name, n in self.parts.items() if n > 0)


def refuse_over(what: str, estimate: Estimate, fraction: float, fix: str,
                capacity: int | None = None, where: str = "this machine's memory") -> None:
    """One line when `estimate` is over `fraction` of `capacity` (this machine's memory):
    the estimate with its parts, the limit, and the fixes (`fix`, or raise memory_limit)."""
    capacity = capacity or machine_memory()
    limit = fraction * capacity
    if estimate.total > limit:
        raise UserError(f"{what} would need about {size(estimate.total)} ({estimate.describe()}),"
                        f" over the limit of {size(limit)} (memory_limit={fraction:g} of {where},"
                        f" {size(capacity)}); {fix}, or raise memory_limit")


def data_shape(dataset: DictConfig, points: bool) -> tuple[int, ...]:
    return (2,) if points else (dataset.channels, dataset.image_size, dataset.image_size)


def training_estimate(cfg: DictConfig) -> tuple[Estimate, Estimate]:
    """(what the host holds: data and evaluation samples; what the device holds: the
    networks, their optimizer states and activations) for one process of `cfg`."""
    from ganrun.data import DATASETS

    source = DATASETS[cfg.dataset.name]
    shape = data_shape(cfg.dataset, source.points)
    per_sample = math.prod(shape)
    count = cfg.dataset.get("n_samples", source.count) or 0
    evaluated = (cfg.metrics.n_fake + cfg.metrics.n_real) if cfg.metrics.names else 0
    kept = count * (per_sample * source.element_bytes + LABEL_BYTES)
    host = Estimate({"data": source.load_peak * kept,
                     "evaluation samples": evaluated * per_sample * 4})
    element = 8 if cfg.trainer.precision == "64-true" else 4
    weights, activations = networks(cfg.model, shape, cfg.dataset.batch_size)
    device = Estimate({"weights and optimizer states": WEIGHT_COPIES * weights * element,
                       "activations": ACTIVATION_COPIES * activations * element})
    return host, device


def networks(model_cfg: DictConfig, shape: tuple[int, ...], batch: int) -> tuple[int, int]:
    """(G's and D's parameters, the values their layers output on one batch), counted on
    the meta device (nothing allocated)."""
    import torch

    from ganrun.models import build_models

    with torch.device("meta"):
        G, D = build_models(model_cfg, shape)
        outputs = []
        hooks = [m.register_forward_hook(lambda m, i, o: outputs.append(getattr(o, 'numel', int)()))
                 for net in (G, D) for m in net.modules()
                 if not list(m.children())]
        try:
            D(G(torch.empty(batch, model_cfg.latent_dim)))
        except Exception:  # a layer without a meta kernel: the weights alone
            outputs.clear()
        for hook in hooks:
            hook.remove()
    weights = sum(p.numel() for net in (G, D) for p in net.parameters())
    return weights, sum(outputs)


def check_training(cfgs: DictConfig | list[DictConfig]) -> None:
    """Refuse a run whose tensors would not fit (or runs held at once: a fleet's members;
    a copy per process of DDP on CPUs), naming the biggest part and its keys."""
    cfgs = cfgs if isinstance(cfgs, list) else [cfgs]
    devices = cfgs[0].trainer.devices
    processes = (devices if cfgs[0].trainer.accelerator == "cpu" and isinstance(devices, int)
                 and devices > 0 else 1)
    host, device = Estimate({}), Estimate({})
    for cfg in cfgs:
        one_host, one_device = training_estimate(cfg)
        host, device = host.plus(one_host, processes), device.plus(one_device, processes)
    cfg = cfgs[0]
    fix = _fix(host, device, cfg)
    who = "this run" if len(cfgs) * processes == 1 else f"these {len(cfgs) * processes} runs"
    on_gpu = cfg.trainer.accelerator in ("gpu", "cuda", "auto") and gpu_memory() is not None
    if on_gpu:
        refuse_over(f"{who}' networks" if len(cfgs) > 1 else "this run's networks", device,
                    cfg.memory_limit, fix, gpu_memory(), "the GPU's memory")
    refuse_over(who, host if on_gpu else host.plus(device), cfg.memory_limit, fix)


def _fix(host: Estimate, device: Estimate, cfg: DictConfig) -> str:
    parts = {**host.parts, **device.parts}
    biggest = max(parts, key=parts.get)
    return {
        "data": ("lower dataset.n_samples" if "n_samples" in cfg.dataset
                 else "lower dataset.image_size"),
        "evaluation samples": "lower metrics.n_fake and metrics.n_real",
        "weights and optimizer states": "make the networks smaller (model.latent_dim, the "
                                        "widths, dataset.image_size)",
        "activations": "lower dataset.batch_size",
    }[biggest]


def check_limit(fraction: float) -> None:
    """memory_limit= of ganrun-sample and ganrun-eval (the run's own is a config key)."""
    if not (fraction > 0 and math.isfinite(fraction)):
        raise UserError(f"memory_limit={fraction:g}: must be finite and > 0")


def check_samples(what: str, n: int, shape: tuple[int, ...], fraction: float, fix: str,
                  **held: float) -> None:
    """A request for `n` samples of `shape`, held at once in float32 (`held`: other
    parts, in bytes), refused when over `fraction` of this machine's memory."""
    check_limit(fraction)
    refuse_over(what, Estimate({"samples": 4.0 * n * math.prod(shape), **held}), fraction, fix)
