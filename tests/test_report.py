"""ganrun-report against numbers computed here from the jobs' own files."""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
import subprocess

import pytest
import yaml
from scipy import stats

from ganrun.analysis.report import report

from conftest import GANRUN, cli_env


def make_job(sweep, num, overrides, status="finished", fid=None, curve=(), ips=1000.0,
             health=None, dataset=None, extractor=None, metrics=None):
    """A job directory as a run leaves it: `metrics` replaces the fid-derived ones;
    `dataset` goes into metrics.json's choices, `extractor` (with it) into each
    evaluation of `curve` in metrics.jsonl."""
    name = f"{num}_" + ",".join(o for o in overrides if not o.startswith("seed="))
    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))
    saved = {"status": status, "reason": None if status == "finished" else "loss/d=nan",
             "losses": {"loss/g": 1.0 + num / 10}, "images_per_second": ips}
    if fid is not None:
        saved["metrics"] = {"fid": fid, "is": 10 - fid / 10}
    if metrics is not None:
        saved["metrics"] = metrics
    if dataset is not None:
        saved["choices"] = {"dataset": dataset}
    if health is not None:
        share, kinds = health
        saved["health"] = {"collapsed_share": share,
                           "warnings": [{"kind": k, "step": 10, "message": "..."} for k in kinds]}
    (job / "metrics.json").write_text(json.dumps(saved))
    protocol = {"dataset": dataset, "extractor": extractor} if extractor else {}
    with open(job / "metrics.jsonl", "w") as f:
        for step, value in curve:
            f.write(json.dumps({"step": step, **protocol, "metrics": {"fid": value}}) + "\n")
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
        assert row["fid"].ci95 == pytest.approx(  # two seeds: t with 1 degree of freedom
            stats.t.ppf(0.975, 1) * statistics.stdev(values) / math.sqrt(2), rel=1e-9)
    bce_sgd = rows[-1]
    assert (bce_sgd["seeds"], bce_sgd["finished"], bce_sgd["diverged"]) == (3, 2, 1)
    with open(sweep / "report.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["config"] for r in table] == [r["config"] for r in rows]
    assert float(table[0]["fid_mean"]) == pytest.approx(23.0)
    assert float(table[0]["is_mean"]) == pytest.approx(10 - 2.3)
    assert float(table[0]["fid_ci95"]) == pytest.approx(rows[0]["fid"].ci95)
    md = (sweep / "report.md").read_text()
    assert "| `loss=hinge,optim=adam` | 2 | 0 | 0 |" in md and "diverged: loss/d=nan" in md
    assert (sweep / "report_fid.png").stat().st_size > 1000 and sweep / "report_fid.png" in written
    jobs_listed = md.split("Every job:")[1]
    assert jobs_listed.count("| finished |") == 8 and jobs_listed.count("| diverged |") == 1
    report(sweep, "fid", columns=["fid"])  # only these, in this order, in report.md
    header = next(line for line in (sweep / "report.md").read_text().splitlines()
                  if line.startswith("| configuration"))
    assert header.endswith("| stopped | fid | vs next | images/s | health warnings |")
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
    proc = subprocess.run([GANRUN + "-report", str(sweep), "--metric", "FID"],
                          capture_output=True, text=True, env=cli_env())
    assert proc.returncode == 0 and "sorted by fid" in proc.stdout, proc.stderr


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
    assert "| `loss=bce` | 1 | 0 | 0 | 0 | 30 |  | — |" in md  # no "± 0", no "nan"
    # 22 ± 12.7 · 2.83 / √2; one seed below it: its lead cannot be tested.
    assert "| `loss=hinge` | 2 | 0 | 0 | 0 | 22 ± 25 | n.s. (1 seed) | 1000 |" in md


def test_seeds_equal_but_for_rounding_show_no_spread(tmp_path):
    """Two seeds whose values differ in the last bits (stdev 1e-16) show "± 0", not
    "± 7.1e-16"; a real spread keeps its digits."""
    sweep = tmp_path / "sweep"
    make_job(sweep, 0, ["loss=bce", "seed=0"], fid=0.5187)
    make_job(sweep, 1, ["loss=bce", "seed=1"], fid=0.5187 + 1e-16)
    make_job(sweep, 2, ["loss=hinge", "seed=0"], fid=0.5)
    make_job(sweep, 3, ["loss=hinge", "seed=1"], fid=0.6)
    report(sweep, "fid", columns=["fid"])
    md = (sweep / "report.md").read_text()
    assert "| 0.5187 ± 0 |" in md and "e-16" not in md
    assert "| 0.55 ± 0.64 |" in md  # t(0.975, 1) * 0.0707 / sqrt(2)


def test_a_sweep_where_no_job_finished_still_lists_every_job_and_why(tmp_path):
    sweep = tmp_path / "sweep"
    make_job(sweep, 0, ["lr=1", "seed=0"], status="diverged")
    running = make_job(sweep, 1, ["lr=1", "seed=1"], status="running")
    running["pid"] = os.getpid()  # alive: a job whose process is gone shows as died
    next(sweep.glob("1_*")).joinpath("metrics.json").write_text(json.dumps(running))
    run = subprocess.run([GANRUN.replace("ganrun", "ganrun-report"), str(sweep)],
                         capture_output=True, text=True, env=cli_env())
    assert run.returncode == 1
    pid = os.getpid()
    assert f"no job finished, nothing to rank (2 jobs: diverged, running (pid {pid}))" in run.stderr
    assert "Traceback" not in run.stderr
    assert "| diverged |" in run.stdout and f"running (pid {pid})" in run.stdout
    assert "diverged: loss/d=nan" in run.stdout


def test_losses_on_their_own_scales_are_listed_unranked_and_the_report_says_why(tmp_path):
    sweep = tmp_path / "sweep"
    for num, (loss, value) in enumerate([("wgan", -3.0), ("bce", 0.7), ("hinge", 0.2)]):
        saved = make_job(sweep, num, [f"loss={loss}", "seed=0"])
        saved["losses"]["loss/g"], saved["choices"] = value, {"loss": loss}
        next(sweep.glob(f"{num}_*")).joinpath("metrics.json").write_text(json.dumps(saved))
    rows, _, _ = report(sweep, "loss/g")
    assert [r["config"] for r in rows] == ["loss=wgan", "loss=bce", "loss=hinge"]  # sweep order
    md = (sweep / "report.md").read_text()
    assert "not ranked: loss/g is on each loss's own scale and the losses differ" in md
    assert "vs next" not in md
    # One loss: loss/g ranks its configurations.
    same = tmp_path / "same"
    for num, value in enumerate([0.9, 0.4]):
        saved = make_job(same, num, [f"optim.lr_g={num}", "seed=0"])
        saved["losses"]["loss/g"], saved["choices"] = value, {"loss": "nsgan"}
        next(same.glob(f"{num}_*")).joinpath("metrics.json").write_text(json.dumps(saved))
    rows, _, _ = report(same, "loss/g")
    assert [r["config"] for r in rows] == ["optim.lr_g=1", "optim.lr_g=0"]
    assert "sorted by loss/g (lower is better)" in (same / "report.md").read_text()


def test_t_quantiles_and_welch_p_values_match_scipy():
    from ganrun.analysis.stats import t_cdf, t_ppf, welch_p

    for dof in (1, 2, 3, 4, 9, 29, 2.5, 200):
        for q in (0.975, 0.995, 0.9, 0.6, 0.025):
            assert t_ppf(q, dof) == pytest.approx(stats.t.ppf(q, dof), rel=1e-9, abs=1e-9)
        for t in (-3.0, -0.4, 0.0, 1.7, 12.0):
            assert t_cdf(t, dof) == pytest.approx(stats.t.cdf(t, dof), abs=1e-12)
    pairs = [([33.7, 38.2, 42.7], [31.3, 42.3, 53.3]), ([20.0, 21.0, 22.0], [33.7, 38.2, 42.7]),
             ([1.0, 2.0], [3.0, 5.0, 9.0, 4.0]), ([0.5, 0.51, 0.49, 0.5], [0.2, 0.9]),
             ([31.3, 42.3, 53.3], [1000.0, 1050.0, 960.0])]
    for a, b in pairs:
        assert welch_p(a, b) == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue,
                                              abs=1e-6)
    assert welch_p([10, 10], [10, 10]) == 1.0  # no spread on either side: scipy's NaN


