"""The global keys' schemas, and `validate(cfg)`: the walk over every group.

The YAML files under configs/ hold the defaults; a schema holds only the keys
and their types (every field MISSING), so the two cannot drift apart. Each
component's own schema (a dataset, model, loss, optimizer or regularizer) is
the `Config` of its class, in its registry (ganrun.registry).

Hydra already refuses `optim.lrr=1` (no such key) and `loss=nope` (no such
option). `validate` catches what Hydra lets through: `+optim.lrr=1`, a value of
the wrong type (`optim.lr_d=abc`) and values that cannot work (a zero learning
rate, an image size the model cannot make). It runs before anything trains (the
components' modules import torch), and every message names the key at fault.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

from ganrun.config.callbacks import check_callbacks
from ganrun.config.merge import merge
from ganrun.config.trainer import check_trainer
from ganrun.data import DATASETS as _DATASETS
from ganrun.errors import ObjectiveError, UserError, one_of
from ganrun.loggers import LOGGERS as _LOGGERS
from ganrun.losses import LOSSES as _LOSSES
from ganrun.metrics.guards import counts
from ganrun.metrics.modes import KL_HISTOGRAMS
from ganrun.metrics.registry import METRICS
from ganrun.models import MODELS as _MODELS
from ganrun.models.layers import ACTIVATIONS, OUT_ACTIVATIONS
from ganrun.optim import DECAYS
from ganrun.optim import OPTIMIZERS as _OPTIMIZERS
from ganrun.ranges import SEED_LIMIT, above, at_least, between, check_ranges
from ganrun.regularizers import REGULARIZERS as _REGULARIZERS

# Every component's schema lives beside its code (a `Config` in its registry) and is
# looked up when a config is validated, so a component registered later (a user's
# module, a test's example) counts as much as the shipped ones. Here: the global keys.


@dataclass
class TrainerConfig:
    accelerator: str = MISSING
    devices: Any = MISSING
    num_nodes: int = at_least(1)
    precision: str = MISSING
    strategy: str = MISSING
    deterministic: bool = MISSING


@dataclass
class TrainConfig:
    steps: int = at_least(1)
    ckpt_every: int = at_least(1)
    ckpt_minutes: float = above(0)
    check_every: int = at_least(1)
    on_diverge: str = MISSING
    max_restores: int = at_least(0)
    restore_lr_factor: float = between(0, 1, low_open=True)


@dataclass
class LogConfig:
    every: int = at_least(1)
    sample_every: int = at_least(1)
    n_samples: int = at_least(1)


@dataclass
class MetricsConfig:
    names: list[str] = MISSING
    every: int = at_least(1)
    n_fake: int = at_least(1)
    n_real: int = at_least(1)
    extractor: str = MISSING
    inception_weights: str | None = MISSING
    batch_size: int = at_least(1)
    pr_k: int = at_least(1)
    dc_k: int = at_least(1)
    kid_subsets: int = at_least(1)
    kid_subset_size: int = at_least(1)
    is_splits: int = at_least(1)
    ppl_samples: int = at_least(1)
    ppl_epsilon: float = between(0, 1, low_open=True, high_open=True)
    ppl_sampling: str = MISSING
    ppl_net: str = MISSING
    lpips_weights: str | None = MISSING
    class_min_share: float = above(0)
    modes_threshold: float = above(0)
    modes_min_count: int | None = at_least(1)
    modes_min_share: float = above(0)
    modes_kl: str = MISSING
    classifier_steps: int = at_least(1)
    classifier_holdout: float = between(0, 1, low_open=True, high_open=True)
    cache_dir: str = MISSING


PPL_SAMPLINGS = ("end", "full")
PPL_NETS = ("auto", "lpips", "extractor")
EXTRACTORS = ("auto", "classifier", "inception", "random_conv", "raw")


@dataclass
class SampleConfig:
    latent: str = MISSING
    truncation: float | None = above(0)


@dataclass
class FleetConfig:
    size: int = at_least(1)
    devices: int = at_least(1)


@dataclass
class RootConfig:
    seed: int = between(0, SEED_LIMIT - 1)
    ckpt_path: str | None = MISSING
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    optimized_metric: str | None = MISSING
    memory_limit: float = above(0)
    study: Any = None  # free-form: values a preset's interpolations read (experiment=optimizer_study)
    callbacks: Any = None  # Hydra _target_ specs, checked when they are made (ganrun.callbacks)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    fleet: FleetConfig = field(default_factory=FleetConfig)


def groups() -> dict[str, dict[str, type]]:
    """Each group's options: option name -> config schema."""
    return {"dataset": _DATASETS.schemas(), "model": _MODELS.schemas(),
            "loss": _LOSSES.schemas(), "optim": _OPTIMIZERS.schemas()}


