"""The trainer group's choices, refused by ganrun first in its own words (not
Lightning's exceptions or torch's dtype errors deep in a step)."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from ganrun.errors import UserError, one_of

PRECISIONS = ("auto", "32-true", "32", "16-mixed", "bf16-mixed", "bf16-true", "64-true")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
# ganrun's own DDP (ganrun.training.launcher) or one process; sharded strategies (fsdp,
# deepspeed) would need checkpoints ganrun does not write.
STRATEGIES = ("auto", "ddp")


def check_trainer(trainer_cfg: DictConfig) -> None:
    """The accelerator, the strategy, the devices and the precision for the device;
    a GPU asked for on a machine without one names the CPU settings (not "No
    supported gpu backend found!")."""
    import torch

    one_of("trainer.accelerator", trainer_cfg.accelerator, ACCELERATORS)
    one_of("trainer.strategy", trainer_cfg.strategy, STRATEGIES)
    one_of("trainer.precision", trainer_cfg.precision, PRECISIONS)
    _check_devices(trainer_cfg.devices)
    if trainer_cfg.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        cpu = ("trainer=ddp trainer.accelerator=cpu trainer.devices=2 (gloo)"
               if trainer_cfg.strategy == "ddp" else "trainer=cpu (or trainer=default: auto)")
        raise UserError(f"trainer.accelerator={trainer_cfg.accelerator} but torch sees no GPU "
                        f"here (torch.cuda.is_available() is False); on CPUs use {cpu}")
    on_cpu = trainer_cfg.accelerator == "cpu" or (
        trainer_cfg.accelerator == "auto" and not torch.cuda.is_available())
    if on_cpu and trainer_cfg.precision == "16-mixed":  # Lightning's exception otherwise
        raise UserError("trainer.precision=16-mixed is float16 autocast, which needs a GPU; "
                        "on a CPU use 32-true (or auto), bf16-mixed, bf16-true or 64-true")


def _check_devices(devices) -> None:
    listed = OmegaConf.is_list(devices) or isinstance(devices, list | tuple)
    fine = (devices == "auto" or (isinstance(devices, int) and not isinstance(devices, bool)
                                  and (devices >= 1 or devices == -1))
            or (listed and len(devices) > 0 and len(set(devices)) == len(devices)
                and all(isinstance(d, int) and d >= 0 for d in devices)))
    if not fine:
        shown = list(devices) if listed else devices
        raise UserError(f"trainer.devices={shown}: must be a count >= 1, -1 (every device), "
                        "auto, or a list of distinct device indices ([0, 1])")