# Seeds of the optimizer study's shape: MLP RMSProp 38.2 (std 4.5) ranked above Adam
# 42.3 (std 11) by 3 seeds each, a DCGAN clearly ahead of both, SGD far behind.
STUDY = {"model=dcgan,optim=adam": [20.0, 21.0, 22.0],
         "model=mlp,optim=rmsprop": [33.7, 38.2, 42.7],
         "model=mlp,optim=adam": [31.3, 42.3, 53.3],
         "model=mlp,optim=sgd": [1000.0, 1050.0, 960.0]}


def test_cells_are_95_percent_intervals_and_each_lead_is_tested_against_the_next_row(tmp_path):
    sweep = tmp_path / "sweep"
    num = 0
    for config, values in STUDY.items():
        for seed, fid in enumerate(values):
            make_job(sweep, num, [*config.split(","), f"seed={seed}"], fid=fid)
            num += 1
    rows, _, _ = report(sweep)  # fid by default
    assert [r["config"] for r in rows] == list(STUDY)
    md = (sweep / "report.md").read_text()
    for row, below in zip(rows, [*rows[1:], None], strict=True):
        values = STUDY[row["config"]]
        half = stats.t.ppf(0.975, 2) * statistics.stdev(values) / math.sqrt(3)
        assert row["fid"].ci95 == pytest.approx(half, rel=1e-9)
        assert f"| {statistics.mean(values):.4g} ± {float(f'{half:.2g}'):g} |" in md
        if below is not None:
            p = stats.ttest_ind(values, STUDY[below["config"]], equal_var=False).pvalue
            assert row["p_next"] == pytest.approx(p, abs=1e-6)
    assert [r["vs next"] for r in rows] == ["p=0.018", "p=0.6 (n.s.)", "p<0.001", ""]
    rmsprop = next(line for line in md.splitlines() if "optim=rmsprop" in line)
    assert "| 38.2 ± 11 |" in rmsprop and "| p=0.6 (n.s.) |" in rmsprop
    assert "| 1003 ± 110 |" in md  # not 1.1e+02
    assert "± : 95% confidence interval of the mean over seeds, Student t" in md
    assert "vs next: Welch's two-sided t-test of this row's fid against the next row's" in md
    with open(sweep / "report.csv") as f:
        table = list(csv.DictReader(f))
    assert float(table[1]["p_vs_next"]) == pytest.approx(rows[1]["p_next"])
    assert table[-1]["p_vs_next"] == ""
    # By default the ranking metric and its companions; "all" adds the rest (is, loss/g).
    header = next(line for line in md.splitlines() if line.startswith("| configuration"))
    assert "| stopped | fid | vs next | images/s |" in header
    report(sweep, columns=["all"])
    header = next(line for line in (sweep / "report.md").read_text().splitlines()
                  if line.startswith("| configuration"))
    assert "| stopped | fid | is | loss/g | vs next | images/s |" in header