def labelled_datasets() -> list[str]:
    return [name for name, source in _DATASETS.items() if source.labelled]


def point_datasets() -> list[str]:
    return [name for name, source in _DATASETS.items() if source.points]


def validate(cfg: DictConfig) -> DictConfig:
    """Return `cfg` checked against the schemas, values converted to their types."""
    checked = {name: _check_group(cfg, name, options) for name, options in groups().items()}
    checked["regularizer"] = _check_regularizers(cfg.get("regularizer") or {})
    checked["logger"] = _check_named(cfg.get("logger") or {}, "logger", _LOGGERS)
    rest = {k: v for k, v in cfg.items() if k not in checked}
    root = merge(RootConfig, OmegaConf.create(rest), prefix="", groups_at=RootConfig)
    out = OmegaConf.create(
        {**OmegaConf.to_container(root), **{k: OmegaConf.to_container(v) for k, v in checked.items()}}
    )
    OmegaConf.set_struct(out, True)
    missing = sorted(OmegaConf.missing_keys(out))
    if missing:
        raise UserError(f"{missing[0]}: no value given (set it with {missing[0]}=...)")
    _check_ranges(out)
    _check_values(out)
    return out


def _check_group(cfg: DictConfig, group: str, options: dict[str, type]) -> DictConfig:
    node = cfg.get(group)
    if node is None or "name" not in node:
        raise UserError(f"{group}: no option selected; choose one of {', '.join(options)}")
    name = node.name
    if name not in options:
        raise UserError(f"{group}.name: unknown {group} '{name}'; valid: {', '.join(options)}")
    return merge(options[name], node, prefix=f"{group}.", option=f"{group}={name}")


def _check_named(node: DictConfig, group: str, registry: dict) -> DictConfig:
    """A group whose options are chosen together (`regularizer=[a,b]`, `logger=[a,b]`):
    each option's keys merged into its schema."""
    checked = {}
    for name, params in node.items():
        if name not in registry:
            raise UserError(f"{group}.{name}: unknown {group}; valid: {', '.join(registry)}")
        checked[name] = merge(registry[name].Config, params or {}, prefix=f"{group}.{name}.",
                               option=f"{group} {name}")
    return OmegaConf.create({k: OmegaConf.to_container(v) for k, v in checked.items()})


def _check_regularizers(node: DictConfig) -> DictConfig:
    checked = _check_named(node, "regularizer", _REGULARIZERS)
    for name in checked:
        cls = _REGULARIZERS[name]
        for other in cls.excludes:
            if other in checked:
                a, b = sorted((name, other))
                raise UserError(f"regularizer: {a} and {b} cannot be combined "
                                f"({cls.excludes_why}); choose one")
    return checked


def _check_ranges(cfg: DictConfig) -> None:
    """Every numeric key of every group, component and global key within its declared
    range (ganrun.ranges), before any rule that computes with them."""
    for group, options in groups().items():
        check_ranges(options[cfg[group].name], cfg[group], prefix=f"{group}.")
    for group, registry in (("regularizer", _REGULARIZERS), ("logger", _LOGGERS)):
        for name, params in cfg[group].items():
            check_ranges(registry[name].Config, params, prefix=f"{group}.{name}.")
    check_ranges(RootConfig, cfg)


def _check_values(cfg: DictConfig) -> None:
    check_trainer(cfg.trainer)
    one_of("train.on_diverge", cfg.train.on_diverge, ("stop", "restore"))
    one_of("optim.decay", cfg.optim.decay, DECAYS)
    one_of("sample.latent", cfg.sample.latent, ("normal", "uniform"))
    _check_model(cfg)
    _check_loss_and_regularizers(cfg)
    for name, params in cfg.logger.items():
        _LOGGERS[name].check(params, cfg)
    check_metrics(cfg)
    check_callbacks(cfg.callbacks)


LOSS_OUTPUTS = ("loss/d", "loss/g", "D/real", "D/fake")


def metric_name(key: str, name: str) -> str:
    """A metric name as the user typed it (FID, Kid) as ganrun names it (fid, kid); an
    unknown one is refused with the registered names (ganrun.metrics.registry)."""
    canonical = next((v for v in METRICS if v.lower() == str(name).lower()), None)
    if canonical is None:
        one_of(key, name, tuple(METRICS))
    return canonical


