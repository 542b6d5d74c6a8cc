"""What TensorBoard shows of runs and sweeps, and how a sweep's jobs are named: the
HParams metric columns a run can fill, tb/hparams.yaml, a sweep's varied keys first,
job directories named by what tells the jobs apart (the seed among it, floats cut
short), console log lines that say which job they come from."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.plugins.hparams.backend_context import _sort_and_reduce_to_hparams_limit

from ganrun import outputs
from ganrun.analysis.report import report
from ganrun.callbacks.metrics import Metrics
from ganrun.training import hparams as training
from ganrun.training.run import run

from conftest import FAST, GANRUN, cli_env, compose_cfg
from tbread import hparams, scalars

LOSSES = ["loss/d", "loss/g", "D/real", "D/fake"]
QUICK = [o for o in FAST if o != "metrics=none"]


def experiment(tb_dir: Path):
    """The HParams experiment a run wrote (hparam infos in order, with `differs`)."""
    acc = EventAccumulator(str(tb_dir))
    acc.Reload()
    for blob in acc.PluginTagToContent("hparams").values():
        data = plugin_data_pb2.HParamsPluginData.FromString(blob)
        if data.HasField("experiment"):
            return data.experiment
    raise AssertionError(f"no HParams experiment in {tb_dir}")


def train(tmp_path, name, *overrides):
    cfg, choices = compose_cfg(*QUICK, *overrides)
    run(cfg, run_dir=tmp_path / name, hydra_choices=choices)
    return tmp_path / name / "tb"


# --- the HParams view of one run ---------------------------------------------------------


def test_hparams_declare_only_the_metrics_the_run_logs(tmp_path):
    """2-D points (raw coordinates): the mode metrics, no IS; images through the random
    embedding: no IS, no mode metrics, no class coverage; no metrics: the losses."""
    points = train(tmp_path, "points", "dataset=ring8", "metrics.names=[fid,is,modes]",
                   "metrics.n_fake=200", "metrics.n_real=200")
    images = train(tmp_path, "images", "metrics.names=[fid,is,modes,class_coverage]",
                   "metrics.extractor=random_conv", "metrics.n_fake=100", "metrics.n_real=100")
    quiet = train(tmp_path, "quiet", "metrics=none")
    # The quality metrics first: TensorBoard shows the first five columns by default.
    assert hparams(points)[1] == ["metrics/fid", "metrics/modes", "metrics/high_quality",
                                  "metrics/reverse_kl", *LOSSES]
    assert hparams(images)[1] == ["metrics/fid", *LOSSES]
    assert hparams(quiet)[1] == LOSSES
    for tb in (points, images, quiet):  # every declared column is filled
        assert set(hparams(tb)[1]) <= set(scalars(tb))


@pytest.mark.parametrize("names,skipped,expected", [
    (["fid", "ppl"], {}, ["metrics/fid", "metrics/ppl"]),
    (["fid"], {}, ["metrics/fid"]),
    (["fid", "is", "class_coverage"], {"is": "..."}, ["metrics/fid", "metrics/classes_covered",
                                                      "metrics/class_kl"]),
])
def test_ppl_is_a_column_only_when_asked_for(names, skipped, expected):
    callback = Metrics(every=10)
    callback.evaluator = SimpleNamespace(cfg=SimpleNamespace(names=names), skipped=skipped)
    assert training.logged_metrics(SimpleNamespace(callbacks=[callback])) == [*expected, *LOSSES]
    assert training.logged_metrics(SimpleNamespace(callbacks=[])) == LOSSES


def test_tb_hparams_yaml_holds_the_hparams_tensorboard_shows(tmp_path):
    tb = train(tmp_path, "run", "metrics=none", "optim.lr_g=1e-4")
    saved = yaml.safe_load((tb / "hparams.yaml").read_text())
    values, _ = hparams(tb)
    assert saved == pytest.approx(values) and saved["optim.lr_g"] == pytest.approx(1e-4)
    assert list(saved) == [info.name for info in experiment(tb).hparam_infos]
    assert {"loss", "optim", "dataset", "model", "seed", "train.steps"} <= set(saved)


def test_hparams_put_the_swept_keys_first_and_hold_every_override():
    overrides = ["loss=hinge", "optim.betas=[0.0,0.9]", "seed=3", "train.steps=7"]
    cfg, hydra_choices = compose_cfg(*overrides)
    choices = training.choices_of(cfg, hydra_choices)
    params = training.hparams_of(cfg, choices, overrides, ["optim.betas", "seed"])
    assert list(params)[:4] == ["optim.betas", "seed", "loss", "train.steps"]
    assert params["seed"] == 3 and params["train.steps"] == 7 and params["loss"] == "hinge"
    assert params["optim.betas"] == "[0.0,0.9]"  # a key KEY_NUMBERS does not have
    assert {"dataset", "model", "optim", "regularizer", "optim.lr_g"} <= set(params)


# --- names of a sweep's jobs -----------------------------------------------------------


def write_sweep(tmp_path: Path, task: list[str], params: dict | None = None) -> Path:
    sweep = tmp_path / "sweep"
    sweep.mkdir(parents=True)
    config = {"hydra": {"overrides": {"task": task}, "sweeper": {"params": params}}}
    (sweep / "multirun.yaml").write_text(yaml.safe_dump(config))
    return sweep


def test_job_names_leave_out_what_every_job_shares(tmp_path):
    sweep = write_sweep(tmp_path, ["loss=bce,hinge", "optim=adam,sgd", "seed=0,1",
                                   "train.steps=100", "ckpt_path=/runs/x"])
    job = ["loss=hinge", "optim=sgd", "seed=1", "train.steps=100", "ckpt_path=/runs/x"]
    assert outputs.job_dirname(job, sweep) == "loss=hinge,optim=sgd,seed=1"
    # No multirun.yaml: every override but ckpt_path, the seed among them.
    assert outputs.job_dirname(job, tmp_path / "elsewhere") == \
        "loss=hinge,optim=sgd,seed=1,train.steps=100"
    # A sweep of one job: its overrides, not an empty name.
    one = write_sweep(tmp_path / "one", ["train.steps=5"])
    assert outputs.job_dirname(["train.steps=5"], one) == "train.steps=5"


def test_job_names_of_a_preset_sweep_and_an_optuna_search(tmp_path):
    preset = write_sweep(tmp_path, ["experiment=optimizer_study"],
                         {"model": "mlp,dcgan", "optim": "adam,rmsprop,sgd", "seed": "0,1,2"})
    assert outputs.job_dirname(["experiment=optimizer_study", "model=dcgan", "optim=sgd", "seed=2"],
                       preset) == "model=dcgan,optim=sgd,seed=2"
    search = write_sweep(tmp_path / "optuna", ["hparams_search=optuna_fid", "train.steps=20"],
                         {"optim.lr_g": "tag(log, interval(1e-5, 1e-3))",
                          "optim.lr_d": "tag(log, interval(1e-5, 1e-3))"})
    trial = ["optim.lr_g=0.00012345678901234", "optim.lr_d=3.2109876543e-05", "train.steps=20",
             "hparams_search=optuna_fid"]
    assert outputs.job_dirname(trial, search) == "optim.lr_d=3.211e-05,optim.lr_g=0.0001235"


def test_short_values_keep_short_numbers_as_written():
    assert outputs.short_value("optim.lr_g=0.00012345678901234") == "optim.lr_g=0.0001235"
    for line in ("optim.lr_d=1000000.0", "optim.lr_d=0.0002", "optim.lr_d=1e-05",
                 "train.steps=123456789", "dataset.root=/data/v1.23456789", "loss=hinge",
                 "optim.betas=[0.123456789,0.9]"):
        assert outputs.short_value(line) == line


def test_record_sweep_writes_the_sweep_config_for_any_sweeper(tmp_path):
    from omegaconf import OmegaConf

    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "s")},
                                         "overrides": {"task": ["seed=0,1"]}}})
    outputs.RecordSweep().on_multirun_start(config=config)
    assert yaml.safe_load((tmp_path / "s" / "multirun.yaml").read_text())["hydra"][
        "overrides"]["task"] == ["seed=0,1"]


def test_safe_name_with_the_jobs_overrides(tmp_path):
    from ganrun.config.compose import safe_name

    sweep = write_sweep(tmp_path, ["dataset.root=/data/a,/data/b", "train.steps=3"])
    assert safe_name("dataset.root=/data/b,train.steps=3", ["dataset.root=/data/b",
                                                            "train.steps=3"], str(sweep)) == \
        "dataset.root=_data_b"


# --- a sweep end to end ------------------------------------------------------------------


def ganrun(*args, cwd):
    return subprocess.run([GANRUN, *args], cwd=cwd, capture_output=True, text=True,
                          env=cli_env(), timeout=600)


def test_a_parallel_sweep_in_tensorboard_and_its_log(tmp_path):
    proc = ganrun("-m", "optim.weight_decay=0.0,0.000123456789", "seed=0,1", "loss=hinge",
                  "train.steps=2", "log.every=2", "metrics=none", "hydra/launcher=joblib",
                  "hydra.launcher.n_jobs=2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "multiruns").iterdir()
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    # Only what tells the jobs apart, the seed among it; the float short.
    assert jobs == ["0_optim.weight_decay=0.0,seed=0", "1_optim.weight_decay=0.0,seed=1",
                    "2_optim.weight_decay=0.0001235,seed=0",
                    "3_optim.weight_decay=0.0001235,seed=1"]
    exact = sweep / jobs[3]
    assert yaml.safe_load((exact / ".hydra" / "config.yaml").read_text())["optim"][
        "weight_decay"] == 0.000123456789
    assert "optim.weight_decay=0.000123456789" in (exact / ".hydra" / "overrides.yaml").read_text()
    for job in jobs:
        tb = sweep / job / "tb"
        values, _ = hparams(tb)
        number = int(job.split("_")[0])
        assert values["seed"] == number % 2 and values["loss"] == "hinge"
        assert values["optim.weight_decay"] == pytest.approx([0.0, 0.000123456789][number // 2],
                                                             rel=1e-12)
        infos = experiment(tb)
        assert [i.name for i in infos.hparam_infos][:2] == ["optim.weight_decay", "seed"]
        assert {i.name for i in infos.hparam_infos if i.differs} == {"optim.weight_decay", "seed"}
        # TensorBoard lists (and shows by default) the varied ones first.
        _sort_and_reduce_to_hparams_limit(infos)
        assert [i.name for i in infos.hparam_infos][:2] == ["optim.weight_decay", "seed"]
        assert list(yaml.safe_load((tb / "hparams.yaml").read_text()))[:2] == [
            "optim.weight_decay", "seed"]
        # The job's own log file keeps Hydra's format.
        assert "[job" not in (sweep / job / "ganrun.log").read_text()
    # Every console line of a job says which; the jobs ran side by side.
    lines = [line for line in proc.stdout.splitlines() if "][ganrun][" in line]
    assert lines and all(re.match(r"\[[^]]+\]\[job \d\]\[ganrun\]", line) for line in lines)
    for line in lines:
        if "outputs in" in line:
            number = re.search(r"\[job (\d)\]", line).group(1)
            assert line.rsplit("/", 1)[1].startswith(f"{number}_")
    # ganrun-report still groups the jobs that differ only by seed, labelled by what varies.
    rows, _, _ = report(sweep, "loss/g")
    assert sorted((row["config"], row["seeds"]) for row in rows) == [
        ("optim.weight_decay=0.0", 2), ("optim.weight_decay=0.000123456789", 2)]


def test_a_single_run_logs_in_hydras_format(tmp_path):
    proc = ganrun("train.steps=2", "log.every=2", "metrics=none", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if "][ganrun][" in line]
    assert lines and all(re.match(r"\[\d{4}-\d\d-\d\d [\d:,]+\]\[ganrun\]\[INFO\] - ", line)
                         for line in lines)
