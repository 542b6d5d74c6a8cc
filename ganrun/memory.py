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
    kept = count * (per_sample * source.element_bytes + LABEL_BYTES)
    host = Estimate({"data": source.load_peak * kept})
    if cfg.metrics.names:
        host = host.plus(evaluation_estimate(cfg.metrics, shape, source.points))
    element = 8 if cfg.trainer.precision == "64-true" else 4
    weights, activations = networks(cfg.model, shape, cfg.dataset.batch_size)
    device = Estimate({"weights and optimizer states": WEIGHT_COPIES * weights * element,
                       "activations": ACTIVATION_COPIES * activations * element})
    return host, device


def networks(model_cfg: DictConfig, shape: tuple[int, ...], batch: int,
             generator_only: bool = False) -> tuple[int, int]:
    """(G's and D's parameters, the values their layers output on one batch), counted on
    the meta device (nothing allocated); `generator_only`: G's alone."""
    import torch

    from ganrun.models import build_models

    with torch.device("meta"):
        G, D = build_models(model_cfg, shape)
        nets = (G,) if generator_only else (G, D)
        outputs = []
        hooks = [m.register_forward_hook(lambda m, i, o: outputs.append(getattr(o, 'numel', int)()))
                 for net in nets for m in net.modules()
                 if not list(m.children())]
        try:
            fake = G(torch.empty(batch, model_cfg.latent_dim))
            if not generator_only:
                D(fake)
        except Exception:  # a layer without a meta kernel: the weights alone
            outputs.clear()
        for hook in hooks:
            hook.remove()
    weights = sum(p.numel() for net in nets for p in net.parameters())
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
        "features": "lower metrics.n_fake and metrics.n_real",
        "metrics": "lower metrics.n_fake and metrics.n_real",
        "weights and optimizer states": "make the networks smaller (model.latent_dim, the "
                                        "widths, dataset.image_size)",
        "activations": "lower dataset.batch_size",
    }[biggest]


def check_limit(fraction: float) -> None:
    """memory_limit= of ganrun-sample and ganrun-eval (the run's own is a config key)."""
    if not (fraction > 0 and math.isfinite(fraction)):
        raise UserError(f"memory_limit={fraction:g}: must be finite and > 0")


FEATURE_DIM = 2048  # the widest extractor's features: InceptionV3's pool3


def evaluation_estimate(metrics_cfg: DictConfig, shape: tuple[int, ...], points: bool,
                        n_fake: int | None = None) -> Estimate:
    """What an evaluation of `metrics_cfg.names` holds at once: n_fake generated and n_real
    real samples of `shape`, their features (the points themselves for 2-D points, else
    at most FEATURE_DIM values each), and the biggest of the metrics' working sets (they
    run one after another; `Metric.working_set`: the k-NN metrics' distance matrices
    grow with n_fake x n_real and n_fake x n_fake)."""
    from ganrun.metrics.registry import METRICS

    n_fake = metrics_cfg.n_fake if n_fake is None else n_fake
    n_real = metrics_cfg.n_real
    dim = math.prod(shape) if points else FEATURE_DIM
    working = max((METRICS[name](metrics_cfg).working_set(n_fake, n_real, dim)
                   for name in metrics_cfg.names if name in METRICS), default=0.0)
    return Estimate({"evaluation samples": 4.0 * (n_fake + n_real) * math.prod(shape),
                     "features": 0.0 if points else 4.0 * (n_fake + n_real) * dim,
                     "metrics": working})


GENERATION_BATCH = 500  # samples.generate_many's batches
GRID_BYTES_PER_VALUE = 5  # samples.image_grid: the images as floats once, then as bytes
GRID_BYTES_PER_PIXEL = 9  # the 3-channel grid (a grey image's channels copied), PNG's copy
SCATTER_BYTES_PER_POINT = 120  # samples.point_scatter's pixel arithmetic, one chunk at a time


def request_estimate(n: int, shape: tuple[int, ...], model_cfg: DictConfig | None = None,
                     picture: str | None = None, checkpoint: float = 0) -> Estimate:
    """What a request for `n` samples of `shape` holds at once: the checkpoint read (its
    size in bytes: every tensor in it is loaded, the optimizers' states too), the samples
    (float32), the generator's layers on one batch (`model_cfg`: drawn here, not read from
    a folder), and the picture drawn of them all (`grid`: images; `scatter`: 2-D points).
    Measured (tests/test_memory.py), the peak is 40-100% of this (the allocator's reuse of
    freed chunks varies with the torch release and the machine)."""
    from ganrun.samples import SCATTER_CHUNK

    parts = {"checkpoint": float(checkpoint), "samples": 4.0 * n * math.prod(shape)}
    if model_cfg is not None:
        parts["generator on a batch"] = generator_batch(model_cfg, shape, min(n, GENERATION_BATCH))
    if picture == "grid":
        pixels = math.prod(side + 2 for side in shape[1:])
        parts["picture"] = n * (GRID_BYTES_PER_VALUE * math.prod(shape)
                                + GRID_BYTES_PER_PIXEL * pixels)
    elif picture == "scatter":
        parts["picture"] = SCATTER_BYTES_PER_POINT * min(n, SCATTER_CHUNK)
    return Estimate(parts)


def generator_batch(model_cfg: DictConfig, shape: tuple[int, ...],
                    batch: int = GENERATION_BATCH) -> float:
    """The bytes of the generator's layers' outputs on a batch of `batch` (float32)."""
    return 4.0 * networks(model_cfg, shape, batch, generator_only=True)[1]


def check_evaluation(metrics_cfg: DictConfig, shape: tuple[int, ...], points: bool,
                     fraction: float, model_cfg: DictConfig | None = None,
                     checkpoint: float = 0) -> None:
    """ganrun-eval's request (`model_cfg`: its samples drawn from that generator, batch by
    batch; None: read from a folder; `checkpoint`: the size of the checkpoint read), refused
    when over `fraction` of this machine's memory."""
    estimate = Estimate({"checkpoint": float(checkpoint)}).plus(
        evaluation_estimate(metrics_cfg, shape, points))
    if model_cfg is not None:
        estimate.parts["generator on a batch"] = generator_batch(model_cfg, shape)
    check_samples(f"n_fake={metrics_cfg.n_fake} and n_real={metrics_cfg.n_real}", estimate,
                  fraction, "lower n_fake and n_real")


def check_samples(what: str, estimate: Estimate, fraction: float, fix: str) -> None:
    """A request (`request_estimate`) refused when over `fraction` of this machine's memory."""
    check_limit(fraction)
    refuse_over(what, estimate, fraction, fix)