def test_jobs_on_two_datasets_are_ranked_in_two_tables_never_against_each_other(tmp_path):
    """Interleaved FIDs on digits (its classifier) and on mnist (Inception): ranked as
    one list, mnist's 30 would sit between digits' 10 and 50."""
    sweep = tmp_path / "sweep"
    fids = {("digits", "ganrun-classifier-ab12", "optim=adam"): [10.0, 11.0],
            ("mnist", "inception-v3-compat", "optim=adam"): [30.0, 31.0],
            ("digits", "ganrun-classifier-ab12", "optim=sgd"): [50.0, 52.0],
            ("mnist", "inception-v3-compat", "optim=sgd"): [70.0, 72.0]}
    num = 0
    for (dataset, extractor, optim), values in fids.items():
        for seed, fid in enumerate(values):
            make_job(sweep, num, [f"dataset={dataset}", optim, f"seed={seed}"], fid=fid,
                     curve=[(100, fid)], dataset=dataset, extractor=extractor)
            num += 1
    # Failed before any evaluation: it still belongs with mnist, by its configuration.
    make_job(sweep, num, ["dataset=mnist", "optim=sgd", "seed=2"], status="failed",
             dataset="mnist")
    rows, _, written = report(sweep, "fid")
    assert [(r["config"], r["seeds"]) for r in rows] == [
        ("dataset=digits,optim=adam", 2), ("dataset=digits,optim=sgd", 2),
        ("dataset=mnist,optim=adam", 2), ("dataset=mnist,optim=sgd", 3)]
    assert rows[1]["vs next"] == rows[3]["vs next"] == ""  # digits' 50 not tested against 30
    assert rows[0]["p_next"] == pytest.approx(
        stats.ttest_ind([10.0, 11.0], [50.0, 52.0], equal_var=False).pvalue, abs=1e-6)
    md = (sweep / "report.md").read_text()
    assert md.splitlines()[0].endswith(
        "4 configurations in 2 groups (dataset, extractor), each ranked on its own")
    tables = md.split("\nJobs that did not finish:")[0].split("\n## ")[1:]
    assert len(tables) == 2
    assert tables[0].startswith("dataset digits, extractor ganrun-classifier-ab12: "
                                "2 configurations, sorted by fid (lower is better)")
    assert tables[1].startswith("dataset mnist, extractor inception-v3-compat: 2 configurations")
    for table, dataset in zip(tables, ("digits", "mnist"), strict=True):
        configs = [line for line in table.splitlines() if line.startswith("| `")]
        assert len(configs) == 2 and all(f"dataset={dataset}," in line for line in configs)
    with open(sweep / "report.csv") as f:
        table = list(csv.DictReader(f))
    assert [(r["dataset"], r["extractor"], r["ranked_by"]) for r in table] == [
        ("digits", "ganrun-classifier-ab12", "fid")] * 2 + [
        ("mnist", "inception-v3-compat", "fid")] * 2
    assert sweep / "report_fid.png" in written  # one panel per group


