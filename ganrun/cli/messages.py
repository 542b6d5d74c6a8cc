"""What `ganrun` does with its command line around Hydra: `~` in values, one-line
messages for the overrides Hydra cannot compose (with the nearest valid name),
`--help` from the configs' own header comments, and launcher checks.

Nothing here imports torch: these run before any training and must be quick.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import shutil

import yaml

from ganrun.config.compose import HIDDEN_KEYS, config_groups, configs_folder, root_keys

COMMANDS = {
    "ganrun-sample": "samples of a finished run: a grid or a folder of PNGs",
    "ganrun-eval": "metrics of a finished run, or of a folder of images (--images)",
    "ganrun-report": "one ranked table of a sweep: ganrun-report outputs/multiruns/<stamp>",
}


HYDRA_LAUNCHERS = {  # Hydra's plugins, no YAML of ganrun's
    "basic": "Hydra's default: a sweep's jobs one after another, here",
    "joblib": "a sweep's jobs side by side on this machine (n_jobs; threads shared out)",
    "submitit_local": "submitit on this machine",
    "submitit_slurm": "submitit on a SLURM cluster (slurm_gpu has ganrun's settings)",
}


def header(path, width: int = 88) -> str:
    """A YAML's one-line description: the first line of its opening comment, cut at a
    word boundary to fit `width`."""
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.startswith("#"):
            return ""
        if not line.startswith("# @package"):
            text = line.lstrip("# ").strip()
            continued = not text.endswith(".") and next_is_comment(lines, i)
            text = text.rstrip(".:;,")
            if len(text) > width:
                return text[: width - 1].rsplit(" ", 1)[0] + "…"
            return text + ("…" if continued else "")
    return ""


def next_is_comment(lines: list[str], i: int) -> bool:
    """Whether the comment at line i goes on in the next line (a sentence cut there)."""
    return i + 1 < len(lines) and lines[i + 1].startswith("#")


# --- console noise --------------------------------------------------------------------


class _Noise(logging.Filter):
    """Library lines that tell a ganrun user nothing: Lightning's TPU/HPU/IPU census
    (the GPU line stays), its "Received SIGTERM" and "Detected KeyboardInterrupt" (ganrun
    says what it does about them)."""

    NOISE = ("TPU available", "HPU available", "IPU available", "Received SIGTERM",
             "Received SIGINT", "Detected KeyboardInterrupt, attempting graceful shutdown")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(noise in message for noise in self.NOISE)


def quiet_libraries() -> None:
    """Keep the console to what matters: Lightning's noise filtered, Optuna's storage
    (alembic's "setup plugin ..." lines) at warnings only."""
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero",
                 "pytorch_lightning.trainer.connectors.signal_connector"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Noise) for f in logger.filters):
            logger.addFilter(_Noise())
    logging.getLogger("alembic").setLevel(logging.WARNING)


# --- `~` in values -------------------------------------------------------------------


def quote_paths(args: list[str]) -> list[str]:
    """`ckpt_path=<an existing file or directory>` as the path it is: a sweep job's
    directory holds `=`, `,` and brackets, which Hydra's grammar reads as syntax; such
    a value is quoted for it (one already quoted is left alone)."""
    from ganrun.outputs import hydra_value

    out = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+") == "ckpt_path" and value[:1] not in ("'", '"') \
                and os.path.exists(os.path.expanduser(value)):
            arg = f"{key}={hydra_value(value)}"
        out.append(arg)
    return out


def expand_home(args: list[str]) -> list[str]:
    """`key=~/data` as typed: the shell leaves a `~` after `=` alone and Hydra's
    grammar refuses it, so each comma-separated value starting with `~` is expanded
    here (`dataset.root=~/a,~/b` too)."""
    out = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and not arg.startswith("-") and "~" in value:
            value = ",".join(os.path.expanduser(v) if v.startswith("~") else v
                             for v in value.split(","))
            arg = f"{key}={value}"
        out.append(arg)
    return out


