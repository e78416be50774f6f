"""A torchrun worker that trains a run with :func:`mcl.train` and, if asked, kills rank 1 mid-stage once.

Usage (every rank runs it)::

    torchrun --standalone --nproc_per_node 2 tests/elastic_worker.py OUT DATA [--kill-stage S] [--set KEY=VALUE ...]

With ``--kill-stage S``, rank 1 SIGKILLs itself at the first training step of stage ``S`` taken after that
stage's epoch checkpoint exists (so: in the middle of its second epoch), and only in torchrun's first
attempt (``TORCHELASTIC_RESTART_COUNT`` is 0). torchrun then stops rank 0 and, with ``--max-restarts 1``,
starts both ranks again, which resume the run directory. The fault is injected through the public
``fit=`` hook (a wrapped loss), so the product carries no test code for it.

Each rank prints ``elastic: rank R attempt A STAGE checkpoint=yes|no`` when a stage's training starts:
the test reads from it that the restarted ranks did resume from the checkpoint.

In a restarted attempt rank 0 joins the process group 2 s late, so rank 1 always looks up rank 0's address
before rank 0 has published its new one: it must not find the dead attempt's (see
:func:`mcl.distributed.init_process_group`). Without the delay that failure would be a race.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

import mcl
from mcl import distributed
from mcl.cli.common import init_distributed
from mcl.run import CHECKPOINT_FILE
from mcl.training import train


def killing_fit(kill_stage: str | None, attempt: int):
    """``mcl.training.train``, except that rank 1 dies at the first step of ``kill_stage`` past a checkpoint."""

    def fit(model, loss_fn, loader, config, stage_dir: Path, pseudo_labels=None, stage_name="stage", progress=True,
            extra_state=None):
        checkpoint = stage_dir / CHECKPOINT_FILE
        print(f"elastic: rank {distributed.rank()} attempt {attempt} {stage_name} "
              f"checkpoint={'yes' if checkpoint.exists() else 'no'}", flush=True)

        def loss(model_, batch, labels):
            # Rank 1 reaches its next step only after the epoch barrier, i.e. once rank 0 wrote the checkpoint.
            if stage_name == kill_stage and attempt == 0 and distributed.rank() == 1 and checkpoint.exists():
                os.kill(os.getpid(), signal.SIGKILL)
            return loss_fn(model_, batch, labels)

        train(model, loss, loader, config, stage_dir, pseudo_labels, stage_name, progress, extra_state)

    return fit


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("data")
    parser.add_argument("--kill-stage", default=None)
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args(argv)
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    if attempt and os.environ.get("RANK") == "0":
        time.sleep(2)
    init_distributed()
    fit = killing_fit(args.kill_stage, attempt)
    mcl.train("configs/demo.yaml", out=args.out, data=args.data, overrides=args.set, progress=False, fit=fit)
    print(f"elastic: rank {distributed.rank()} attempt {attempt} finished", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
