"""Runs, samples and evaluations whose tensors would not fit are refused before anything
is allocated, with the estimate, its parts and the limit (memory_limit of this
machine's memory). The estimate is checked against the real thing: networks built on
the CPU and run on a batch, datasets loaded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ganrun.config.schema import validate
from ganrun.data import DATASETS, load_dataset
from ganrun.memory import ACTIVATION_COPIES, WEIGHT_COPIES, machine_memory, size, training_estimate
from ganrun.models import build_models

from conftest import GANRUN, cli_env, compose_cfg


@pytest.mark.parametrize("overrides", [
    ("dataset=ring8",),
    ("model=dcgan", "dataset.image_size=16", "model.base_channels=8"),
    ("model=resnet", "dataset.image_size=16", "model.g_channels=16", "model.d_channels=16"),
    ("dataset=stacked_digits", "model=dcgan", "dataset.n_samples=300"),
], ids=["mlp-ring8", "dcgan-digits", "resnet-digits", "dcgan-stacked"])
def test_the_estimate_counts_what_the_real_networks_and_data_hold(overrides):
    cfg = validate(compose_cfg(*overrides)[0])
    host, device = training_estimate(cfg)
    data = load_dataset(cfg.dataset)
    kept = data.data.numel() * data.data.element_size() + data.labels.numel() * 8
    assert host.parts["data"] == DATASETS[cfg.dataset.name].load_peak * kept
    G, D = build_models(cfg.model, data.shape)
    weights = sum(p.numel() for net in (G, D) for p in net.parameters())
    outputs = layer_outputs(G, D, batch=cfg.dataset.batch_size, latent=cfg.model.latent_dim)
    assert device.parts["weights and optimizer states"] == WEIGHT_COPIES * weights * 4
    assert device.parts["activations"] == ACTIVATION_COPIES * outputs * 4


def layer_outputs(G, D=None, *, batch: int, latent: int) -> int:
    """The values G's (and D's) layers output on a batch, run on the CPU."""
    outputs = []
    for net in (G, D) if D is not None else (G,):
        for m in net.modules():
            if not list(m.children()):
                m.register_forward_hook(lambda m, i, o: outputs.append(o.numel()))
    with torch.no_grad():
        fake = G(torch.randn(batch, latent))
        if D is not None:
            D(fake)
    return sum(outputs)


PEAK = """
import sys
sys.path.insert(0, {tests!r})
from conftest import compose_cfg
from ganrun.config.schema import validate
from ganrun.data import load_dataset
from ganrun.memory import training_estimate

def status(key):
    line = next(l for l in open("/proc/self/status") if l.startswith(key + ":"))
    return int(line.split()[1]) * 1024

cfg = validate(compose_cfg("dataset=ring8", "dataset.n_samples=4000000")[0])
estimate = training_estimate(cfg)[0].parts["data"]
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the peak (VmHWM) starts again from what is resident now
before = status("VmRSS")
load_dataset(cfg.dataset)
print(estimate, status("VmHWM") - before)
"""


def test_the_data_estimate_covers_the_peak_of_loading_it(tmp_path):
    """Measured in a process of its own (its peak resident memory while loading 4 million
    points, over what it held before): the estimate is the peak, within 30%."""
    proc = subprocess.run([sys.executable, "-c", PEAK.format(tests=str(Path(__file__).parent))],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    estimate, peak = map(float, proc.stdout.split())
    assert 0.7 * estimate <= peak <= 1.05 * estimate, (estimate, peak)


REQUEST_PEAK = """
import sys
from ganrun.cli.tools import checkpoint_of, load_module, sample
from ganrun.memory import request_estimate

def status(key):
    line = next(l for l in open("/proc/self/status") if l.startswith(key + ":"))
    return int(line.split()[1]) * 1024

run, n, folder = {run!r}, {n}, {folder}
module, cfg = load_module(checkpoint_of(run))
sample(run, n=8, folder=folder)  # every import and first-call initialisation
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = status("VmRSS")
sample(run, n=n, folder=folder)
picture = None if folder else "scatter" if module.points else "grid"
checkpoint = checkpoint_of(run).stat().st_size  # sample() loads it again
print(request_estimate(n, tuple(module.data_shape), cfg.model, picture, checkpoint).total,
      status("VmHWM") - before)
"""


@pytest.mark.parametrize("overrides, n, folder", [
    (("dataset=ring8",), 3_000_000, False),  # the batches' outputs kept apart took 4 GB here
    ((), 40_000, False),
    ((), 20_000, True),
], ids=["points-scatter", "images-grid", "images-folder"])
def test_a_sample_request_holds_what_its_estimate_says(train_fast, overrides, n, folder):
    """ganrun-sample measured in a process of its own (its peak resident memory over what
    it held before): the estimate it is refused by is an upper bound, and not over 2.5
    times the peak (the allocator's reuse of freed chunks varies with the torch release:
    the points picture's peak was 0.60 of its estimate under torch 2.14.1 here)."""
    _, run_dir = train_fast(*overrides)
    code = REQUEST_PEAK.format(run=str(run_dir), n=n, folder=folder)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env=cli_env())
    estimate, peak = map(float, proc.stdout.split())
    assert 0.4 * estimate <= peak <= estimate, (estimate, peak, proc.stderr[-2000:])


