"""torch.distributed glue: process-group setup from torchrun's environment, and collectives.

Every helper is the identity in a single process, so weighters and the engine call them freely.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from mtlkit.errors import EXIT_INTERRUPTED

INTERRUPT_FILE_ENV = "MTLKIT_INTERRUPT_FILE"
"""Set by :func:`launch` (``mtlkit train --nproc``): rank 0 of an interrupted run writes its stop
message there, and the launcher prints it once (not once per rank)."""


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_info() -> DistInfo:
    """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK (a single process when unset)."""
    return DistInfo(
        rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )


def init(device: torch.device) -> DistInfo:
    """Join the process group torchrun describes (gloo on CPU, nccl on CUDA); idempotent."""
    info = env_info()
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend)
    return info


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_mean_(tensor: Tensor) -> Tensor:
    """In-place mean over ranks (identity in one process)."""
    if active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor.div_(dist.get_world_size())
    return tensor


def all_sum_(tensor: Tensor) -> Tensor:
    """In-place sum over ranks (identity in one process), e.g. per-class sums and counts."""
    if active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def label_shares(counts: Tensor) -> Tensor:
    """Per-task factors ``W n_r / sum_r n_r`` from this rank's labelled counts ``n_r`` ``[T]``.

    A task's loss is a mean over this rank's labelled samples, and the ranks' losses and
    gradients are then averaged with equal weight. When the ranks hold different numbers of
    labels for a task, that is not the loss of the global batch; scaled by these factors it is:
    ``mean_r (W n_r / N) L_r = sum_r n_r L_r / N``, the mean over all N labelled samples, as one
    process on the global batch computes it. Ones in one process; 0 for a task no rank labels.
    """
    local = counts.detach().to(torch.float32)
    if not active():
        return torch.ones_like(local)
    total = all_sum_(local.clone())
    return local * dist.get_world_size() / total.clamp_min(1.0)


def all_mean(tensor: Tensor) -> Tensor:
    """Mean over ranks of a detached copy; the result carries no gradient."""
    return all_mean_(tensor.detach().clone()) if active() else tensor.detach()


def global_value(tensor: Tensor) -> Tensor:
    """The ranks' mean as the value, this rank's tensor as the gradient path.

    Lets every rank's weighter see identical loss values while autograd still flows locally.
    """
    if not active():
        return tensor
    return tensor + (all_mean(tensor) - tensor.detach())


def all_mean_grads(params: Sequence[torch.nn.Parameter]) -> None:
    """Average ``.grad`` of ``params`` over ranks in one flat buffer (missing grads count as 0)."""
    if not active():
        return
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    flat = torch.cat(
        [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
    )
    all_mean_(flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


def gather_cat(tensor: Tensor, dim: int = 0) -> Tensor:
    """Concatenate equally-shaped tensors from every rank along ``dim`` (rank order)."""
    if not active():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=dim)


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (pickled through the process group), in rank order."""
    if not active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if active():
        dist.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Re-run this command under ``torchrun --standalone --nproc_per_node=N`` (one node)."""
    if nproc < 1:
        raise ValueError("--nproc must be >= 1")
    args = list(argv)
    if "--nproc" in args:
        i = args.index("--nproc")
        del args[i : i + 2]
    args = [a for a in args if not a.startswith("--nproc=")]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "mtlkit",
        *args,
    ]
    with tempfile.TemporaryDirectory(prefix="mtlkit-launch-") as tmp:
        note = Path(tmp) / "interrupted.txt"
        proc = subprocess.Popen(cmd, env={**os.environ, INTERRUPT_FILE_ENV: str(note)})

        def forward(signum: int, frame: Any) -> None:
            # torchrun's agent turns SIGTERM into a graceful stop of every worker
            proc.send_signal(signal.SIGTERM)

        # Ctrl-C reaches the whole process group already; a kill aimed at this process is
        # passed on as SIGTERM (the agent handles that one, not SIGUSR1)
        previous = {
            signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
            signal.SIGTERM: signal.signal(signal.SIGTERM, forward),
        }
        if hasattr(signal, "SIGUSR1"):
            previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, forward)
        try:
            code = proc.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if note.exists():
            print(note.read_text().rstrip(), file=sys.stderr)
            return EXIT_INTERRUPTED
        return code
