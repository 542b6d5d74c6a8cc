"""The README's "Adding your own" section, run as written: a regularizer (one class,
one YAML) and a callback (a module on the Python path, added with `_target_`)."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import Tensor

from ganrun.errors import UserError
from ganrun.ranges import at_least
from ganrun.regularizers import REGULARIZERS, Regularizer, StepContext

from conftest import FAST, GANRUN, REPO, cli_env, compose_cfg
from tbread import scalars


def section_blocks(language: str) -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Adding your own loss, regularizer or callback")[1].split("\n## ")[0]
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.S)


@pytest.fixture
def drift(tmp_path):
    """The README's regularizer, registered as if added to ganrun/regularizers.py, and
    its YAML in a config folder on Hydra's search path."""
    code = section_blocks("python")[0]
    namespace = {"REGULARIZERS": REGULARIZERS, "Regularizer": Regularizer, "dataclass": dataclass,
                 "at_least": at_least, "UserError": UserError, "StepContext": StepContext,
                 "Tensor": Tensor}
    exec(code, namespace)  # noqa: S102 - the README's own example
    (yaml,) = section_blocks("yaml")
    folder = tmp_path / "configs" / "regularizer"
    folder.mkdir(parents=True)
    (folder / "drift.yaml").write_text(yaml)
    try:
        yield namespace["DriftPenalty"], f"hydra.searchpath=[file://{tmp_path / 'configs'}]"
    finally:
        REGULARIZERS.pop("drift", None)


def test_the_readme_regularizer_computes_its_penalty(drift):
    cls, _ = drift
    real_out = torch.tensor([0.5, -2.0, 3.0])
    ctx = StepContext(torch.zeros(3, 2), torch.zeros(3, 2), real_out, torch.zeros(3), None)
    expected = 0.25 * np.mean(np.array([0.5, -2.0, 3.0]) ** 2)
    assert cls(weight=0.25).d_penalty(ctx).item() == pytest.approx(expected)


def test_the_readme_regularizer_trains_logs_and_is_checked(drift, train_fast):
    from ganrun.schema import validate

    _, searchpath = drift
    result, run_dir = train_fast(searchpath, "loss=wgan_gp",
                                 "regularizer=[gradient_penalty,drift]", "train.steps=6")
    assert result["status"] == "finished" and result["losses"]["loss/drift"] > 0
    assert [s for s, _ in scalars(run_dir / "tb")["loss/drift"]] == [2, 4, 6]
    with pytest.raises(UserError, match=r"^regularizer.drift.weight=-1: must be finite and >= 0$"):
        validate(compose_cfg(*FAST, searchpath, "regularizer=[drift]",
                             "regularizer.drift.weight=-1")[0])
    with pytest.raises(UserError, match="regularizer.drift.wieght: unknown key.*valid keys: weight"):
        validate(compose_cfg(*FAST, searchpath, "regularizer=[drift]",
                             "+regularizer.drift.wieght=1")[0])
    with pytest.raises(UserError, match="regularizer drift acts on D, but loss=mmd"):
        validate(compose_cfg(*FAST, searchpath, "regularizer=[drift]", "loss=mmd",
                             "loss.space=samples")[0])


def test_the_readme_callback_runs_from_the_command_line(tmp_path):
    from ganrun.tools import load_module

    (tmp_path / "my_callbacks.py").write_text(section_blocks("python")[1])
    command = re.search(r"\n    (ganrun \+callbacks\.weight_norm.*)\n", (REPO / "README.md").read_text())
    args = command.group(1).split()[1:]
    env = {**cli_env(), "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run([GANRUN, *args, "train.steps=100", "metrics=none", "log.every=50"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = (tmp_path / "outputs" / "runs").iterdir()
    logged = scalars(run_dir / "tb")["G/weight_norm"]
    assert [s for s, _ in logged] == [50, 100]
    module, _ = load_module(run_dir / "checkpoints" / "last.ckpt")
    norm = torch.sqrt(sum(p.detach().double().pow(2).sum() for p in module.G.parameters()))
    assert logged[-1][1] == pytest.approx(norm.item(), rel=1e-5)


def test_a_callback_that_cannot_be_made_is_named():
    from ganrun.callbacks import build_callbacks

    with pytest.raises(UserError, match="callbacks.x: cannot make no_such_module.Thing"):
        build_callbacks({"x": {"_target_": "no_such_module.Thing"}})
    with pytest.raises(UserError, match="callbacks.x: no _target_"):
        build_callbacks({"x": {"every": 3}})
    with pytest.raises(UserError, match="callbacks.x: .*every must be a positive integer"):
        build_callbacks({"x": {"_target_": "ganrun.callbacks.stats.StepStats", "every": 0}})
    with pytest.raises(UserError, match="callbacks.x: builtins.dict is not a Lightning Callback"):
        build_callbacks({"x": {"_target_": "builtins.dict"}})
