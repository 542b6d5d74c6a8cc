"""Errors a user can cause: shown as one message, no traceback, non-zero exit."""


class UserError(Exception):
    """A bad option, a missing path, unusable data: the message names the cause."""


def one_of(key: str, value, allowed) -> None:
    """Refuse `value` for `key` unless it is one of `allowed`, naming them."""
    if value not in allowed:
        raise UserError(f"{key}: '{value}' is not supported; valid: {', '.join(map(str, allowed))}")


class DivergedError(UserError):
    """A loss or a discriminator output became NaN or infinite."""

    def __init__(self, message: str, step: int, values: dict[str, float]):
        super().__init__(message)
        self.step = step
        self.values = values


class ObjectiveError(UserError):
    """The metric a sweeper optimises is not one the run logs: wrong for every job alike."""


class Interrupted(Exception):
    """SIGINT or SIGTERM: the run saved a checkpoint (if it had trained) and stopped."""

    def __init__(self, signal_name: str, signal_number: int, step: int, checkpoint: str | None):
        saved = f"checkpoint saved: {checkpoint}" if checkpoint else "no checkpoint yet"
        super().__init__(f"{signal_name} at generator step {step}; {saved}")
        self.signal_name, self.signal_number = signal_name, signal_number
        self.step, self.checkpoint = step, checkpoint


class StoppedAtOnce(KeyboardInterrupt):
    """A second SIGINT or SIGTERM: the run stops where it is (mid-step, mid-evaluation,
    mid-write); what it wrote before stands. A KeyboardInterrupt, so that nothing on
    the way out takes it for an error to recover from."""

    def __init__(self, signal_name: str, signal_number: int):
        super().__init__(signal_name)
        self.signal_name, self.signal_number = signal_name, signal_number
        self.reason = f"stopped at once by a second {signal_name}"  # the run adds where


class PeerDied(Exception):
    """Under DDP another process died (SIGKILL, a segfault, out of memory): process 0
    saved the last completed step, all but the dead process's random stream."""

    def __init__(self, rank: int, cause: str, step: int, checkpoint: str | None):
        saved = (f"step {step} saved (without process {rank}'s random state, lost with it): "
                 f"{checkpoint}" if checkpoint else "no checkpoint saved")
        super().__init__(f"process {rank} died ({cause}) at generator step {step}; {saved}")
        self.rank, self.cause, self.step, self.checkpoint = rank, cause, step, checkpoint