def test_each_group_ranks_by_its_own_quality_metric_and_one_dataset_splits_by_extractor(
        tmp_path):
    sweep = tmp_path / "sweep"
    for num, (extractor, fid) in enumerate([("ganrun-classifier-ab12", 5.0),
                                            ("inception-v3-compat", 40.0)]):
        make_job(sweep, num, [f"metrics.extractor={extractor}", "seed=0"], fid=fid,
                 curve=[(100, fid)], dataset="digits", extractor=extractor)
    make_job(sweep, 2, ["dataset=ring8", "seed=0"], curve=[(100, 0.0)], dataset="ring8",
             extractor="raw", metrics={"modes": 3, "high_quality": 0.4,
                                       "reverse_kl": float("inf")})
    report(sweep)
    md = (sweep / "report.md").read_text()
    headings = [line for line in md.splitlines() if line.startswith("## ")]
    assert [h.split(":")[0] for h in headings] == [
        "## dataset digits, extractor ganrun-classifier-ab12",
        "## dataset digits, extractor inception-v3-compat", "## dataset ring8, extractor raw"]
    assert headings[2].endswith("sorted by modes (higher is better)")
    # One configuration: nothing to test its lead against, no "vs next".
    assert "| stopped | modes | high_quality | reverse_kl | images/s |" in md
    assert "| 3 | 0.4 | inf | 1000 |" in md  # one seed: no spread; infinite: inf
    report(sweep, "fid")  # asked for: where it is not logged, the group says so
    headings = [line for line in (sweep / "report.md").read_text().splitlines()
                if line.startswith("## ")]
    assert headings[2].endswith("sorted by modes (higher is better); fid is not logged here")