# --- Hydra's composition errors, in one line -----------------------------------------


def _nearest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"did you mean {close[0]}? " if close else ""


def _key_of(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def explain(error: Exception, args: list[str]) -> str:
    """One line for an override Hydra could not compose, naming the fix."""
    text = str(error)
    missing = re.search(r"Could not (?:find|load) '([^']+)'", text)
    if missing:
        group, _, option = missing.group(1).rpartition("/")
        options = config_groups().get(group, [])
        return (f"{group}={option}: no such {group} option; {_nearest(option, options)}"
                f"valid: {', '.join(options)}")
    unknown = re.search(r"Could not override '([^']+)'", text)
    if unknown:
        return _unknown_key(unknown.group(1), args)
    ambiguous = re.search(r"Ambiguous value for argument '([^']+)'", text)
    if ambiguous:
        return _comma_list(ambiguous.group(1), args)
    if "LexerNoViableAltException" in text or "ParseException" in text or "mismatched" in text:
        bad = next((a for a in args if a in text), None) or _unreadable(args) \
            or text.splitlines()[0]
        return (f"cannot read the override {bad}: Hydra's grammar refuses a character in it "
                "(an '=' or a space in a value, say); quote the value ('key=\"...\"') or "
                "escape it with \\")
    return text.strip().splitlines()[0]


def _unreadable(args: list[str]) -> str | None:
    """The first argument Hydra's grammar cannot read on its own (its error names only
    the character: "mismatched input '=' expecting <EOF>")."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for arg in args:
        if arg.startswith("-"):
            continue
        try:
            parser.parse_overrides([arg])
        except Exception:
            return arg
    return None


def _unknown_key(key: str, args: list[str]) -> str:
    groups, keys = config_groups(), root_keys()
    top, _, rest = key.partition(".")
    if not rest:
        names = [*groups, *keys]
        return (f"{key} is not a config group or key; {_nearest(key, names)}groups: "
                f"{', '.join(g for g in groups if '/' not in g or g == 'hydra/launcher')}; "
                f"keys: {', '.join(keys)}")
    parent, _, leaf = key.rpartition(".")
    valid = _keys_under(parent, [a for a in args if _key_of(a) != key])
    # Only callbacks take keys of the user's own (a new callback, +callbacks.x._target_=...):
    # everywhere else ganrun's schemas refuse them, so `+key` is no fix to offer.
    free = key.split(".")[0] == "callbacks"
    add = f" (to add a new key on purpose: +{key}=...)" if free else ""
    if valid is None:
        return f"{key}: no such key{add}"
    if not valid:  # loss=hinge: nothing but its name
        option = _value_of(f"{parent}.name", [a for a in args if _key_of(a) != key])
        which = f"{parent}={option}" if isinstance(option, str) else parent
        return f"{key}: not a key of {parent}; {which} has no keys of its own{add}"
    near = _nearest(leaf, valid).replace("mean ", f"mean {parent}.")
    return f"{key}: not a key of {parent}; {near}valid keys: {', '.join(valid)}{add}"


def _comma_list(override: str, args: list[str]) -> str:
    """`key=a,b` in a single run (Hydra: "Ambiguous value"): brackets where the key takes
    a list (a list group such as regularizer, or a list key such as optim.betas), -m where
    the values are meant as a sweep."""
    from omegaconf import ListConfig

    key, _, values = override.partition("=")
    name = key.lstrip("+~")
    sweep = f"add -m to sweep over {' and '.join(values.split(','))}"
    current = _value_of(name, [a for a in args if a != override])
    if name in list_groups() or isinstance(current, ListConfig):
        return f"{override}: a list needs brackets: use {key}=[{values}] (or {sweep})"
    quote = f"; a string with a comma in it: quote it, {key}='{values}'" \
        if isinstance(current, str) else ""
    return f"{override}: one value per key in a single run; {sweep}{quote}"


def list_groups() -> list[str]:
    """The groups that take a list of options (`regularizer: []` in train.yaml's defaults)."""
    defaults = yaml.safe_load((configs_folder() / "train.yaml").read_text())["defaults"]
    return [k for entry in defaults if isinstance(entry, dict)
            for k, v in entry.items() if isinstance(v, list)]


def _value_of(key: str, args: list[str]):
    """`key`'s value in the config the other overrides compose (sweeps take their first
    value); None when there is none or that cannot be composed."""
    from omegaconf import OmegaConf

    from ganrun.config.compose import compose_config

    single = [a.split("=", 1)[0] + "=" + _first(a.split("=", 1)[1]) if "=" in a else a
              for a in args if not a.startswith("-")]
    try:
        cfg, _ = compose_config(*single)
    except Exception:  # noqa: BLE001 - only a hint is lost
        return None
    return OmegaConf.select(cfg, key, default=None)


def _keys_under(node: str, args: list[str]) -> list[str] | None:
    """The keys of `node` in the config the other overrides compose (sweeps take their
    first value); None when that cannot be composed."""
    from omegaconf import DictConfig

    value = _value_of(node, args)
    if not isinstance(value, DictConfig):
        return None
    return [k for k in value if k not in HIDDEN_KEYS and k != "name"]  # name: the option's


def _first(value: str) -> str:
    """A sweep's first value (`a,b` -> a); a list or a single value as it is."""
    return value if value.startswith("[") else value.split(",")[0]


# --- launchers -----------------------------------------------------------------------


def launcher_note(args: list[str]) -> str | None:
    """A line when the launcher asked for does nothing here (a single run)."""
    launcher = next((a.split("=", 1)[1] for a in args if _key_of(a) == "hydra/launcher"), None)
    if launcher == "fleet" and not {"-m", "--multirun"} & set(args):
        return ("ganrun: note: hydra/launcher=fleet trains a sweep's jobs together (ganrun -m "
                "...); this single run trains alone")
    return None


def check_launcher(args: list[str]) -> str | None:
    """A message when the launcher asked for cannot work on this machine."""
    launcher = next((a.split("=", 1)[1] for a in args if _key_of(a) == "hydra/launcher"), None)
    if launcher in ("slurm_gpu", "submitit_slurm") and shutil.which("sbatch") is None:
        return (f"hydra/launcher={launcher} submits the jobs to SLURM with sbatch, which is "
                "not on PATH here: run it on a SLURM login node, or leave it out (the jobs "
                "then run here, one after another; hydra/launcher=joblib runs them side by side)")
    return None


# --- --help --------------------------------------------------------------------------


def help_text() -> str:
    """`ganrun --help`: the groups and their options, each with its YAML's first line."""
    lines = ["ganrun: train a GAN from composed configs (Hydra).", "",
             "  ganrun [group=option ...] [key=value ...]       one run (outputs/runs/<stamp>)",
             "  ganrun -m group=a,b key=1,2 ...                  a sweep (outputs/multiruns/<stamp>)",
             "  ganrun ... --cfg job                             print the composed config",
             "", "Config groups (group=option):"]
    configs = configs_folder()
    for group, options in config_groups().items():
        lines.append(f"  {group}")
        folder = configs.joinpath(*group.split("/"))
        for option in options:
            path = folder / f"{option}.yaml"
            about = header(path) if path.is_file() else HYDRA_LAUNCHERS.get(option, "")
            lines.append(f"    {option:22s} {about}")
    lines += ["", "Keys (key=value; see each group's YAML for its keys): "
              + ", ".join(root_keys()), "", "Other commands:"]
    lines += [f"  {name:16s} {about}" for name, about in COMMANDS.items()]
    lines += ["", "Hydra's own flags: ganrun --hydra-help.  Documentation: README.md."]
    return "\n".join(lines)
