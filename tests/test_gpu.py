"""The GPU path: CUDA, bf16 autocast (with double backward), DDP on one device.

Marked `gpu` (deselected by default; `pytest -m gpu` on a machine with CUDA) and
skipped when no CUDA device is present.
"""

from __future__ import annotations

import math

import pytest
import torch

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

SMALL_DCGAN = ("model=dcgan", "dataset.image_size=32", "model.base_channels=16",
               "trainer.accelerator=gpu")


def _finite(result) -> bool:
    return all(math.isfinite(v) for v in result["losses"].values())


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_dcgan_trains_on_the_gpu(train_fast, precision):
    result, run_dir = train_fast(*SMALL_DCGAN, f"trainer.precision={precision}", "train.steps=8")
    assert result["status"] == "finished" and result["g_steps"] == 8 and _finite(result)
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["ganrun"]["g_steps"] == 8


def test_wgan_gp_in_bf16_has_a_finite_penalty(train_fast):
    result, _ = train_fast(*SMALL_DCGAN, "trainer.precision=bf16-mixed", "loss=wgan_gp",
                           "model.batch_norm_d=false", "train.steps=6")
    assert _finite(result) and result["losses"]["loss/gradient_penalty"] > 0


def test_gradient_penalty_under_bf16_autocast_matches_fp32():
    from ganrun.models import DCGANDiscriminator
    from ganrun.regularizers.penalties import input_gradient_norm

    torch.manual_seed(0)
    D = DCGANDiscriminator(3, 32, 16, False, "leaky_relu", 0.2).cuda()
    x = torch.randn(16, 3, 32, 32, device="cuda")
    exact = input_gradient_norm(D, x, None)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        mixed = input_gradient_norm(D, x, None)
    assert torch.allclose(mixed.float(), exact, rtol=5e-2)
    penalty = (mixed - 1).pow(2).mean()
    penalty.backward()  # double backward through the autocast graph
    assert all(torch.isfinite(p.grad).all() for p in D.parameters())


def test_ddp_on_one_device_trains(train_fast):
    result, _ = train_fast(*SMALL_DCGAN, "trainer=ddp", "trainer.devices=1", "train.steps=4")
    assert result["status"] == "finished" and result["g_steps"] == 4
