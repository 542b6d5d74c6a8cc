"""The shipped configs against their schemas."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ganrun.config import schema
from ganrun.errors import UserError
from ganrun.regularizers import REGULARIZERS

from conftest import compose_cfg

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


@pytest.mark.parametrize("group", ["dataset", "model", "loss", "optim"])
def test_every_option_has_a_schema_and_sets_every_key(group):
    registry = schema.groups()[group]
    assert set(options(group)) == set(registry)
    for option in options(group):
        override = [f"{group}={option}"]
        if option == "image_folder":
            override.append("dataset.root=/somewhere")
        if group == "model" and option == "dcgan":
            override.append("dataset.image_size=32")
        cfg, choices = compose_cfg(*override)
        checked = schema.validate(cfg)
        assert checked[group].name == option == choices[group]
        assert not OmegaConf.missing_keys(checked)


def test_every_regularizer_has_a_schema():
    assert set(options("regularizer")) == set(REGULARIZERS)
    # Every one together, but one of each pair that excludes the other.
    left_out = {"weight_clip", "pacgan", "experience_replay"}
    cfg, _ = compose_cfg(f"regularizer=[{','.join(options('regularizer'))}]", "loss=bce",
                         *(f"~regularizer.{name}" for name in left_out))
    assert set(schema.validate(cfg).regularizer) == set(REGULARIZERS) - left_out
    for name in left_out:
        cfg, _ = compose_cfg(f"regularizer=[{name}]")
        assert set(schema.validate(cfg).regularizer) == {name}


def test_a_key_left_unset_is_refused():
    cfg, _ = compose_cfg("dataset=image_folder")  # root: ??? in the YAML
    with pytest.raises(UserError, match=r"dataset.root: no value given \(set it with dataset.root=...\)"):
        schema.validate(cfg)


def test_types_are_converted_and_checked():
    cfg, _ = compose_cfg("optim.lr_d=1", "dataset.batch_size=32")
    checked = schema.validate(cfg)
    assert isinstance(checked.optim.lr_d, float) and checked.dataset.batch_size == 32
    cfg, _ = compose_cfg("dataset.batch_size=1.5")
    with pytest.raises(UserError, match="dataset.batch_size: .*1.5"):
        schema.validate(cfg)


def test_incompatible_regularizers_are_refused():
    cfg, _ = compose_cfg("regularizer=[weight_clip,spectral_norm]")
    with pytest.raises(UserError, match="spectral_norm and weight_clip cannot be combined"):
        schema.validate(cfg)


def test_unknown_top_level_key_is_refused():
    cfg, _ = compose_cfg("+lr=0.1")
    with pytest.raises(UserError, match="lr: unknown key"):
        schema.validate(cfg)


def test_debug_fast_overrides_the_primary_config():
    cfg, _ = compose_cfg("debug=fast")
    assert cfg.train.steps == 10 and cfg.log.every == 1


def test_metric_names_are_read_in_any_case():
    from ganrun.cli.options import names_list

    cfg, _ = compose_cfg("metrics.names=[FID,Kid,pr]", "optimized_metric=FID")
    checked = schema.validate(cfg)
    assert list(checked.metrics.names) == ["fid", "kid", "pr"] and checked.optimized_metric == "fid"
    cfg, _ = compose_cfg("metrics.names=[fid,nope]")
    with pytest.raises(UserError, match=r"^metrics.names: 'nope' is not supported; valid: fid, "
                                        r"kid, is, pr, dc, class_coverage, modes, ppl, stacked_modes$"):
        schema.validate(cfg)
    assert names_list("FID,KID") == ["fid", "kid"]  # ganrun-eval names=
    with pytest.raises(UserError, match=r"^names: 'fide' is not supported; valid: fid, kid"):
        names_list("fide")


def test_metrics_none_wins_over_a_protocols_own_metrics():
    """A protocol names its metrics (protocol=dyngan_grid: modes); metrics=none on the
    command line still turns them off, as the README promises for the command line."""
    cfg, _ = compose_cfg("protocol=dyngan_grid")
    assert list(cfg.metrics.names) == ["modes"]
    cfg, _ = compose_cfg("protocol=dyngan_grid", "metrics=none")
    assert list(cfg.metrics.names) == []
    # metrics.names on the command line wins over both
    cfg, _ = compose_cfg("protocol=dyngan_grid", "metrics=none", "metrics.names=[modes]")
    assert list(cfg.metrics.names) == ["modes"]
