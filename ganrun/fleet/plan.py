"""Which jobs can train together: a fleet's members share structure (everything but
their numbers), and each of their components must be one a fleet can stack.

`MEMBER_VALUES` are the keys whose values each member has of its own (a seed, a
learning rate, an optimizer's betas, a loss's numbers); every other key of the
composed config is structure: jobs that differ there go to different fleets.
`refusal(cfg)` names the first component of a job that cannot join a fleet yet
(the job then trains alone), and `plan(cfgs, size)` groups jobs into fleets.
"""

from __future__ import annotations

import json

from omegaconf import DictConfig, OmegaConf

MEMBER_VALUES = ("seed", "ckpt_path", "optim.lr_g", "optim.lr_d", "optim.betas", "optim.eps",
                 "optim.weight_decay", "optim.momentum", "optim.alpha", "loss.a", "loss.b",
                 "loss.c", "fleet.size", "fleet.devices")
MODELS = ("mlp", "dcgan")
OPTIMIZERS = ("adam", "rmsprop", "sgd")
CALLBACKS = ("ganrun.callbacks.divergence.DivergenceGuard", "ganrun.callbacks.stats.StepStats",
             "ganrun.callbacks.samples.SampleGrids", "ganrun.callbacks.health.HealthMonitor",
             "ganrun.callbacks.metrics.Metrics", "ganrun.callbacks.checkpoint.AtomicCheckpoint")


def structure_of(cfg: DictConfig) -> str:
    """The job's structure: its composed config without the members' own values."""
    return json.dumps(_structure(cfg), sort_keys=True, default=str)


def difference(a: DictConfig, b: DictConfig) -> str | None:
    """The first key (dotted) where two jobs' structures differ, with both values."""
    flat_a, flat_b = _flat(_structure(a)), _flat(_structure(b))
    for key in sorted(set(flat_a) | set(flat_b)):
        if flat_a.get(key) != flat_b.get(key):
            return f"{key}={flat_a.get(key)} and {key}={flat_b.get(key)}"
    return None


def _flat(tree, prefix: str = "") -> dict:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}{key}." if isinstance(value, dict) and value
                         else f"{prefix}{key}"))
    return out


def _structure(cfg: DictConfig) -> dict:
    from ganrun.regularizers import REGULARIZERS

    tree = OmegaConf.to_container(cfg, resolve=True)
    own = [f"regularizer.{name}.{key}" for name in cfg.regularizer
           for key in REGULARIZERS[name].member_numbers]
    shared = any(REGULARIZERS[name].shares_optimizer_numbers for name in cfg.regularizer)
    values = [k for k in MEMBER_VALUES if not (shared and k.startswith("optim."))]
    for key in (*values, *own):
        *parents, leaf = key.split(".")
        node = tree
        for parent in parents:
            node = node.get(parent, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)
    return tree


def refusal(cfg: DictConfig) -> str | None:
    """Why this job cannot join a fleet (the component, in one line), or None."""
    if cfg.model.name not in MODELS:
        return f"model={cfg.model.name} (fleets stack {', '.join(MODELS)})"
    if cfg.optim.name not in OPTIMIZERS:
        return f"optim={cfg.optim.name} (fleets train with {', '.join(OPTIMIZERS)})"
    if cfg.optim.get("amsgrad"):
        return "optim.amsgrad=true"
    from ganrun.regularizers import REGULARIZERS

    for name in cfg.regularizer:
        if not REGULARIZERS[name].joins_fleets:
            return f"regularizer={name}"
    for name, callback in cfg.callbacks.items():
        if callback is not None and callback.get("_target_") not in CALLBACKS:
            return f"callbacks.{name} ({callback.get('_target_')})"
    trainer = cfg.trainer
    if str(trainer.get("precision")) in ("16-mixed", "16", "16-true"):
        return f"trainer.precision={trainer.precision} (float16 needs a loss scaler per member)"
    if trainer.get("strategy") not in (None, "auto") or trainer.get("num_nodes", 1) != 1 \
            or trainer.get("devices") not in (1, "auto"):
        return "trainer (fleets train in one process on one device)"
    return None


def plan(cfgs: list[DictConfig | None], size: int) -> list[list[int]]:
    """The jobs (their indices) grouped into fleets of at most `size` members sharing
    structure, in the order of their first jobs; a job that cannot join a fleet (or is
    None: it cannot be composed) is a group of one."""
    groups: dict[str, list[list[int]]] = {}
    order: list[list[int]] = []
    for i, cfg in enumerate(cfgs):
        if cfg is None or refusal(cfg) is not None:
            order.append([i])
            continue
        fleets = groups.setdefault(structure_of(cfg), [])
        if not fleets or len(fleets[-1]) >= size:
            fleets.append([])
            order.append(fleets[-1])
        fleets[-1].append(i)
    return order
