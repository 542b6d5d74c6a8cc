"""ganrun-report against numbers computed here from the jobs' own files."""

from __future__ import annotations

import csv
import json
import math
import statistics
import subprocess

import pytest
import yaml

from ganrun.report import report

from conftest import GANRUN, cli_env


def make_job(sweep, num, overrides, status="finished", fid=None, curve=(), ips=1000.0,
             health=None):
    name = f"{num}_" + ",".join(o for o in overrides if not o.startswith("seed="))
    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))
    saved = {"status": status, "reason": None if status == "finished" else "loss/d=nan",
             "losses": {"loss/g": 1.0 + num / 10}, "images_per_second": ips}
    if fid is not None:
        saved["metrics"] = {"fid": fid, "is": 10 - fid / 10}
    if health is not None:
        share, kinds = health
        saved["health"] = {"collapsed_share": share,
                           "warnings": [{"kind": k, "step": 10, "message": "..."} for k in kinds]}
    (job / "metrics.json").write_text(json.dumps(saved))
    with open(job / "metrics.jsonl", "w") as f:
        for step, value in curve:
            f.write(json.dumps({"step": step, "metrics": {"fid": value}}) + "\n")
    return saved


def test_report_groups_seeds_and_ranks_configurations(tmp_path):
    sweep = tmp_path / "sweep"
    fids = {("loss=bce", "optim=adam"): [30.0, 34.0], ("loss=bce", "optim=sgd"): [80.0, 90.0],
            ("loss=hinge", "optim=adam"): [20.0, 26.0], ("loss=hinge", "optim=sgd"): [50.0, 70.0]}
    num = 0
    for (loss, optim), values in fids.items():
        for seed, fid in enumerate(values):
            make_job(sweep, num, [loss, optim, f"seed={seed}"], fid=fid,
                     curve=[(10, fid + 20), (20, fid)], ips=1000 + num)
            num += 1
    make_job(sweep, num, ["loss=bce", "optim=sgd", "seed=2"], status="diverged")
    rows, names, written = report(sweep, "fid")
    assert [r["config"] for r in rows] == ["loss=hinge,optim=adam", "loss=bce,optim=adam",
                                           "loss=hinge,optim=sgd", "loss=bce,optim=sgd"]
    for row in rows:
        values = fids[tuple(row["config"].split(","))]
        assert row["fid"][0] == pytest.approx(statistics.mean(values))
        assert row["fid"][1] == pytest.approx(statistics.stdev(values))
    bce_sgd = rows[-1]
    assert (bce_sgd["seeds"], bce_sgd["finished"], bce_sgd["diverged"]) == (3, 2, 1)
    with open(sweep / "report.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["config"] for r in table] == [r["config"] for r in rows]
    assert float(table[0]["fid_mean"]) == pytest.approx(23.0)
    assert float(table[0]["is_mean"]) == pytest.approx(10 - 2.3)
    md = (sweep / "report.md").read_text()
    assert "| `loss=hinge,optim=adam` | 2 | 0 | 0 |" in md and "diverged: loss/d=nan" in md
    assert (sweep / "report_fid.png").stat().st_size > 1000 and sweep / "report_fid.png" in written
    jobs_listed = md.split("Every job:")[1]
    assert jobs_listed.count("| finished |") == 8 and jobs_listed.count("| diverged |") == 1
    report(sweep, "fid", columns=["fid"])  # only these, in this order, in report.md
    header = next(line for line in (sweep / "report.md").read_text().splitlines()
                  if line.startswith("| configuration"))
    assert header.endswith("| stopped | fid | images/s | health warnings |")
    with open(sweep / "report.csv") as f:
        assert "is_mean" in next(csv.reader(f))  # the CSV keeps every metric


def test_report_command_errors(tmp_path):
    proc = subprocess.run([GANRUN + "-report", str(tmp_path / "absent")], capture_output=True,
                          text=True, env=cli_env())
    assert proc.returncode == 1 and "no such directory" in proc.stderr
    sweep = tmp_path / "sweep"
    make_job(sweep, 0, ["loss=bce", "seed=0"], fid=3.0)
    proc = subprocess.run([GANRUN + "-report", str(sweep), "--metric", "nope"],
                          capture_output=True, text=True, env=cli_env())
    assert proc.returncode == 1 and "metric nope not in the jobs' results" in proc.stderr
    proc = subprocess.run([GANRUN + "-report", str(sweep), "--columns", "fid,nope"],
                          capture_output=True, text=True, env=cli_env())
    assert proc.returncode == 1 and proc.stderr.startswith("ganrun-report: error: --columns nope")


def test_report_shows_health_columns_and_counts_warnings(tmp_path):
    sweep = tmp_path / "sweep"
    make_job(sweep, 0, ["method=gan", "seed=0"], fid=50.0, health=(0.6, ["mode_collapse"]))
    make_job(sweep, 1, ["method=gan", "seed=1"], fid=40.0,
             health=(0.2, ["mode_collapse", "oscillation"]))
    make_job(sweep, 2, ["method=gan", "seed=2"], fid=45.0, health=(0.1, []))
    make_job(sweep, 3, ["method=dyngan", "seed=0"], fid=30.0, health=(0.0, []))
    make_job(sweep, 4, ["method=dyngan", "seed=1"], fid=float("inf"), health=(0.0, []))
    rows, names, _ = report(sweep, "fid", columns=["fid", "health/collapsed_share"])
    gan = next(r for r in rows if r["config"] == "method=gan")
    assert gan["health"] == "mode collapse 2/3; oscillation 1/3"
    assert gan["health/collapsed_share"][0] == pytest.approx(0.3)
    dyngan = next(r for r in rows if r["config"] == "method=dyngan")
    assert dyngan["health"] == "—" and dyngan["fid"][0] == float("inf")  # no crash on inf
    md = (sweep / "report.md").read_text()
    assert "| mode collapse 2/3; oscillation 1/3 |" in md


def _strict(text: str):
    """JSON as the standard has it: NaN and Infinity refused."""
    def refuse(name):
        raise ValueError(f"{name} is not JSON")
    return json.loads(text, parse_constant=refuse)


def test_non_finite_values_are_written_as_null_with_the_reason_and_read_back(tmp_path):
    from ganrun.outputs import read_json, write_json

    path = tmp_path / "metrics.json"
    write_json(path, {"metrics": {"fid": 3.5, "reverse_kl": float("inf")},
                      "losses": {"loss/d": float("nan")}, "curve": [1.0, float("-inf")]})
    strict = _strict(path.read_text())  # any JSON reader takes it
    assert strict["metrics"] == {"fid": 3.5, "reverse_kl": None, "non_finite": {"reverse_kl": "inf"}}
    assert strict["losses"] == {"loss/d": None, "non_finite": {"loss/d": "nan"}}
    back = read_json(path)
    assert back["metrics"] == {"fid": 3.5, "reverse_kl": float("inf")}
    assert math.isnan(back["losses"]["loss/d"]) and back["curve"][1] is None


def test_a_generator_with_no_high_quality_sample_has_an_infinite_reverse_kl_end_to_end(
        train_fast, tmp_path):
    result, run_dir = train_fast("dataset=ring8", "train.steps=4", "metrics.every=4",
                                 "metrics.names=[modes]", "metrics.n_fake=500",
                                 "+callbacks.collapse._target_=health_helpers.CollapseG",
                                 "+callbacks.collapse.value=50.0")
    assert result["metrics"]["reverse_kl"] == float("inf")
    saved = _strict((run_dir / "metrics.json").read_text())
    assert saved["metrics"]["reverse_kl"] is None
    assert saved["metrics"]["non_finite"] == {"reverse_kl": "inf"}
    line = _strict((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert line["metrics"]["non_finite"] == {"reverse_kl": "inf"}


def test_one_seed_shows_no_spread_and_unknown_rates_show_a_dash(tmp_path):
    sweep = tmp_path / "sweep"
    make_job(sweep, 0, ["loss=bce", "seed=0"], fid=30.0, ips=None)
    make_job(sweep, 1, ["loss=hinge", "seed=0"], fid=20.0)
    make_job(sweep, 2, ["loss=hinge", "seed=1"], fid=24.0)
    rows, _, _ = report(sweep, "fid", columns=["fid"])
    bce = next(r for r in rows if r["config"] == "loss=bce")
    assert bce["fid"][0] == 30.0 and math.isnan(bce["fid"][1])
    md = (sweep / "report.md").read_text()
    assert "| `loss=bce` | 1 | 0 | 0 | 0 | 30 | — |" in md  # no "± 0", no "nan"
    assert "| `loss=hinge` | 2 | 0 | 0 | 0 | 22 ± 2.8 | 1000 |" in md


def test_a_sweep_where_no_job_finished_still_lists_every_job_and_why(tmp_path):
    sweep = tmp_path / "sweep"
    make_job(sweep, 0, ["lr=1", "seed=0"], status="diverged")
    running = make_job(sweep, 1, ["lr=1", "seed=1"], status="running")
    running["pid"] = 4242
    next(sweep.glob("1_*")).joinpath("metrics.json").write_text(json.dumps(running))
    run = subprocess.run([GANRUN.replace("ganrun", "ganrun-report"), str(sweep)],
                         capture_output=True, text=True, env=cli_env())
    assert run.returncode == 1
    assert "no job finished, nothing to rank (2 jobs: diverged, running (pid 4242))" in run.stderr
    assert "Traceback" not in run.stderr
    assert "| diverged |" in run.stdout and "running (pid 4242)" in run.stdout
    assert "diverged: loss/d=nan" in run.stdout


def test_losses_on_their_own_scales_are_listed_unranked_and_the_report_says_why(tmp_path):
    sweep = tmp_path / "sweep"
    for num, (loss, value) in enumerate([("wgan", -3.0), ("bce", 0.7), ("hinge", 0.2)]):
        saved = make_job(sweep, num, [f"loss={loss}", "seed=0"])
        saved["losses"]["loss/g"], saved["choices"] = value, {"loss": loss}
        next(sweep.glob(f"{num}_*")).joinpath("metrics.json").write_text(json.dumps(saved))
    rows, _, _ = report(sweep, "loss/g")
    assert [r["config"] for r in rows] == ["loss=wgan", "loss=bce", "loss=hinge"]  # sweep order
    title = (sweep / "report.md").read_text().splitlines()[0]
    assert "not ranked: loss/g is on each loss's own scale and the losses differ" in title
    # One loss: loss/g ranks its configurations.
    same = tmp_path / "same"
    for num, value in enumerate([0.9, 0.4]):
        saved = make_job(same, num, [f"optim.lr_g={num}", "seed=0"])
        saved["losses"]["loss/g"], saved["choices"] = value, {"loss": "nsgan"}
        next(same.glob(f"{num}_*")).joinpath("metrics.json").write_text(json.dumps(saved))
    rows, _, _ = report(same, "loss/g")
    assert [r["config"] for r in rows] == ["optim.lr_g=1", "optim.lr_g=0"]
    assert "sorted by loss/g (lower is better)" in (same / "report.md").read_text()
