"""hydra/launcher=fleet from the command line (issue 21): a sweep's jobs of one
structure train as fleets, the rest alone with a line naming why; every job directory
is what the basic launcher's would be; ganrun-report reads a fleet sweep as it reads
any sweep; SIGTERM saves every member and the printed command resumes the fleet."""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import time

import torch
import yaml

from conftest import GANRUN, cli_env
from tbread import scalars

SHORT = ("dataset=ring8", "model.hidden_dims=[32,32]", "train.steps=40", "log.every=20",
         "log.sample_every=40", "metrics.every=40", "metrics.n_fake=500",
         "trainer.accelerator=cpu")


def ganrun(*args, cwd, timeout=900):
    return subprocess.run([GANRUN, *args], cwd=cwd, capture_output=True, text=True,
                          env=cli_env(), timeout=timeout)


def jobs(sweep):
    return {p.name: json.loads((p / "metrics.json").read_text())
            for p in sorted(sweep.iterdir()) if (p / "metrics.json").is_file()}


def test_a_fleet_sweep_is_a_sweep_of_normal_jobs(tmp_path):
    fleet_dir, basic_dir = tmp_path / "fleet", tmp_path / "basic"
    sweep = ("-m", *SHORT, "loss=nsgan,hinge", "seed=0,1")
    proc = ganrun(*sweep, "hydra/launcher=fleet", f"hydra.sweep.dir={fleet_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Launching 4 jobs as 2 fleet(s) and 0 job(s) alone" in proc.stderr + proc.stdout
    proc = ganrun(*sweep, f"hydra.sweep.dir={basic_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    fleet, basic = jobs(fleet_dir), jobs(basic_dir)
    assert sorted(fleet) == sorted(basic) == [
        "0_loss=nsgan,seed=0", "1_loss=nsgan,seed=1", "2_loss=hinge,seed=0", "3_loss=hinge,seed=1"]
    for name, job in fleet.items():
        alone = basic[name]
        assert job["status"] == "finished" and job["g_steps"] == 40
        same_fleet = [n for n in fleet if n.split("_")[1].split(",")[0] == name.split("_")[1].split(",")[0]]
        assert job["fleet"]["size"] == 2 and job["fleet"]["members"] == same_fleet
        assert "fleet" not in alone
        # the same sections and keys as the job run alone (numbers: float32 rounding apart)
        assert sorted(job) == sorted([*alone, "fleet"])
        assert sorted(job["metrics"]) == sorted(alone["metrics"])
        for what in (".hydra/overrides.yaml", "config.yaml", "checkpoints/last.ckpt",
                     "samples/step_0000040.png", "metrics.jsonl", "ganrun.log"):
            assert (fleet_dir / name / what).is_file(), what
        assert yaml.safe_load((fleet_dir / name / ".hydra/overrides.yaml").read_text()) == \
            yaml.safe_load((basic_dir / name / ".hydra/overrides.yaml").read_text())
        assert sorted(scalars(fleet_dir / name / "tb")) == sorted(scalars(basic_dir / name / "tb"))
        # a member's log holds its own lines, not its siblings'
        own_log = (fleet_dir / name / "ganrun.log").read_text()
        assert own_log.count("step 40/40") == 1 and f"outputs in {fleet_dir / name}" in own_log
    # ganrun-report: the same report, in form, as for the sweep run job by job
    reports = {}
    for sweep_dir in (fleet_dir, basic_dir):
        printed = subprocess.run([GANRUN + "-report", str(sweep_dir)], capture_output=True,
                                 text=True, env=cli_env())
        assert printed.returncode == 0, printed.stderr
        text = (sweep_dir / "report.md").read_text().replace(sweep_dir.name, "SWEEP")
        reports[sweep_dir] = re.sub(r"-?\d+(\.\d+)?(e[-+]\d+)?", "#", text)
    assert reports[fleet_dir] == reports[basic_dir]


def test_a_job_that_cannot_join_a_fleet_trains_alone_and_says_why(tmp_path):
    proc = ganrun("-m", *SHORT, "metrics=none", "regularizer=[],[label_noise]", "seed=0,1",
                  "hydra/launcher=fleet", f"hydra.sweep.dir={tmp_path / 's'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stderr + proc.stdout
    assert "Launching 4 jobs as 1 fleet(s) and 2 job(s) alone" in out
    assert out.count("(alone: regularizer=label_noise)") == 2
    statuses = jobs(tmp_path / "s")
    assert [("fleet" in j, j["status"]) for j in statuses.values()] == [
        (True, "finished"), (True, "finished"), (False, "finished"), (False, "finished")]


def test_sigterm_stops_a_fleet_with_every_member_saved_and_the_printed_command_resumes_it(tmp_path):
    sweep = tmp_path / "s"
    proc = subprocess.Popen(
        [GANRUN, "-m", *SHORT, "metrics=none", "train.steps=100000", "log.every=10",
         "seed=0,1,2", "hydra/launcher=fleet", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        metrics = [json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")]
        if len(metrics) == 3 and all(m.get("g_steps", 0) >= 10 for m in metrics):
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]  # SIGTERM ends the fleet; the sweep goes on
    statuses = jobs(sweep)
    steps = {j["g_steps"] for j in statuses.values()}
    assert all(j["status"] == "interrupted" for j in statuses.values()) and len(steps) == 1
    (step,) = steps
    for name in statuses:  # each member saved at the signal's step
        saved = torch.load(sweep / name / "checkpoints/last.ckpt", weights_only=False)
        assert saved["ganrun"]["g_steps"] == step
    line = next(ln for ln in err.splitlines() if ln.startswith("ganrun: resume with: "))
    command = shlex.split(line.removeprefix("ganrun: resume with: "))
    assert command[:3] == ["ganrun", "-m", "hydra/launcher=fleet"]
    assert f"ckpt_path={sweep}" in command
    resumed = tmp_path / "r"
    again = ganrun(*[c for c in command[1:] if not c.startswith("train.steps=")],
                   f"train.steps={step + 20}", f"hydra.sweep.dir={resumed}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "restored generator step" in again.stderr + again.stdout
    assert [(j["status"], j["g_steps"]) for j in jobs(resumed).values()] == [
        ("finished", step + 20)] * 3


def test_the_launcher_settings_are_checked_once_before_any_job(tmp_path):
    for setting, message in [("fleet.devices=2", "ganrun: error: fleet.devices=2: fleets train on "
                                                 "one device for now"),
                             ("fleet.size=0", "ganrun: error: fleet.size=0: must be"),
                             ("fleet.size=abc", "ganrun: error: fleet.size=abc: must be an "
                                                "integer >= 1")]:
        proc = ganrun("-m", *SHORT, "seed=0,1", "hydra/launcher=fleet", setting,
                      f"hydra.sweep.dir={tmp_path / 's'}", cwd=tmp_path)
        assert proc.returncode == 1, proc.stderr[-2000:]
        assert proc.stderr.count("ganrun: error:") == 1 and message in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
        assert not list((tmp_path / "s").glob("*/metrics.json"))
    proc = ganrun(*SHORT, "metrics=none", "hydra/launcher=fleet", "train.steps=2",
                  f"hydra.run.dir={tmp_path / 'one'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ganrun: note: hydra/launcher=fleet trains a sweep's jobs together" in proc.stderr


def test_a_sweep_directory_as_ckpt_path_resumes_each_job_under_any_launcher(tmp_path):
    """ckpt_path=<sweep dir> gives each job its namesake's checkpoint (basic launcher
    here; the fleet's: the SIGTERM test); a member's directory, with its `=` and
    commas, is taken as the path it is."""
    first = tmp_path / "first"
    proc = ganrun("-m", *SHORT, "metrics=none", "seed=0,1", "train.steps=10",
                  f"hydra.sweep.dir={first}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    again = ganrun("-m", *SHORT, "metrics=none", "seed=0,1", "train.steps=20",
                   f"ckpt_path={first}", f"hydra.sweep.dir={tmp_path / 'again'}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("Restored all states") + again.stderr.count("Restored all states") == 2
    assert [(j["status"], j["g_steps"]) for j in jobs(tmp_path / "again").values()] == [
        ("finished", 20)] * 2
    (job,) = [p for p in first.iterdir() if p.name.startswith("1_")]
    assert "=" in job.name
    alone = ganrun(*SHORT, "metrics=none", "seed=1", "train.steps=15", f"ckpt_path={job}",
                   f"hydra.run.dir={tmp_path / 'alone'}", cwd=tmp_path)
    assert alone.returncode == 0, alone.stderr[-2000:]
    assert json.loads((tmp_path / "alone" / "metrics.json").read_text())["g_steps"] == 15
