"""Stop cleanly on SIGINT, SIGTERM or SIGUSR1: finish the step, checkpoint, exit with a code.

Clusters preempt jobs with SIGTERM (Kubernetes, SLURM) or SIGUSR1 (SLURM's ``--signal``) and a
grace period; Ctrl-C sends SIGINT. Each becomes a request that the training loop honours after
the current step. The same signal again, after ``REPEAT_GRACE_S``, aborts at once (the default
behaviour); copies arriving sooner are the same request reaching the process twice (from the
terminal and from a launcher that forwards it). Under torch.distributed the ranks agree every
step (one all-reduce of one flag), so they all stop at the same step.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any

import torch

from mtlkit import distributed
from mtlkit.errors import EXIT_INTERRUPTED, MtlkitError

REPEAT_GRACE_S = 2.0
"""A repeated signal within this many seconds of the first is taken as the same request."""


SIGNALS = tuple(
    s for s in (getattr(signal, n, None) for n in ("SIGINT", "SIGTERM", "SIGUSR1")) if s is not None
)


class TrainingInterrupted(MtlkitError):
    """Training stopped on a signal after writing a checkpoint; ``exit_code`` for the shell."""

    exit_code = EXIT_INTERRUPTED

    def __init__(self, signame: str, step: int, epoch: int, checkpoint: str) -> None:
        self.signame, self.step, self.epoch, self.checkpoint = signame, step, epoch, checkpoint
        super().__init__(
            f"stopped by {signame} after step {step} (epoch {epoch}); checkpoint: {checkpoint}"
        )


class StopRequests:
    """Context manager turning the signals into a flag checked between steps.

    Installs handlers only in the main thread (elsewhere Python forbids it, and the flag stays
    clear); restores the previous handlers on exit.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.signum: int | None = None
        self._since = 0.0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequests:
        if self.enabled and threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            if time.monotonic() - self._since < REPEAT_GRACE_S:
                return  # the same request, delivered twice
            # asked again: abort at once, as it would without mtlkit
            previous = self._previous.get(signum, signal.SIG_DFL)
            signal.signal(signum, previous)
            if callable(previous):
                previous(signum, frame)
            else:
                os.kill(os.getpid(), signum)
            return
        self.signum = signum
        self._since = time.monotonic()
        print(
            f"mtlkit: {signal.Signals(signum).name} received: stopping after this step and"
            " writing a checkpoint (send it again to abort now)",
            file=sys.stderr,
            flush=True,
        )

    @property
    def signame(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else "a signal"

    def requested(self, device: torch.device | None = None) -> bool:
        """True on every rank when any rank got a signal (one tiny all-reduce under DDP, on
        ``device``: NCCL reduces CUDA tensors only)."""
        flag = self.signum is not None
        if not distributed.active():
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        distributed.all_sum_(t)
        return bool(t.item() > 0)