def test_metric_names_are_read_in_any_case(tmp_path):
    sweep = tmp_path / "sweep"
    for num, (loss, fid) in enumerate([("loss=bce", 30.0), ("loss=hinge", 20.0)]):
        make_job(sweep, num, [loss, "seed=0"], fid=fid)
    rows, _, _ = report(sweep, "FID", ["FID", "Loss/G", "IS"])
    assert [r["config"] for r in rows] == ["loss=hinge", "loss=bce"]  # ranked by fid
    md = (sweep / "report.md").read_text()
    assert "sorted by fid (lower is better)" in md
    assert "| fid | loss/g | is |" in md
    rows, _, _ = report(sweep, "fid", ["ALL"])
    assert "| fid | is | loss/g |" in (sweep / "report.md").read_text()


def test_configurations_leave_out_the_overrides_every_job_shares(tmp_path):
    """As the job directories are named (ganrun.outputs.varied_overrides, from the
    sweep's multirun.yaml): `ganrun -m loss=bce,hinge train.steps=20 seed=0,1`."""
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {"task": [
        "loss=bce,hinge", "train.steps=20", "seed=0,1"]}}}))
    num = 0
    for loss, fids in (("loss=bce", [30.0, 32.0]), ("loss=hinge", [20.0, 22.0])):
        for seed, fid in enumerate(fids):
            make_job(sweep, num, [loss, "train.steps=20", f"seed={seed}"], fid=fid)
            num += 1
    rows, _, _ = report(sweep, "fid")
    assert [r["config"] for r in rows] == ["loss=hinge", "loss=bce"]
    assert [r["seeds"] for r in rows] == [2, 2]
    # A sweep over seeds alone: its one configuration is named by what it shares.
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    (seeds / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {"task": [
        "train.steps=20", "seed=0,1"]}}}))
    for seed in (0, 1):
        make_job(seeds, seed, ["train.steps=20", f"seed={seed}"], fid=30.0 + seed)
    rows, _, _ = report(seeds, "fid")
    assert [r["config"] for r in rows] == ["train.steps=20"]


def test_a_sweep_on_the_mixtures_ranks_by_modes_though_fid_is_logged(tmp_path):
    # On raw coordinates FID is tiny for samples spread around every mode: the modes lead.
    sweep = tmp_path / "sweep"
    for num, (modes, fid) in enumerate([(2, 0.01), (8, 0.5)]):
        make_job(sweep, num, [f"loss={'bce' if num else 'hinge'}", "seed=0"], dataset="ring8",
                 extractor="raw", curve=[(100, fid)],
                 metrics={"modes": modes, "high_quality": 0.5, "reverse_kl": 0.1, "fid": fid})
    rows, names, _ = report(sweep)
    assert [r["config"] for r in rows] == ["loss=bce", "loss=hinge"]
    md = (sweep / "report.md").read_text()
    assert "sorted by modes (higher is better)" in md
    assert "| stopped | modes | high_quality | reverse_kl | vs next |" in md


@pytest.mark.parametrize("damage,what", [
    (lambda job: (job / "metrics.json").write_text((job / "metrics.json").read_text()[:20]),
     "metrics.json unreadable (JSONDecodeError"),
    (lambda job: (job / "metrics.json").write_text("[1, 2]"),
     "metrics.json holds a list, not a mapping"),
    (lambda job: (job / "metrics.json").write_bytes(b"\xff\xfe\x00garbage"),
     "metrics.json unreadable ("),
    (lambda job: (job / "metrics.jsonl").write_text(
        (job / "metrics.jsonl").read_text() + '{"step": 30, "metr'),
     "metrics.jsonl: line 3 unreadable, skipped"),
    (lambda job: (job / "metrics.jsonl").write_text('[1]\n{"step": 10, "metrics": {"fid": 5.0}}\n'),
     "metrics.jsonl: line 1 unreadable, skipped"),
    (lambda job: (job / ".hydra" / "overrides.yaml").write_text("- a: [\n"),
     ".hydra/overrides.yaml unreadable (ParserError); the job is named by its directory"),
], ids=["json-half-written", "json-a-list", "json-binary", "jsonl-last-line-half-written",
        "jsonl-a-list", "overrides-yaml"])
