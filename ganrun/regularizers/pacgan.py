"""PacGAN: D judges packs of samples."""

from __future__ import annotations

from dataclasses import dataclass

from ganrun.errors import UserError
from ganrun.ranges import at_least
from ganrun.regularizers.base import REGULARIZERS, Regularizer


@REGULARIZERS.register
class PacGAN(Regularizer):
    """PacGAN (Lin et al. 2018): D judges `pack` samples at once, concatenated along
    the channels (images) or features (points); real packs hold only real samples and
    fake packs only generated ones. D is built for the packed input. As in the paper,
    dataset.batch_size counts D's decisions: a D step takes batch_size x pack samples
    of each kind."""

    name = "pacgan"
    acts_on_d = True
    answers = ("mode_collapse",)
    samples_per_decision = 2
    joins_fleets = True  # members' packs are their own rows: D's reshape keeps them apart
    trait_keys = {"samples_per_decision": "pack"}

    @dataclass
    class Config:
        pack: int = at_least(2)

    @staticmethod
    def check(params, cfg) -> None:
        if cfg.model.conditional:
            raise UserError("regularizer pacgan judges packs of samples of different classes: "
                            "it cannot be combined with model.conditional=true")

    def __init__(self, pack: int = 2):
        self.samples_per_decision = pack
