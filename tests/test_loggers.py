"""The logger group (tensorboard, csv, mlflow, wandb, and several at once) read back with
each logger's own library, and report.html opened in a real browser.

The README's sweep with every logger at once (2 losses x 2 seeds, "Comparing runs") is
trained once for the module, as the README shows it; each logger's store is then read
back and held against the jobs' metrics.json and against TensorBoard's event files,
read by TensorBoard's own reader."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image
from test_readme import find

from browser import open_page
from conftest import GANRUN, REPO, cli_env
from tbread import scalars
from wandbread import read_run

README_SWEEP = r"^ganrun -m loss=nsgan,hinge seed=0,1 .*logger=\[tensorboard,csv,mlflow,wandb\]$"


def ganrun(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([GANRUN, *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**cli_env(), **(env or {})})


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """The README's sweep with every logger: its sweep directory, whose listing and whose
    first job's are the README's."""
    command = find(README_SWEEP)
    cwd = tmp_path_factory.mktemp("loggers")
    proc = ganrun(*command.argv[1:], cwd=cwd)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (sweep,) = (cwd / "outputs" / "multiruns").iterdir()
    listings = [line for line in command.block if line and not line.startswith(("$", "..."))]
    shown = sorted(p.name for p in sweep.iterdir() if not p.name.startswith("."))  # as ls does
    assert shown == sorted(listings[0].split())
    first = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name[0].isdigit())[0]
    assert sorted(p.name for p in first.iterdir() if not p.name.startswith(".")) == sorted(
        listings[1].split())
    return sweep


def jobs(sweep: Path) -> dict[str, dict]:
    """Each job directory's name -> its metrics.json."""
    return {p.name: json.loads((p / "metrics.json").read_text())
            for p in sorted(sweep.iterdir()) if (p / "metrics.json").is_file()}


def finals_of(saved: dict) -> dict[str, float]:
    """metrics.json's final numbers under the names the run logs them by (losses as
    they are, metrics/<name>, health/<name>): written out here, not ganrun's helper."""
    def restored(section: dict) -> dict:  # JSON's null for inf/nan, as non_finite says
        why = section.get("non_finite", {})
        return {k: float(why[k]) if v is None and k in why else v
                for k, v in section.items() if k != "non_finite"}

    out = restored(saved["losses"])
    out.update({f"metrics/{k}": v for k, v in restored(saved["metrics"]).items()})
    out.update({f"health/{k}": v for k, v in saved["health"].items()
                if isinstance(v, int | float) and not isinstance(v, bool)})
    return out


