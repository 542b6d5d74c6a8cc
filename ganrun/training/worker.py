"""`python -m ganrun.training.worker RUN_DIR`: one more DDP process of the run in RUN_DIR.

Started by ganrun's launcher (ganrun.training.launcher) with Lightning's environment
variables (LOCAL_RANK, RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT); it reads the
run's validated config.yaml and trains alongside process 0, which writes every
output. It never goes through Hydra, so it makes no run directory of its own.
Exit status: 0 when the run ends as process 0 decides (finished, interrupted,
diverged: process 0 reports it), 1 on a failure of this process.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from ganrun.errors import DivergedError, Interrupted, UserError


def main(argv: list[str] | None = None) -> int:
    run_dir = Path((argv or sys.argv[1:])[0])
    logging.basicConfig(level=logging.WARNING,
                        format=f"[rank {os.environ.get('RANK', '?')}] %(message)s")
    from omegaconf import OmegaConf

    from ganrun.training.run import run

    cfg = OmegaConf.load(run_dir / "config.yaml")
    try:
        run(cfg, run_dir=run_dir)
    except (Interrupted, DivergedError):
        return 0
    except UserError as e:
        print(f"ganrun worker: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