EVAL_PEAK = """
import sys
from ganrun.cli.tools import checkpoint_of, evaluate, load_module, with_metric_defaults
from ganrun.memory import data_shape, evaluation_estimate, generator_batch
from ganrun.metrics.registry import METRICS

def status(key):
    line = next(l for l in open("/proc/self/status") if l.startswith(key + ":"))
    return int(line.split()[1]) * 1024

run, n_fake = {run!r}, {n_fake}
module, cfg = load_module(checkpoint_of(run))
evaluate(run, n_fake=200)  # every import, the real side's features and terms cached
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = status("VmRSS")
result = evaluate(run, n_fake=n_fake)
cfg.metrics = with_metric_defaults(cfg.metrics)  # metrics=none: evaluate measures them all
cfg.metrics.names = [name for name, metric in METRICS.items() if metric.reads != "generator"]
shape = data_shape(cfg.dataset, module.points)
estimate = evaluation_estimate(cfg.metrics, shape, module.points, n_fake).total
checkpoint = checkpoint_of(run).stat().st_size  # evaluate() loads it again
print(estimate + generator_batch(cfg.model, shape) + checkpoint, status("VmHWM") - before)
"""


def test_an_evaluation_holds_what_its_estimate_says(train_fast):
    """ganrun-eval of 6000 points, measured as above: precision/recall's distances
    (10,000-row blocks of n_fake x n_fake) dominate; the estimate bounds the peak."""
    _, run_dir = train_fast("dataset=ring8")
    proc = subprocess.run([sys.executable, "-c", EVAL_PEAK.format(run=str(run_dir), n_fake=6000)],
                          capture_output=True, text=True, timeout=300, env=cli_env())
    estimate, peak = map(float, proc.stdout.split())
    assert 0.4 * estimate <= peak <= estimate, (estimate, peak, proc.stderr[-2000:])


def refused(*args: str, tool: str = GANRUN, cwd=None) -> str:
    proc = subprocess.run([tool, *args], capture_output=True, text=True, timeout=300,
                          env=cli_env(), cwd=cwd)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    return line


LIMIT = f"over the limit of {size(0.8 * machine_memory())} (memory_limit=0.8 of this machine's " \
        f"memory, {size(machine_memory())})"


def test_a_run_too_big_for_this_machine_is_refused_with_its_estimate(tmp_path):
    latent = 100_000_000  # G's first layer alone: 1e8 x 512 weights, 4 copies of 4 bytes
    line = refused("dataset=ring8", f"model.latent_dim={latent}", cwd=tmp_path)
    weights = WEIGHT_COPIES * 4 * (latent * 512 + 512)
    assert line.startswith("ganrun: error: this run would need about ")
    assert f"weights and optimizer states {size(weights)[:3]}" in line
    assert line.endswith(f"{LIMIT}; make the networks smaller (model.latent_dim, the widths, "
                         f"dataset.image_size), or raise memory_limit")
    line = refused("dataset=ring8", "dataset.n_samples=10000000000", cwd=tmp_path)
    assert f"data {size(2 * 10_000_000_000 * (2 * 4 + 8))}" in line  # at its peak, labels too
    assert line.endswith(f"{LIMIT}; lower dataset.n_samples, or raise memory_limit")
    assert not any((tmp_path / "outputs" / "runs").iterdir())  # no run directory left


def test_memory_limit_is_the_share_of_this_machine_a_run_may_take(tmp_path):
    cfg = validate(compose_cfg()[0])
    host, device = training_estimate(cfg)
    total = host.total + device.total
    fraction = 0.5 * total / machine_memory()  # half of what the default run needs
    line = refused(f"memory_limit={fraction}", cwd=tmp_path)
    assert f"would need about {size(total)} (" in line
    assert f"over the limit of {size(fraction * machine_memory())} (memory_limit={fraction:g} " \
           in line


def test_sample_and_eval_requests_too_big_are_refused_before_drawing(train_fast):
    from ganrun.cli.tools import checkpoint_of, evaluate, load_module, sample
    from ganrun.errors import UserError

    _, run_dir = train_fast()  # digits: 16 x 16, one channel
    n, values = 10**10, 16 * 16
    with pytest.raises(UserError) as caught:
        sample(str(run_dir), n=n)
    message = str(caught.value)
    assert message.startswith(f"n={n} would need about ")
    grid = n * (5 * values + 9 * 18 * 18)  # the images as floats and bytes; the 3-channel grid
    checkpoint = size(checkpoint_of(str(run_dir)).stat().st_size)  # read whole, G and D
    assert f"(checkpoint {checkpoint}, samples {size(4 * n * values)}, generator on a batch " \
        in message
    assert f", picture {size(grid)})" in message
    assert message.endswith("; lower n, or raise memory_limit")
    assert not list((run_dir / "samples").glob("sample_*"))
    grid_message = message
    with pytest.raises(UserError) as caught:
        evaluate(str(run_dir), n_fake=n, n_real=100)
    evaluation = str(caught.value)  # the images, their Inception-width features, the metrics
    assert evaluation.startswith(f"n_fake={n} and n_real=100 would need about ")
    assert (f"(checkpoint {checkpoint}, evaluation samples {size(4 * (n + 100) * values)}, "
            f"features {size(4 * (n + 100) * 2048)}, metrics ") in evaluation
    assert evaluation.endswith("; lower n_fake and n_real, or raise memory_limit")
    with pytest.raises(UserError) as caught:
        sample(str(run_dir), n=n, folder=True)  # a picture at a time: the samples, the batch
    assert str(caught.value).startswith(f"n={n} would need about ")
    module, cfg = load_module(checkpoint_of(str(run_dir)))
    batch = layer_outputs(build_models(cfg.model, (1, 16, 16))[0], batch=500,
                          latent=cfg.model.latent_dim)
    assert f", generator on a batch {size(4 * batch)}, picture" in grid_message
    assert str(caught.value).endswith(f" on a batch {size(4 * batch)}), over"
                                      + grid_message.split("), over")[1])
    line = refused(str(run_dir), "n=5", "memory_limit=-1", tool=GANRUN + "-sample")
    assert line == "ganrun-sample: error: memory_limit=-1: must be finite and > 0"
