"""FAMO: Liu, Feng, Stone & Liu, "FAMO: Fast Adaptive Multitask Optimization", NeurIPS 2023
(arXiv 2306.03792).

Task logits ``xi`` (zeros at start), ``z = softmax(xi)``, ``D_i = L_i - L_i* + eps``. The model
steps with

    L = sum_i (z_i / c) log D_i,   c = sum_i z_i / D_i  (a constant),

i.e. the shared update is ``sum_i w_i grad L_i`` with ``w_i = z_i / (c D_i)`` (logged; they sum
to 1). After the step the logits move against the observed log-loss decrease
``delta_i = log D_i(before) - log D_i(after)``:

    xi <- xi - beta (J_z^T delta + gamma xi),   J_z^T delta = z * (delta - z . delta),

as plain gradient descent (``update: sgd``, the paper's Algorithm 1) or, by default, as the
authors' code does it: Adam with learning rate ``beta`` and L2 weight decay ``gamma``
(``update: adam``; its moments are buffers). ``/work/shared/METHODS.md`` writes the decay as
``- gamma xi`` outside ``beta``; both published forms put it inside.

"After" is the loss of the next batch, which the next ``combine`` receives anyway: the logit
update for step t runs at the start of step t+1 with the losses of step t stored in a buffer. No
extra forward, no host sync, so FAMO costs exactly what equal weighting costs (the paper's own
"free + the post-step loss"; the authors' scripts re-evaluate the same batch instead, one extra
forward). Everything (logits, previous losses, Adam moments) is in buffers: resume is exact.

Heads: ``w_i`` times their own loss gradient (the one backward of ``L``; ``w > 0``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field

from mtlkit.options import Options
from mtlkit.weighter import Needs, Update, Weighter, WeighterInput


class FAMOOptions(Options):
    beta: float = Field(0.025, gt=0.0)
    """Learning rate of the task logits."""
    gamma: float = Field(1e-3, ge=0.0)
    """Decay (regularisation) of the task logits."""
    min_losses: float | dict[str, float] = 0.0
    """The losses' lower bounds ``L*`` (one value for all tasks, or per task name)."""
    eps: float = Field(1e-8, gt=0.0)
    """Added to ``L - L*`` before the log and the division."""
    update: Literal["adam", "sgd"] = "adam"
    """How the logits step: Adam (the authors' code) or plain gradient descent (Algorithm 1)."""


class FAMOWeighter(Weighter):
    """Balanced log-loss decrease with O(1) extra cost (Liu et al. 2023)."""

    Options = FAMOOptions
    options: FAMOOptions
    needs = Needs(grads="none")

    def __init__(self, task_names: Sequence[str], options: FAMOOptions | None = None) -> None:
        super().__init__(task_names, options)
        t = self.num_tasks
        lower = self.options.min_losses
        if isinstance(lower, dict):
            unknown = sorted(set(lower) - set(self.task_names))
            if unknown:
                raise ValueError(f"famo min_losses names unknown tasks {unknown}")
            values = [float(lower.get(n, 0.0)) for n in self.task_names]
        else:
            values = [float(lower)] * t
        self.register_buffer("min_losses", torch.tensor(values))
        self.register_buffer("logits", torch.zeros(t))
        self.register_buffer("prev", torch.ones(t))  # D of the previous step
        self.register_buffer("has_prev", torch.zeros((), dtype=torch.bool))
        self.register_buffer("adam_m", torch.zeros(t))
        self.register_buffer("adam_v", torch.zeros(t))
        self.register_buffer("adam_t", torch.zeros(()))

    def combine(self, inp: WeighterInput) -> Update:
        losses = inp.losses
        lower = self.min_losses.to(losses.dtype)
        eps = self.options.eps
        d_now = (losses.detach() - lower).clamp_min(0.0) + eps
        # the logit update of the previous step, now that its "after" losses are known
        delta = (self.prev.log() - d_now.log()).to(self.logits.dtype)
        xi = self.logits
        z_old = torch.softmax(xi, dim=0)
        grad = z_old * (delta - (z_old * delta).sum()) + self.options.gamma * xi
        if self.options.update == "sgd":
            new_xi = xi - self.options.beta * grad
        else:
            b1, b2 = 0.9, 0.999
            m = b1 * self.adam_m + (1 - b1) * grad
            v = b2 * self.adam_v + (1 - b2) * grad * grad
            t = self.adam_t + 1
            step = (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + 1e-8)
            new_xi = xi - self.options.beta * step
            self.adam_m.copy_(torch.where(self.has_prev, m, self.adam_m))
            self.adam_v.copy_(torch.where(self.has_prev, v, self.adam_v))
            self.adam_t.copy_(torch.where(self.has_prev, t, self.adam_t))
        self.logits.copy_(torch.where(self.has_prev, new_xi, xi))
        # this step's loss
        z = torch.softmax(self.logits, dim=0).to(losses.dtype)
        c = (z / d_now).sum()
        d = (losses - lower).clamp_min(0.0) + eps
        loss = (z / c * d.log()).sum()
        self.prev.copy_(d_now)
        self.has_prev.fill_(True)
        return Update(weights=self.record(z / (c * d_now)), loss=loss)
