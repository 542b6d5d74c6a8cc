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
    outputs = []
    for net in (G, D):
        for m in net.modules():
            if not list(m.children()):
                m.register_forward_hook(lambda m, i, o: outputs.append(o.numel()))
    with torch.no_grad():
        D(G(torch.randn(cfg.dataset.batch_size, cfg.model.latent_dim)))
    assert device.parts["weights and optimizer states"] == WEIGHT_COPIES * weights * 4
    assert device.parts["activations"] == ACTIVATION_COPIES * sum(outputs) * 4


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
    from ganrun.cli.tools import evaluate, sample
    from ganrun.errors import UserError

    _, run_dir = train_fast()  # digits: 16 x 16, one channel
    n, values = 10**10, 16 * 16
    with pytest.raises(UserError) as caught:
        sample(str(run_dir), n=n)
    message = str(caught.value)
    assert message.startswith(f"n={n} would need about ")
    assert f"samples {size(4 * n * values)}, picture {size(3 * n * values)})" in message
    assert message.endswith("; lower n, or raise memory_limit")
    assert not list((run_dir / "samples").glob("sample_*"))
    with pytest.raises(UserError, match=rf"^n_fake={n} and n_real=100 would need about "
                                        rf"{size(4 * (n + 100) * values)} \(samples "):
        evaluate(str(run_dir), n_fake=n, n_real=100)
    line = refused(str(run_dir), "n=5", "memory_limit=-1", tool=GANRUN + "-sample")
    assert line == "ganrun-sample: error: memory_limit=-1: must be finite and > 0"
