"""Fault-injection hook points: the named moments of a run where a crash test may stop the process.

Product code marks each moment with :func:`reached` and knows nothing of what a test does there; with no hook
installed (the default) a call does nothing. Moments: ``step`` (after an optimiser step), ``epoch`` (after an
epoch checkpoint, before ``metrics.jsonl``), ``embed`` (after embedding the training set), ``cluster`` (after
k-means, before its files) and ``write`` (an atomic write whose temporary file is complete but not yet renamed).

The crash tests' hook is installed when this module is imported with ``MCL_TEST_KILL_AT=<moment>:<n>`` in the
environment (the tests run ``mcl`` in a subprocess): the n-th time ``<moment>`` is reached in this process, it
kills the process with SIGKILL (no cleanup, like a power cut or the OOM killer).

Example:
    >>> seen = []
    >>> install(seen.append)
    >>> reached("epoch")
    >>> seen
    ['epoch']
    >>> uninstall(seen.append)
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

KILL_ENV = "MCL_TEST_KILL_AT"
MOMENTS = ("step", "epoch", "embed", "cluster", "write")

_hooks: list[Callable[[str], None]] = []


def reached(moment: str) -> None:
    """Tell the installed hooks that ``moment`` (one of :data:`MOMENTS`) has been reached."""
    for hook in list(_hooks):
        hook(moment)


def install(hook: Callable[[str], None]) -> None:
    """Call ``hook(moment)`` at every :func:`reached` from now on."""
    _hooks.append(hook)


def uninstall(hook: Callable[[str], None]) -> None:
    """Stop calling ``hook`` (installed with :func:`install`)."""
    _hooks.remove(hook)


class KillAt:
    """Hook that SIGKILLs this process the ``count``-th time ``moment`` is reached."""

    def __init__(self, moment: str, count: int) -> None:
        if moment not in MOMENTS:
            raise ValueError(f"{KILL_ENV}: unknown moment {moment!r}; expected one of {', '.join(MOMENTS)}")
        self.moment, self.count, self.seen = moment, count, 0

    def __call__(self, moment: str) -> None:
        if moment != self.moment:
            return
        self.seen += 1
        if self.seen == self.count:
            os.kill(os.getpid(), signal.SIGKILL)

    @classmethod
    def from_env(cls, value: str) -> KillAt:
        """Parse ``<moment>:<n>`` (the value of ``MCL_TEST_KILL_AT``)."""
        moment, _, count = value.partition(":")
        if not count.isdigit():
            raise ValueError(f"{KILL_ENV}={value!r}: expected <moment>:<n>, e.g. step:3")
        return cls(moment, int(count))


if os.environ.get(KILL_ENV):
    install(KillAt.from_env(os.environ[KILL_ENV]))
