"""ganrun-sample and ganrun-eval on finished runs, offline."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image

from ganrun.cli.tools import evaluate, sample
from ganrun.errors import UserError

from conftest import GANRUN, cli_env


def test_sample_needs_no_dataset(train_fast, tv_root):
    result, run_dir = train_fast("dataset=mnist", f"dataset.root={tv_root}", "model=dcgan",
                                 "model.base_channels=8", "dataset.image_size=16")
    shutil.rmtree(tv_root)  # the dataset is gone
    grid = sample(str(run_dir), n=16)
    assert grid == run_dir / "samples" / "sample_0000004_n16_seed0.png"
    assert np.asarray(Image.open(grid)).shape == (4 * 18 + 2, 4 * 18 + 2, 3)
    folder = sample(str(run_dir / "checkpoints" / "last.ckpt"), n=5, folder=True,
                    out=str(run_dir / "pngs"))
    pngs = sorted(folder.iterdir())
    assert len(pngs) == 5 and np.asarray(Image.open(pngs[0])).shape == (16, 16, 3)  # no border


def test_sample_is_seeded(train_fast):
    _, run_dir = train_fast("dataset=ring8")
    a = np.asarray(Image.open(sample(str(run_dir), n=200, out=str(run_dir / "a.png"), seed=1)))
    b = np.asarray(Image.open(sample(str(run_dir), n=200, out=str(run_dir / "b.png"), seed=1)))
    assert np.array_equal(a, b)


def test_eval_of_a_finished_run_and_of_a_folder(train_fast, tmp_path):
    _, run_dir = train_fast()
    record = evaluate(str(run_dir), n_fake=300, n_real=300)
    assert record.pop("written") == run_dir / "eval.json"
    saved = json.loads((run_dir / "eval.json").read_text())
    assert saved == json.loads(json.dumps(record))
    assert record["n_fake"] == 300 and record["n_real"] == 300
    assert {"fid", "kid", "is", "precision", "recall", "classes_covered"} <= set(record["metrics"])
    assert record["kid_subset_size"] == 300 and record["is_splits"] == 6  # adapted, recorded
    folder = tmp_path / "imgs"
    sample(str(run_dir), n=60, folder=True, out=str(folder))
    on_folder = evaluate(str(run_dir), images=str(folder), n_real=300)
    assert on_folder["n_fake"] == 60 and on_folder["metrics"]["fid"] > 0
    assert on_folder["kid_subset_size"] == 60 and on_folder["is_splits"] == 1
    assert on_folder["adapted"] == [
        "kid: subsets of 60 samples, not kid_subset_size=1000 (only 60 on one side)",
        "is: 1 splits, not is_splits=10 (each split keeps at least 50 of 60 samples)"]
    # Written into the run, each evaluation in a file of its own, with what it measured.
    assert on_folder["written"] == run_dir / "eval_images.json"
    saved = json.loads(on_folder["written"].read_text())
    assert saved["images"] == str(folder) and saved["n_fake"] == 60
    assert saved["metrics"] == json.loads(json.dumps(on_folder["metrics"]))
    assert {"dataset", "extractor", "n_real", "seed"} <= set(saved)  # the protocol
    again = evaluate(str(run_dir), images=str(folder), n_real=300, names=["fid"])
    assert again["written"] == run_dir / "eval_images_2.json"
    assert json.loads((run_dir / "eval_images.json").read_text()) == saved  # not overwritten


def test_eval_images_writes_beside_the_folder_when_the_run_is_read_only(train_fast, tmp_path,
                                                                          monkeypatch, capsys):
    import ganrun.cli.tools

    _, run_dir = train_fast()
    folder = tmp_path / "imgs"
    sample(str(run_dir), n=60, folder=True, out=str(folder))
    (tmp_path / "a_file").write_text("")
    monkeypatch.setattr(ganrun.cli.tools, "_run_dir", lambda ckpt: tmp_path / "a_file" / "run")
    monkeypatch.setattr(sys, "argv", ["ganrun-eval", str(run_dir), "--images", str(folder),
                                      "names=FID", "n_real=300"])
    ganrun.cli.tools.eval_main()
    assert capsys.readouterr().out.splitlines()[-1] == f"written: {tmp_path / 'eval_images.json'}"
    assert json.loads((tmp_path / "eval_images.json").read_text())["metrics"].keys() == {"fid"}


def test_eval_refuses_too_few_images_naming_the_minimum(train_fast, tmp_path):
    # Five images gave kid -6390, precision 1, recall 1, is nan: now a refusal, unless the
    # metrics that need more are left out (class coverage counts and has no minimum).
    _, run_dir = train_fast()
    folder = tmp_path / "five"
    sample(str(run_dir), n=5, folder=True, out=str(folder))
    with pytest.raises(UserError, match=r"^5 images in .*five are too few: fid, kid, is, pr, "
                                        r"dc need at least 50; use more samples"):
        evaluate(str(run_dir), images=str(folder))
    with pytest.raises(UserError, match="pr needs at least 100"):  # 10 x k for k-NN balls
        evaluate(str(run_dir), images=str(folder), names=["fid", "pr"], pr_k=10)
    covered = evaluate(str(run_dir), images=str(folder), names=["class_coverage"])
    assert set(covered["metrics"]) == {"classes_covered", "class_kl"}
    proc = subprocess.run([GANRUN + "-eval", str(run_dir), "--images", str(folder)],
                          capture_output=True, text=True, env=cli_env())
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("ganrun-eval: error: 5 images in")


def test_bad_paths_and_options_are_clear(tmp_path):
    with pytest.raises(UserError, match="a directory without a checkpoint"):
        sample(str(tmp_path))
    with pytest.raises(UserError, match="nope.ckpt: no such file"):
        sample(str(tmp_path / "nope.ckpt"))
    (tmp_path / "x.ckpt").write_bytes(b"not a checkpoint")  # as resume words it
    with pytest.raises(UserError, match=r"x.ckpt: not a readable checkpoint, the file is corrupt "
                                        r"or truncated \(.*\); give another run or checkpoint$"):
        sample(str(tmp_path / "x.ckpt"))
    torch.save({"weights": torch.zeros(3)}, tmp_path / "y.ckpt")
    with pytest.raises(UserError, match=r"y.ckpt: not a ganrun checkpoint \(KeyError"):
        evaluate(str(tmp_path / "y.ckpt"))
    proc = subprocess.run([GANRUN + "-sample", str(tmp_path), "nn=3"], capture_output=True,
                          text=True, env=cli_env())
    assert proc.returncode == 1 and "unknown option nn; valid: n, out" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- one name per request, never an overwrite ------------------------------------------------


def cli(program: str, *args) -> subprocess.CompletedProcess:
    """ganrun-<program> run through its console entry point (the function the installed
    script calls) in this process: its exit status, stdout and stderr, without the
    4 s of a new interpreter per call. An exception escaping it fails the test, as a
    traceback would; test_bad_paths_and_options_are_clear runs the real scripts."""
    from ganrun.cli import tools

    entry = {"sample": tools.sample_main, "eval": tools.eval_main}[program]
    argv = [f"ganrun-{program}", *map(str, args)]
    out, err = io.StringIO(), io.StringIO()
    with mock.patch.object(sys, "argv", argv), redirect_stdout(out), redirect_stderr(err):
        try:
            entry()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def refused(proc: subprocess.CompletedProcess, program: str, *words: str) -> str:
    """proc failed with one `ganrun-<program>: error:` line (no traceback) holding words."""
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    (line,) = [line for line in proc.stderr.splitlines()
               if line.startswith(f"ganrun-{program}: error: ")]
    for word in words:
        assert word in line, line
    return line


def test_each_request_gets_its_own_file_and_none_is_overwritten(train_fast):
    # Every request was samples/sample_<step>.png: n=16 overwrote n=64, seed=1 seed=0.
    _, run_dir = train_fast()
    samples = run_dir / "samples"
    training_grid = (samples / "step_0000004.png").read_bytes()
    names = [sample(str(run_dir), **kw).name for kw in (
        {}, {"n": 16}, {"seed": 1}, {"truncation": 0.5}, {"n": 16}, {"n": 5, "folder": True})]
    assert names == ["sample_0000004_n64_seed0.png", "sample_0000004_n16_seed0.png",
                     "sample_0000004_n64_seed1.png", "sample_0000004_n64_seed0_trunc0.5.png",
                     "sample_0000004_n16_seed0_2.png", "sample_0000004_n5_seed0"]
    assert (samples / "step_0000004.png").read_bytes() == training_grid  # training's own
    grid = samples / "sample_0000004_n64_seed0.png"
    before = grid.read_bytes()
    proc = cli("sample", run_dir, "n=9", f"out={grid}")
    refused(proc, "sample", f"out={grid} exists", "give another out=")
    folder = samples / "sample_0000004_n5_seed0"
    refused(cli("sample", run_dir, "n=3", "folder=true", f"out={folder}"), "sample", "exists",
            "out=")
    assert grid.read_bytes() == before and len(list(folder.iterdir())) == 5
    proc = cli("sample", run_dir, "n=4")  # prints the path, as before
    assert proc.returncode == 0
    assert proc.stdout.strip() == str(samples / "sample_0000004_n4_seed0.png")


# --- class-conditional runs: one row per class, class=K -------------------------------------


@pytest.fixture
def drawn(monkeypatch) -> list:
    """The labels of every batch the generator is asked for."""
    import ganrun.samples

    labels, generate = [], ganrun.samples.generate

    def spy(module, z, batch=None):
        labels.append(batch)
        return generate(module, z, batch)

    monkeypatch.setattr(ganrun.samples, "generate", spy)
    return labels


def test_conditional_grid_has_one_row_per_class(train_fast, drawn):
    # n=20 on ten classes was a 2 x 10 strip of random classes: now 10 rows of 2, row k class k.
    import torch

    _, run_dir = train_fast("dataset=digits", "model.conditional=true")
    grid = sample(str(run_dir), n=20)
    assert torch.equal(drawn.pop(), torch.arange(10).repeat_interleave(2))
    assert np.asarray(Image.open(grid)).shape == (10 * 18 + 2, 2 * 18 + 2, 3)  # 10 rows of 2
    assert grid.name == "sample_0000004_n20_seed0.png"
    one = sample(str(run_dir), n=16, class_=3)
    assert torch.equal(drawn.pop(), torch.full((16,), 3))
    assert one.name == "sample_0000004_n16_seed0_class3.png"
    assert np.asarray(Image.open(one)).shape == (4 * 18 + 2, 4 * 18 + 2, 3)
    with pytest.raises(UserError, match=r"n=5: one row per class needs n >= 10"):
        sample(str(run_dir), n=5)
    refused(cli("sample", run_dir, "class=10"), "sample", "class=10", "10 classes, 0 to 9")
    refused(cli("sample", run_dir, "class=-1"), "sample", "class=-1", "0 to 9")
    refused(cli("sample", run_dir, "class=two"), "sample", "class=two: expected int")


def test_class_is_refused_without_classes_and_dyngan_keeps_its_prior(train_fast, drawn):
    _, plain = train_fast("dataset=digits", name="plain")
    refused(cli("sample", plain, "class=0"), "sample", "class=0", "unconditional",
            "model.conditional=true")
    _, dyn = train_fast("dataset=ring8", "regularizer=dyngan", name="dyn")
    refused(cli("sample", dyn, "class=0"), "sample", "class=0",
            "regularizer dyngan's partitions, not classes")
    drawn.clear()  # what training generated (the health monitor's samples)
    sample(str(dyn), n=30)
    (labels,) = drawn
    assert labels.shape == (30,) and labels.ndim == 1  # drawn by the prior, not per class


# --- ganrun-eval's checks, and options that raised tracebacks ----------------------------


def test_eval_checks_the_extractor_against_the_dataset(train_fast):
    _, ring8 = train_fast("dataset=ring8", name="ring8")
    _, digits = train_fast("dataset=digits", name="digits")
    # points: the fixes that fit points, not Inception's (images)
    refused(cli("eval", ring8, "extractor=classifier"), "eval",
            "metrics.extractor=classifier needs images; dataset=ring8 is 2-D points "
            "(use raw or auto)")
    refused(cli("eval", digits, "extractor=raw"), "eval",
            "metrics.extractor=raw is for the 2-D mixtures")


BAD_SAMPLE_OPTIONS = [
    (["n=0"], ["n=0: must be >= 1"]),
    (["n=-3"], ["n=-3: must be >= 1"]),
    (["truncation=0"], ["truncation=0: must be > 0", "truncation=none"]),
    (["truncation=-1"], ["truncation=-1: must be > 0"]),
    (["truncation=abc"], ["truncation=abc: expected a number > 0, or none"]),
    (["seed=abc"], ["seed=abc: expected int"]),
    (["seed=-1"], ["seed=-1: must be in [0, 4294967295]"]),
    (["seed=99999999999999999999"], ["must be in [0, 4294967295]"]),
    (["folder=maybe"], ["folder=maybe: expected true or false"]),
    (["out=grid.jpg"], ["out=grid.jpg: a grid is written as PNG"]),
    (["--images", "x"], ["unexpected argument --images"]),
]


@pytest.mark.parametrize("args, words", BAD_SAMPLE_OPTIONS,
                         ids=[" ".join(args) for args, _ in BAD_SAMPLE_OPTIONS])
def test_sample_refuses_bad_options_in_one_line(tmp_path, args, words):
    # n=0 and seed=2**70 were tracebacks, truncation=0 silently untruncated, folder=maybe false.
    refused(cli("sample", tmp_path, *args), "sample", *words)


def test_sample_names_an_unwritable_out(train_fast, tmp_path, monkeypatch):
    _, run_dir = train_fast()
    config = run_dir / "config.yaml"
    refused(cli("sample", run_dir, f"out={config}/grid.png"), "sample",
            f"{config} is a file, not a folder", "out=")
    refused(cli("sample", run_dir, "folder=true", f"out={config}/pngs"), "sample",
            f"{config} is a file, not a folder")

    import ganrun.samples

    def denied(picture, path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(ganrun.samples, "save_png", denied)  # a read-only folder, even as root
    with pytest.raises(UserError, match=r"cannot write .*: Permission denied .*; give a "
                                        r"writable out="):
        sample(str(run_dir), out=str(tmp_path / "ro" / "grid.png"))


def test_eval_refuses_unusable_image_folders_in_one_line(train_fast, tmp_path, caplog):
    _, digits = train_fast("dataset=digits", name="digits")
    _, ring8 = train_fast("dataset=ring8", name="ring8")
    empty, bad, mixed = tmp_path / "empty", tmp_path / "bad", tmp_path / "mixed"
    empty.mkdir()
    bad.mkdir()
    (bad / "a.png").write_bytes(b"not a png")
    refused(cli("eval", digits, "--images", empty), "eval", f"--images {empty}: no images found")
    refused(cli("eval", digits, "--images", tmp_path / "nope"), "eval", "nope: no such folder")
    refused(cli("eval", digits, "--images", bad), "eval",
            f"--images {bad}: none of the 1 image files could be read")
    sample(str(digits), n=60, folder=True, out=str(mixed))
    refused(cli("eval", ring8, "--images", mixed), "eval", "dataset=ring8 is 2-D points",
            "leave --images out")
    (mixed / "000007.png").write_bytes(b"\x89PNG broken")  # skipped, named, the rest measured
    record = evaluate(str(digits), images=str(mixed), names=["class_coverage"])
    assert record["n_fake"] == 59
    assert f"--images {mixed}: skipped 1 of 60 files that could not be read" in caplog.text
    assert "dataset.root" not in caplog.text  # the folder as the user named it


def test_eval_of_a_read_only_run_still_reports(train_fast, caplog, monkeypatch):
    import ganrun.cli.tools

    _, run_dir = train_fast()

    def denied(path, *args, **kwargs):  # a read-only run directory, even as root
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(ganrun.cli.tools, "open", denied, raising=False)
    record = evaluate(str(run_dir), names=["class_coverage"], n_fake=60)
    assert "classes_covered" in record["metrics"] and record["written"] is None
    assert "could not write eval.json" in caplog.text and "Permission denied" in caplog.text


def test_a_second_evaluation_never_replaces_the_first(train_fast):
    _, run_dir = train_fast()
    first = evaluate(str(run_dir), names=["class_coverage"], n_fake=60)
    kept = (run_dir / "eval.json").read_text()
    second = evaluate(str(run_dir), names=["class_coverage"], n_fake=60, seed=1)
    assert (first["written"], second["written"]) == (run_dir / "eval.json",
                                                     run_dir / "eval_2.json")
    assert (run_dir / "eval.json").read_text() == kept
    assert json.loads((run_dir / "eval_2.json").read_text())["seed"] == 1


def test_a_sweep_job_directory_is_a_path_though_its_name_holds_equals(train_fast):
    """A sweep job's directory is named by its overrides (`0_loss=bce,seed=0`): an
    argument that exists is the run, not an option; one that does not is named."""
    _, job = train_fast(name="0_loss=bce,seed=0")
    proc = cli("sample", job, "n=4")
    assert proc.returncode == 0, proc.stderr
    assert (job / "samples" / "sample_0000004_n4_seed0.png").is_file()
    assert cli("eval", job / "checkpoints" / "last.ckpt", "n_fake=100", "names=[fid]"
               ).returncode == 0
    refused(cli("sample", job.parent / "9_loss=hinge", "n=4"), "sample",
            "9_loss=hinge: no such run directory or checkpoint")


@pytest.mark.parametrize("checkpoint", [
    "/runs/0_loss=bce,seed=0/checkpoints/last.ckpt", "/runs/it's here/x y/last.ckpt",
    "/runs/back\\slash[1]/last.ckpt", '/runs/q"uote\\"d/last.ckpt\\', "/runs/plain/last.ckpt"])
def test_the_resume_command_gives_hydra_the_checkpoint_path_back(checkpoint):
    """What the shell passes on and Hydra then reads as ckpt_path is the path itself,
    whatever it holds (sweep jobs' `=` and `,`, quotes, spaces, backslashes)."""
    import shlex

    from hydra.core.override_parser.overrides_parser import OverridesParser

    from ganrun.outputs import resume_command

    argv = shlex.split(resume_command(["loss=bce", "seed=0", "ckpt_path=/old"], checkpoint))
    assert argv[:3] == ["ganrun", "loss=bce", "seed=0"]
    parsed = OverridesParser.create().parse_overrides(argv[1:])
    assert [o.value() for o in parsed if o.key_or_group == "ckpt_path"] == [checkpoint]