def check_metrics(cfg: DictConfig) -> None:
    """The metrics group's options (a training run's, or ganrun-eval's), metric names
    made canonical (metrics.names=[FID] is fid)."""
    metrics = cfg.metrics
    metrics.names = [metric_name("metrics.names", name) for name in metrics.names]
    target = cfg.optimized_metric
    if target is not None:
        available = [*LOSS_OUTPUTS, *(o for n in metrics.names for o in METRICS[n].ranked())]
        target = cfg.optimized_metric = next(
            (a for a in available if a.lower() == str(target).lower()), target)
        if target not in available:
            raise ObjectiveError(
                f"optimized_metric={target} is not logged by this run; valid: "
                f"{', '.join(available)} (metrics.names={list(metrics.names)})"
            )
    one_of("metrics.extractor", metrics.extractor, EXTRACTORS)
    points = cfg.dataset.name in point_datasets()
    if metrics.extractor in ("classifier", "inception", "random_conv") and points:
        raise UserError(f"metrics.extractor={metrics.extractor} needs images; dataset="
                        f"{cfg.dataset.name} is 2-D points (use raw or auto)")
    if metrics.extractor == "classifier" and cfg.dataset.name not in labelled_datasets():
        raise UserError(f"metrics.extractor=classifier needs class labels; dataset="
                        f"{cfg.dataset.name} has none (use inception, or random_conv offline)")
    if metrics.extractor == "raw" and not points:
        raise UserError("metrics.extractor=raw is for the 2-D mixtures; use classifier, inception "
                        "or random_conv")
    check_ranges(MetricsConfig, metrics, prefix="metrics.")  # ganrun-eval's options too
    one_of("metrics.modes_kl", metrics.modes_kl, KL_HISTOGRAMS)
    one_of("metrics.ppl_sampling", metrics.ppl_sampling, PPL_SAMPLINGS)
    one_of("metrics.ppl_net", metrics.ppl_net, PPL_NETS)
    # The extractor auto resolves to, where the data decides it (unlabelled images: at
    # run time, by the weights at hand): the guards name only the metrics it measures.
    extractor = (metrics.extractor if metrics.extractor != "auto" else "raw" if points
                 else "classifier" if cfg.dataset.name in labelled_datasets() else None)
    measured = [name for name in metrics.names
                if extractor is None
                or METRICS[name](metrics).skipped(extractor, cfg.dataset.name) is None]
    counts(metrics, metrics.n_fake, None, "generated samples (metrics.n_fake)", measured)


def _check_model(cfg: DictConfig) -> None:
    model, dataset = cfg.model, cfg.dataset
    one_of("model.out_activation", model.out_activation, OUT_ACTIVATIONS)
    one_of("model.activation", model.activation, ACTIVATIONS)
    if model.activation_d is not None:
        one_of("model.activation_d", model.activation_d, ACTIVATIONS)
    for key in ("activation", "activation_d"):
        if model[key] == "maxout" and "maxout_pieces" not in model:
            raise UserError(f"model.{key}=maxout is for fully connected layers; "
                            f"model={model.name} has none (use model=mlp)")
    points = dataset.name in point_datasets()
    if points:
        if model.name != "mlp":
            raise UserError(f"model={model.name} needs images; dataset={dataset.name} is 2-D "
                            f"points (use model=mlp)")
        if model.out_activation == "sigmoid":
            raise UserError(f"model.out_activation=sigmoid cannot reach dataset={dataset.name}'s "
                            f"points outside [0, 1]; use auto or none")
    else:
        if dataset.channels not in (1, 3):
            raise UserError(f"dataset.channels must be 1 or 3 (got {dataset.channels})")
    sizes = _MODELS[model.name].image_sizes
    if sizes and dataset.image_size not in sizes:
        raise UserError(
            f"dataset.image_size={dataset.image_size} is not supported by model={model.name}; "
            f"valid: {', '.join(map(str, sizes))}"
        )
    _MODELS[model.name].check(model, cfg)
    if model.conditional and dataset.name not in labelled_datasets():
        raise UserError(
            f"model.conditional=true needs class labels; dataset={dataset.name} has none "
            f"(labelled: {', '.join(labelled_datasets())})"
        )


def _check_loss_and_regularizers(cfg: DictConfig) -> None:
    """Each component's own rules, then the rules between a loss and regularizers."""
    loss, regs = cfg.loss, cfg.regularizer
    _LOSSES[loss.name].check(loss, cfg)
    for name in regs:
        _REGULARIZERS[name].check(regs[name], cfg)
    trains_d = not (loss.name == "mmd" and loss.space == "samples")
    acting_on_d = [r for r in regs if _REGULARIZERS[r].acts_on_d]
    if not trains_d and acting_on_d:
        raise UserError(
            f"regularizer {acting_on_d[0]} acts on D, but loss=mmd with loss.space=samples "
            f"trains no D; use loss.space=features or drop it")
    with_targets = [n for n, cls in _LOSSES.items() if cls.uses_targets]
    for name in regs:
        if "targets" in _REGULARIZERS[name].hooks() and loss.name not in with_targets:
            raise UserError(
                f"regularizer {name} needs a loss with real/fake targets "
                f"({', '.join(with_targets)}); loss={loss.name} has none")
