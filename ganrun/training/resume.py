"""The checkpoint a run resumes from, vetted before Lightning restores it."""

from __future__ import annotations

from ganrun.errors import UserError
from ganrun.outputs import checkpoint_of


def checked_ckpt_path(path: str | None) -> str | None:
    """The checkpoint to resume from: a file, or a run directory's last checkpoint."""
    if path is None:
        return None
    try:
        return str(checkpoint_of(path))
    except UserError as e:
        raise UserError(f"ckpt_path={e}") from None


def check_fits(path: str, given: str, module) -> None:
    """A checkpoint that is truncated, not ganrun's, or made by another model is named
    as such here, not deep inside Lightning's restore."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise UserError(f"ckpt_path={given}: not a readable checkpoint, the file is corrupt or "
                        f"truncated ({e.__class__.__name__}: {str(e)[:120]}); resume from "
                        "another checkpoint or start afresh without ckpt_path") from None
    if not isinstance(state, dict) or "ganrun" not in state or "state_dict" not in state:
        raise UserError(f"ckpt_path={given}: not a ganrun checkpoint (give a run's "
                        "checkpoints/last.ckpt)")
    _same_parts(state["ganrun"].get("config") or {}, module.cfg, given)
    ours = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in module.upgrade_state_dict(state["state_dict"]).items()}
    if ours != theirs:
        made = state["ganrun"].get("config", {})
        was = ", ".join(f"{g}={made[g]['name']}" for g in ("model", "dataset") if g in made)
        raise UserError(f"ckpt_path={given}: made by a different model or data shape ({was}, "
                        f"data {state['ganrun'].get('data_shape')}); resume with the options "
                        "that made it")
    reached, steps = state["ganrun"].get("g_steps"), module.cfg.train.steps
    if reached is not None and steps < reached:  # equal: nothing to train, a sweep's done job
        raise UserError(f"train.steps={steps}: ckpt_path={given} is already at generator step "
                        f"{reached}, past it; give train.steps={reached} or more (ganrun-eval "
                        "and ganrun-sample read a run as it is)")


def _same_parts(made: dict, cfg, given: str) -> None:
    """The regularizers and the optimizer a checkpoint was made with are this run's: a
    state cannot pass from one optimizer to another, nor a technique's state to a run
    without it. The refusal names what differs."""
    if not made:
        return
    theirs = sorted(made.get("regularizer") or {})
    ours = sorted(cfg.regularizer or {})
    if theirs != ours:
        # a loss may bring regularizers of its own: name it where it differs
        loss_was = (made.get("loss") or {}).get("name")
        differs = loss_was is not None and loss_was != cfg.loss.name
        was = f"loss={loss_was} and " if differs else ""
        now = f"loss={cfg.loss.name} and " if differs else ""
        raise UserError(f"ckpt_path={given}: made with {was}regularizer=[{','.join(theirs)}], this "
                        f"run has {now}regularizer=[{','.join(ours)}]; resume with the "
                        f"{'loss and ' if differs else ''}regularizers that made it")
    was = (made.get("optim") or {}).get("name")
    if was is not None and was != cfg.optim.name:
        raise UserError(f"ckpt_path={given}: made with optim={was}, this run has "
                        f"optim={cfg.optim.name}; an optimizer's state cannot pass to another: "
                        f"resume with optim={was}")