def csv_rows(run_dir: Path) -> list[dict[str, str]]:
    import csv

    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def csv_series(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    return [(int(r["step"]), float(r[tag])) for r in csv_rows(run_dir) if r.get(tag)]


def test_the_sweep_ran_every_job_with_every_logger(sweep):
    saved = jobs(sweep)
    assert len(saved) == 4 and all(s["status"] == "finished" for s in saved.values())
    for name in saved:
        run_dir = sweep / name
        assert (run_dir / "tb").is_dir() and (run_dir / "csv" / "metrics.csv").is_file()
        assert (run_dir / "wandb").is_dir()
    assert (sweep / "mlflow.db").is_file() and (sweep / "mlartifacts").is_dir()
    cwd = sweep.parents[2]  # <cwd>/outputs/multiruns/<stamp>: nothing of MLflow's outside it
    assert not (sweep / "mlruns").exists() and not (cwd / "mlruns").exists()


def test_mlflow_holds_the_sweep_as_one_experiment_of_four_runs(sweep, tmp_path, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    uri = f"sqlite:///{sweep / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiments = [e.name for e in client.search_experiments() if e.name != "Default"]
    assert experiments == [sweep.name]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # set_tracking_uri sets it: put back after
    mlflow.set_tracking_uri(uri)
    table = mlflow.search_runs(experiment_names=[sweep.name])
    assert len(table) == 4
    saved = jobs(sweep)
    assert set(table["tags.mlflow.runName"]) == set(saved)
    for _, row in table.iterrows():
        name = row["tags.mlflow.runName"]
        job = saved[name]
        assert row["status"] == "FINISHED"
        # the overrides and group choices as params
        assert row["params.loss"] == job["choices"]["loss"]
        assert row["params.seed"] == str(job["seed"])
        assert row["params.dataset"] == "ring8" and row["params.train.steps"] == "200"
        assert row["tags.ganrun.run_dir"] == str((sweep / name).resolve())
        # the final metrics are metrics.json's
        finals = finals_of(job)
        assert {"loss/g", "metrics/modes", "health/grad_norm_g"} <= set(finals)
        for key, value in finals.items():  # MLflow keeps +-inf as +-the largest float
            assert math.isclose(row[f"metrics.{key}"], value if math.isfinite(value) else
                                math.copysign(sys.float_info.max, value), rel_tol=1e-6), key
        run_id = row["run_id"]
        # the metrics by generator step: those TensorBoard has, step for step
        tb = scalars(sweep / name / "tb")
        for tag in ("loss/g", "D/real", "metrics/fid"):
            history = [(m.step, m.value) for m in client.get_metric_history(run_id, tag)]
            assert [s for s, _ in history] == [s for s, _ in tb[tag]], tag
            for (_, ours), (_, theirs) in zip(history, tb[tag], strict=True):
                assert math.isclose(ours, theirs, rel_tol=1e-6), tag
        # the sample grids, config.yaml and metrics.json as artifacts, as the run wrote them
        top = {a.path for a in client.list_artifacts(run_id)}
        assert {"metrics.json", "config.yaml", "samples"} <= top
        grids = {Path(a.path).name for a in client.list_artifacts(run_id, "samples")}
        assert grids == {"step_0000100.png", "step_0000200.png", "strip.png"}
        here = Path(client.download_artifacts(run_id, "metrics.json", str(tmp_path / name)))
        assert json.loads(here.read_text()) == job
        grid = Path(client.download_artifacts(run_id, "samples/step_0000100.png",
                                              str(tmp_path / name)))
        assert grid.read_bytes() == (sweep / name / "samples" / "step_0000100.png").read_bytes()


def test_csv_is_lightnings_layout_with_every_scalar_tensorboard_has(sweep):
    for name, job in jobs(sweep).items():
        run_dir = sweep / name
        hparams = yaml.safe_load((run_dir / "csv" / "hparams.yaml").read_text())
        assert hparams["loss"] == job["choices"]["loss"] and hparams["seed"] == job["seed"]
        tb = scalars(run_dir / "tb")
        assert {"loss/g", "metrics/fid", "health/grad_norm_g"} <= set(tb)
        for tag, points in tb.items():
            ours = csv_series(run_dir, tag)
            assert [s for s, _ in ours] == [s for s, _ in points], tag
            for (_, a), (_, b) in zip(ours, points, strict=True):
                assert math.isclose(a, b, rel_tol=1e-6), tag
        # the last logged loss is metrics.json's
        assert math.isclose(csv_series(run_dir, "loss/g")[-1][1], job["losses"]["loss/g"],
                            rel_tol=1e-6)


def test_wandb_writes_each_job_offline_as_a_run_of_the_sweeps_group(sweep):
    for name, job in jobs(sweep).items():
        run = read_run(sweep / name)
        assert run["name"] == name and run["group"] == sweep.name and run["project"] == "ganrun"
        assert run["exit"] == 0
        # config = the composed config, with the choices and overrides beside it
        config = {k: v.get("value", v) if isinstance(v, dict) else v
                  for k, v in run["config"].items()}
        composed = yaml.safe_load((sweep / name / "config.yaml").read_text())
        assert config["loss"] == composed["loss"] and config["seed"] == job["seed"]
        assert config["ganrun"]["hparams"]["loss"] == job["choices"]["loss"]
        assert set(config["ganrun"]["varied"]) == {"loss", "seed"}
        # every scalar with its generator step, as the CSV has it
        rows = {}
        for row in run["history"]:
            for tag, value in row.items():
                if isinstance(value, int | float) and not tag.startswith("_") \
                        and tag != "trainer/global_step":
                    rows.setdefault(tag, []).append((row["trainer/global_step"], value))
        for tag in ("loss/g", "metrics/fid", "health/grad_norm_g"):
            theirs = csv_series(sweep / name, tag)
            assert [s for s, _ in rows[tag]] == [s for s, _ in theirs], tag
            assert [v for _, v in rows[tag]] == pytest.approx([v for _, v in theirs], rel=1e-6)
        # the sample grids as images, at their steps
        images = [row for row in run["history"] if "samples/_type" in row]
        assert [row["trainer/global_step"] for row in images] == [100, 200]
        assert all(row["samples/_type"] == "images/separated" and row["samples/width"] == 384
                   for row in images)
        # the final values as the summary; metrics.json, config.yaml and the strip as files
        for key, value in finals_of(job).items():
            assert math.isclose(run["summary"][key], value, rel_tol=1e-6), key
        assert run["summary"]["status"] == "finished"
        assert {"metrics.json", "config.yaml", "samples/strip.png"} <= set(run["files"])


def test_the_report_page_in_chromium(sweep, tmp_path):
    """report.html loads with no console error and asks for nothing beyond itself; each
    ranked table has the sweep's configurations with report.md's cells; every picture
    decodes; each curve is drawn."""
    proc = subprocess.run([str(Path(GANRUN).with_name("ganrun-report")), str(sweep), "--html"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    page_file = sweep / "report.html"
    assert str(page_file) in proc.stdout.splitlines()[-1]
    shot = tmp_path / "report_html.png"
    seen = open_page(page_file, screenshot=shot)
    assert seen["messages"] == []
    assert all(url.startswith(("file:", "data:")) for url in seen["requests"]), seen["requests"]
    # the table is report.md's, row for row
    md_rows = [line.strip("| ").split(" | ")
               for line in (sweep / "report.md").read_text().splitlines()
               if line.startswith("| `loss=")]
    assert len(seen["tables"]) == 1
    (rows,) = seen["tables"]
    assert [r[0] for r in rows] == [r[0].strip("`") for r in md_rows]
    assert {r[0] for r in rows} == {"loss=nsgan", "loss=hinge"}
    assert [r[1:] for r in rows] == [r[1:] for r in md_rows]
    assert seen["headers"][0][:6] == ["configuration", "seeds", "diverged", "failed", "stopped",
                                      "modes"]
    # pictures: each configuration's last grid (its lowest seed's) and the strips
    images = {alt: (complete, width) for alt, complete, width in seen["images"]}
    assert set(images) == {"loss=nsgan", "loss=hinge", "samples over training"}
    assert all(complete and width > 0 for complete, width in images.values())
    grid = Image.open(sweep / "0_loss=nsgan,seed=0" / "samples" / "step_0000200.png")
    assert images["loss=nsgan"][1] == grid.width
    assert images["samples over training"][1] == Image.open(sweep / "report_strips.png").width
    # a curve per shown metric, each with its lines drawn
    assert {metric for metric, _, _ in seen["curves"]} == {"modes", "high_quality",
                                                            "reverse_kl"}
    assert all(paths >= 2 and width > 100 for _, paths, width in seen["curves"])
    # every health warning of every job, with its step
    warned = [w for job in jobs(sweep).values() for w in job["health"].get("warnings", [])]
    for warning in warned:
        assert warning["message"] in seen["text"]
    if os.environ.get("GANRUN_DOCS_SCREENSHOT"):  # the README's picture of the page
        shutil.copy(shot, REPO / "docs" / "report_html.png")
    assert Image.open(shot).width == 1400


@pytest.mark.parametrize("name", ["mlflow", "wandb"])
def test_a_logger_whose_package_is_missing_is_one_line_naming_the_extra(tmp_path, name):
    hide = (f"import sys; sys.modules[{name!r}] = None; sys.argv = ['ganrun', 'logger={name}', "
            "'train.steps=2']; from ganrun.cli.train import main; main()")
    proc = subprocess.run([sys.executable, "-c", hide], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"ganrun: error: logger={name} needs the {name} package, which is not "
                     f"installed: pip install \"ganrun[{name}]\""], proc.stderr
    assert not (tmp_path / "outputs").exists() or not list((tmp_path / "outputs").rglob("*.ckpt"))


def test_logger_settings_are_checked(tmp_path):
    proc = ganrun("logger=csv", "logger.csv.flush_every=0", cwd=tmp_path)
    assert proc.returncode != 0
    assert "logger.csv.flush_every=0: must be an integer >= 1" in proc.stderr
    proc = ganrun("logger=[tensorboard,mlfow]", cwd=tmp_path)
    assert proc.returncode != 0
    assert "mlfow" in proc.stderr and "did you mean mlflow?" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_without_a_logger_the_run_writes_its_own_files_only(train_fast):
    result, run_dir = train_fast("logger=[]", "dataset=ring8")
    assert result["status"] == "finished"
    assert not (run_dir / "tb").exists() and not (run_dir / "csv").exists()
    assert (run_dir / "metrics.json").is_file()


def test_several_loggers_take_the_same_scalars(train_fast):
    result, run_dir = train_fast("logger=[tensorboard,csv]", "dataset=ring8")
    tb = scalars(run_dir / "tb")
    assert tb["loss/d"] and [s for s, _ in csv_series(run_dir, "loss/d")] == [s for s, _ in tb["loss/d"]]


def _log_one_run(store: str, job: str, value: float) -> None:
    """A job of a parallel sweep: its MLflow sink in the shared store, one value logged."""
    from omegaconf import OmegaConf

    from ganrun.loggers import LOGGERS, Where

    params = OmegaConf.create({"tracking_uri": None, "experiment": None})
    where = Where(Path(store) / job, Path(store), job, Path(store).name)
    sink = LOGGERS["mlflow"](params, OmegaConf.create({}), where)
    sink.scalars({"loss/g": value}, 10)
    sink.finish({"status": "finished", "g_steps": 10, "losses": {"loss/g": value}})


def test_jobs_side_by_side_share_one_new_mlflow_store(tmp_path, monkeypatch):
    """Three processes open the same new sqlite store at once (hydra/launcher=joblib):
    MLflow's set-up of a store is not safe against another process doing it too
    (`table ... already exists`), so ganrun makes the store one process at a time."""
    import multiprocessing

    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the sweep's own store
    store = tmp_path / "sweep"
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=_log_one_run, args=(str(store), f"{k}_seed={k}", float(k)))
             for k in range(3)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=240)
    assert [proc.exitcode for proc in procs] == [0, 0, 0]
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name != "Default"]
    runs = client.search_runs([experiment.experiment_id])
    assert sorted((r.info.run_name, r.data.metrics["loss/g"], r.info.status) for r in runs) == [
        (f"{k}_seed={k}", float(k), "FINISHED") for k in range(3)]


def test_an_infinite_value_reaches_each_logger_as_it_can_hold_one(tmp_path, monkeypatch):
    """A generator with no sample near a mode has an infinite reverse KL: each logger
    takes it as a value it can hold (CSV and W&B: inf; MLflow: the largest float, as
    its store keeps infinities), and a NaN likewise; nothing stops at the end."""
    import mlflow
    from omegaconf import OmegaConf

    from ganrun.loggers import LOGGERS, Where

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = {"csv": {"flush_every": 1}, "mlflow": {"tracking_uri": None, "experiment": None},
              "wandb": {"project": "ganrun", "entity": None, "offline": True}}
    where = Where(tmp_path / "run", tmp_path / "run", "run")
    where.run_dir.mkdir()
    result = {"status": "finished", "g_steps": 2,
              "losses": {"loss/g": float("nan")}, "metrics": {"reverse_kl": float("inf")}}
    for name, settings in params.items():
        sink = LOGGERS[name](OmegaConf.create(settings), OmegaConf.create({"seed": 0}), where)
        sink.scalars({"metrics/reverse_kl": float("inf"), "loss/g": float("nan")}, 2)
        sink.finish(result)
    assert csv_series(where.run_dir, "metrics/reverse_kl") == [(2, float("inf"))]
    assert math.isnan(csv_series(where.run_dir, "loss/g")[0][1])
    run = read_run(where.run_dir)
    assert run["summary"]["metrics/reverse_kl"] == float("inf")
    assert [row["metrics/reverse_kl"] for row in run["history"]] == [float("inf")]
    client = mlflow.MlflowClient(f"sqlite:///{where.store / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name != "Default"]
    (logged,) = client.search_runs([experiment.experiment_id])
    assert logged.data.metrics["metrics/reverse_kl"] == sys.float_info.max
    assert math.isnan(logged.data.metrics["loss/g"]) and logged.info.status == "FINISHED"
