"""Composing ganrun's config as `ganrun` does (for scripts, tests and the tools), the
config groups and root keys it offers, and the resolver that names a sweep's job
directories. Nothing here imports torch."""

from __future__ import annotations

import hashlib
import re
from importlib.resources import files

import yaml
from omegaconf import DictConfig, OmegaConf, open_dict

# Root keys that are plumbing, not options: left out of the lists shown to users.
HIDDEN_KEYS = {"study", "defaults"}
_UNSAFE = re.compile(r"[^A-Za-z0-9=,.+_\-\[\]@:]")
_MAX_NAME = 120


def safe_name(override_dirname: str, overrides=None, sweep_dir: str | None = None) -> str:
    """A sweep job's directory name from its overrides: given the job's overrides and
    its sweep's directory, only those that tell it apart from the other jobs (seed
    among them), floats cut to 4 significant digits (ganrun.outputs.job_dirname); no
    `/` or other unsafe characters, and long names cut with a hash so two never collide."""
    if overrides is not None:
        from ganrun.outputs import job_dirname

        override_dirname = job_dirname(list(overrides), sweep_dir) or override_dirname
    name = _UNSAFE.sub("_", override_dirname) or "default"
    if len(name) > _MAX_NAME:
        digest = hashlib.sha1(override_dirname.encode()).hexdigest()[:8]
        name = f"{name[:_MAX_NAME - 9]}-{digest}"
    return name


OmegaConf.register_new_resolver("ganrun_safe_name", safe_name, replace=True)



def configs_folder():
    return files("ganrun.configs")


def config_groups() -> dict[str, list[str]]:
    """Each config group (hydra/launcher among them) and its options."""
    out: dict[str, list[str]] = {}

    def walk(folder, prefix: str) -> None:
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):
            if entry.is_dir() and not entry.name.startswith("__"):
                options = sorted(e.name[:-5] for e in entry.iterdir() if e.name.endswith(".yaml"))
                if options:
                    out[prefix + entry.name] = options
                walk(entry, prefix + entry.name + "/")

    walk(configs_folder(), "")
    out.pop("hydra", None)  # hydra/default.yaml is plumbing; hydra/launcher is a choice
    out["hydra/launcher"] = sorted({*out.get("hydra/launcher", []), "basic", "joblib",
                                    "submitit_local", "submitit_slurm"})
    return out


def root_keys() -> list[str]:
    """The top-level keys of train.yaml a user sets (seed, train, log, ...)."""
    text = (configs_folder() / "train.yaml").read_text()
    groups = config_groups()
    return [k for k in yaml.safe_load(text) if k not in HIDDEN_KEYS and k not in groups]


def honour_choices(cfg: DictConfig, choices: dict, overrides: list[str]) -> None:
    """`metrics=none` turns metrics off also where a preset's own metrics block (a
    protocol's `metrics.names`) would name some: the choice wins, as anything on the
    command line does (a `metrics.names=` given there too wins over both)."""
    named = any(o.lstrip("+~").startswith("metrics.names") for o in overrides)
    if choices.get("metrics") == "none" and cfg.metrics.names and not named:
        with open_dict(cfg):
            cfg.metrics.names = []


def compose_config(*overrides: str) -> tuple[DictConfig, dict[str, str]]:
    """The config `ganrun <overrides>` would run (Hydra's own keys removed) and the
    group choices: for scripts and tests that call `ganrun.training.run.run` directly."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    GlobalHydra.instance().clear()
    with initialize_config_module("ganrun.configs", version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    choices = dict(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
    honour_choices(cfg, choices, list(overrides))
    return cfg, choices