def test_a_damaged_file_is_named_and_skipped_never_a_traceback(tmp_path, damage, what):
    """A crash or a full disk mid-write leaves a file half written: ganrun-report names it
    in one line of report.md and goes on (a damaged metrics.json: the job `unreadable`)."""
    sweep = tmp_path / "sweep"
    for num, (loss, seed, fid) in enumerate([("bce", 0, 30.0), ("bce", 1, 32.0),
                                             ("hinge", 0, 20.0), ("hinge", 1, 22.0)]):
        make_job(sweep, num, [f"loss={loss}", f"seed={seed}"], fid=fid,
                 curve=[(10, fid + 5), (20, fid)])
    damaged = sweep / "0_loss=bce"
    damage(damaged)
    proc = subprocess.run([GANRUN + "-report", str(sweep), "--html"], capture_output=True,
                          text=True, env=cli_env())
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    md = (sweep / "report.md").read_text()
    assert f"- `{damaged.name}`: {what}" in md
    assert what in (sweep / "report.html").read_text().replace("&#x27;", "'")
    hinge = next(line for line in md.splitlines() if line.startswith("| `loss=hinge`"))
    assert hinge.split(" | ")[5] == "21 ± 13"  # the undamaged jobs still ranked: mean of 20, 22
    if what.startswith("metrics.json "):  # not metrics.jsonl
        assert f"| `{damaged.name}` | 0 | unreadable | 0 |" in md


def test_curves_with_an_infinite_value_at_a_step_are_drawn_without_a_band_there(tmp_path):
    """A generator with no sample near a mode has an infinite reverse KL at that evaluation
    (metrics.jsonl: null with non_finite, as a run writes it): the seeds' mean at that step
    is infinite and has no band; the other steps keep theirs, and nothing stops."""
    from ganrun.analysis.jobs import collect
    from ganrun.analysis.plots import seed_curves
    from ganrun.analysis.stats import ci95_half_width
    from ganrun.outputs import append_jsonl

    sweep = tmp_path / "sweep"
    for num, (seed, first) in enumerate([(0, float("inf")), (1, 2.0), (2, 1.0)]):
        make_job(sweep, num, ["loss=hinge", f"seed={seed}"], dataset="ring8",
                 metrics={"modes": 8, "reverse_kl": 0.1 * num})
        job = next(sweep.glob(f"{num}_*"))
        (job / "metrics.jsonl").unlink()
        for step, value in [(100, first), (200, 0.1 * num)]:
            append_jsonl(job / "metrics.jsonl",
                             {"step": step, "metrics": {"reverse_kl": value, "modes": 8}})
    assert '"non_finite": {"reverse_kl": "inf"}' in (
        next(sweep.glob("0_*")) / "metrics.jsonl").read_text()
    points = seed_curves(collect(sweep), "reverse_kl")["loss=hinge"]
    assert points[100] == [float("inf"), 2.0, 1.0]
    assert math.isnan(ci95_half_width(points[100]))
    assert ci95_half_width(points[200]) == pytest.approx(
        stats.t.ppf(0.975, 2) * statistics.stdev([0.0, 0.1, 0.2]) / math.sqrt(3))
    proc = subprocess.run([GANRUN + "-report", str(sweep), "--metric", "reverse_kl", "--html"],
                          capture_output=True, text=True, env=cli_env())
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "<svg" in (sweep / "report.html").read_text()
    assert (sweep / "report_reverse_kl.png").stat().st_size > 1000
