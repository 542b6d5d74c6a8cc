"""The README's "Adding your own" section, run as written: a regularizer (one class,
one YAML), a metric (one class, one YAML line) and a callback (a module on the Python
path, added with `_target_`)."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import yaml
from torch import Tensor

from ganrun.errors import UserError
from ganrun.metrics.registry import METRICS
from ganrun.ranges import at_least
from ganrun.regularizers import REGULARIZERS, Regularizer, StepContext

from conftest import FAST, GANRUN, REPO, cli_env, compose_cfg
from tbread import hparams, scalars


def section_blocks(language: str) -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Adding your own loss, regularizer, metric or callback")[1]
    return re.findall(rf"```{language}\n(.*?)```", section.split("\n## ")[0], flags=re.S)


def block(language: str, holding: str) -> str:
    """The section's one `language` block that holds `holding`."""
    (found,) = [code for code in section_blocks(language) if holding in code]
    return found


@pytest.fixture
def drift(tmp_path):
    """The README's regularizer, registered as if it were ganrun/regularizers/drift.py, and
    its YAML in a config folder on Hydra's search path."""
    code = block("python", "class DriftPenalty")
    namespace = {"REGULARIZERS": REGULARIZERS, "Regularizer": Regularizer, "dataclass": dataclass,
                 "at_least": at_least, "UserError": UserError, "StepContext": StepContext,
                 "Tensor": Tensor}
    exec(code, namespace)  # noqa: S102 - the README's own example
    folder = tmp_path / "configs" / "regularizer"
    folder.mkdir(parents=True)
    (folder / "drift.yaml").write_text(block("yaml", "@package regularizer.drift"))
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
    from ganrun.config.schema import validate

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


@pytest.fixture
def mean_gap():
    """The README's metric, filed as if ganrun/metrics/mean_gap.py were imported with the
    others, and the names of its YAML line."""
    existing = METRICS.pop("mean_gap", None)  # a user who added the example already
    exec(block("python", "class MeanGap"), {"__name__": "ganrun.metrics.mean_gap"})  # noqa: S102
    try:
        yield yaml.safe_load(block("yaml", "mean_gap"))["names"]
    finally:
        METRICS.pop("mean_gap", None)
        if existing is not None:
            METRICS["mean_gap"] = existing


def test_the_readme_metric_is_logged_checked_and_ranked(mean_gap, train_fast, tmp_path):
    from ganrun.analysis.report import report
    from ganrun.callbacks.metrics import evaluation_seed
    from ganrun.cli.tools import load_module
    from ganrun.config.schema import validate
    from ganrun.data import load_dataset
    from ganrun.outputs import restore_non_finite
    from ganrun.samples import generate_many

    assert mean_gap == [*compose_cfg()[0].metrics.names, "mean_gap"]  # the shipped line + 1
    options = ["dataset=ring8", "dataset.n_samples=500", "metrics=default", "metrics.every=2",
               f"metrics.names=[{','.join(mean_gap)}]", "metrics.n_fake=100",
               "metrics.n_real=500"]
    sweep = tmp_path / "sweep"  # two configurations, laid out as a Hydra sweep's jobs
    for number, lr in enumerate(("1e-4", "3e-2")):
        result, run_dir = train_fast(*options, f"optim.lr_g={lr}", name=f"sweep/{number}_lr")
        (run_dir / ".hydra").mkdir()
        (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"optim.lr_g={lr}"]))
        records = [restore_non_finite(json.loads(line))
                   for line in (run_dir / "metrics.jsonl").open()]
        assert [r["step"] for r in records] == [2, 4] and result["status"] == "finished"
        # Among the features' metrics, before those of class probabilities.
        assert list(records[-1]["metrics"])[-1] == "mean_gap" and "is" in records[-1]["skipped"]
        logged = scalars(run_dir / "tb")["metrics/mean_gap"]
        assert logged == [(r["step"], pytest.approx(r["metrics"]["mean_gap"])) for r in records]
        assert "metrics/mean_gap" in hparams(run_dir / "tb")[1]
    # The last value again, by hand: the evaluation's samples from the checkpoint's
    # generator, against every real point (n_real covers the 500).
    module, cfg = load_module(run_dir / "checkpoints" / "last.ckpt")
    torch.manual_seed(evaluation_seed(cfg.seed, 4))
    fake = generate_many(module, 100).double().numpy()
    real = load_dataset(cfg.dataset).data.double().numpy()
    assert records[-1]["metrics"]["mean_gap"] == pytest.approx(
        np.linalg.norm(fake.mean(axis=0) - real.mean(axis=0)), rel=1e-9)
    rows, names, _ = report(sweep, "MEAN_GAP")
    assert "mean_gap" in names and rows[0]["mean_gap"].mean < rows[1]["mean_gap"].mean
    md = (sweep / "report.md").read_text()
    assert "sorted by mean_gap (lower is better)" in md and "| mean_gap |" in md
    checked = validate(compose_cfg(*FAST, *options, "optimized_metric=Mean_Gap")[0])
    assert checked.optimized_metric == "mean_gap"
    with pytest.raises(UserError, match=r"30 generated samples \(metrics.n_fake\) are too few: "
                                        r"fid, kid, pr, dc, mean_gap need at least 50"):
        validate(compose_cfg(*FAST, *options, "metrics.n_fake=30")[0])


def test_the_readme_callback_runs_from_the_command_line(tmp_path):
    from ganrun.cli.tools import load_module

    (tmp_path / "my_callbacks.py").write_text(block("python", "class GeneratorWeightNorm"))
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
    with pytest.raises(UserError, match="callbacks.x: every=0: must be an integer >= 1"):
        build_callbacks({"x": {"_target_": "ganrun.callbacks.stats.StepStats", "every": 0}})
    with pytest.raises(UserError, match="callbacks.x: builtins.dict is not a Lightning Callback"):
        build_callbacks({"x": {"_target_": "builtins.dict"}})
