"""Run under torchrun: the functional path on this rank's half of a batch; rank 0 saves grads.

Arguments: output file, weighter name, ``rep`` ("1": representation gradients), ``partial``
("1": some labels missing, unevenly over the ranks, and ``labelled=`` passed to ``backward``).
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
from torch import nn

import mtlkit


def main(out: str, name: str, rep: str, partial: str = "0") -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 8))
    heads = nn.ModuleList([nn.Linear(8, 1), nn.Linear(8, 1)])
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 6, generator=g), torch.randn(16, 2, generator=g)
    if partial == "1":  # labels missing unevenly: a's on rank 0's half, b's on rank 1's
        y[0:5, 0] = float("nan")
        y[12:15, 1] = float("nan")
    part = slice(rank * 16 // world, (rank + 1) * 16 // world)
    opts = {"rep": True} if rep == "1" else {}
    step = mtlkit.WeightedStep(mtlkit.create_weighter(name, ["a", "b"], **opts),
                               shared=encoder.parameters(), steps_per_epoch=10)
    z = encoder(x[part])
    labelled = ~torch.isnan(y[part])
    losses = [nn.functional.mse_loss(h(z).squeeze(1)[labelled[:, i]], y[part, i][labelled[:, i]])
              for i, h in enumerate(heads)]
    step.backward(losses, features=z,
                  labelled=labelled.sum(0) if partial == "1" else None)
    if rank == 0:
        torch.save([p.grad for p in [*encoder.parameters(), *heads.parameters()]], out)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:5])
