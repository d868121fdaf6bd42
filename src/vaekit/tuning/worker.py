"""A worker process of ``vaekit sweep --workers N``: ``python -m vaekit.tuning.worker OUT/sweep.json INDEX``.

It runs trials of the study that ``OUT/sweep.json`` names until the study holds the trials asked for, logging one
line per trial prefixed with its index. Errors are one line on stderr (exit status 2); Ctrl-C marks the running
trial interrupted (the next sweep resumes it) and exits with status 130.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from vaekit.errors import VaeKitError


def main(argv: list[str]) -> int:
    """Run worker ``argv[1]`` of the sweep described by the file ``argv[0]``; returns the exit status."""
    from vaekit.tuning.sweeping import run_worker

    spec_file, index = Path(argv[0]), int(argv[1])
    logging.basicConfig(format=f"[worker {index}] %(message)s")
    quiet_libraries()
    try:
        run_worker(spec_file, index)
    except VaeKitError as exc:
        print(f"vaekit: error: [worker {index}] {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def quiet_libraries() -> None:
    """One line per trial: vaekit's own lines at INFO, training's per-epoch lines and Optuna's at WARNING/ERROR (a
    trial's failure is reported by vaekit in one line)."""
    logging.getLogger("vaekit").setLevel(logging.INFO)
    for name in ("vaekit.training", "vaekit.threads", "vaekit.evaluation"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        import optuna
    except ImportError:
        return
    optuna.logging.set_verbosity(optuna.logging.ERROR)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
