"""Conformance checks for a Weighter: what mtlkit's engine, checkpoints and DDP rely on.

``check_weighter(cls)`` runs them all and raises one AssertionError listing every violation;
``weighter_checks(cls)`` returns them as named :class:`~mtlkit.testing.Check` objects for
``parametrize_checks``. A weighter is driven through the real gradient paths
(:class:`mtlkit.gradient_paths.GradientPaths`, the call the Trainer's engine and
``mtlkit.backward`` make) by :class:`FakeTrainer`, and through the real engine on a tiny model for
the head check.

What a weighter declares about itself (:class:`WeighterTraits`) comes from the ``traits``
argument, else from a ``conformance_traits`` class attribute, else the defaults (held to every
property). Per-name knowledge lives in those declarations, never in the kit.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, get_args

import torch
from torch import Tensor, nn

from mtlkit.backbone import Backbone
from mtlkit.builtin.hps import MultiTaskModel
from mtlkit.gradient_paths import GradientPaths
from mtlkit.gradients import GradientEngine
from mtlkit.options import Options
from mtlkit.task import MetricMeter, MetricSpec, Task
from mtlkit.testing._checks import Check, SkipCheck, options_id, run_checks
from mtlkit.weighter import GradSource, Needs, Update, Weighter, WeighterInput, WeighterSetup

TRAITS_ATTRIBUTE = "conformance_traits"
"""Class attribute the kit reads a weighter's :class:`WeighterTraits` from (a WeighterTraits, a
mapping of its fields, or a callable taking the validated options and returning either)."""


@dataclass(frozen=True)
class WeighterTraits:
    """What a weighter declares so the kit holds it to the right properties.

    ``equivariant_max_tasks``: the largest T at which relabelling the tasks (permuting names and
    data together) permutes the weights and leaves the update unchanged; None for every T, 0 for
    none. Methods whose result depends on task positions declare it: PCGrad's projection orders
    (exact only at T = 2, where each task has one other), a per-task layer drawn at random.
    ``rtol``/``atol``: the tolerance of that comparison (float32 reductions reorder).
    """

    equivariant_max_tasks: int | None = None
    rtol: float = 2e-4
    atol: float = 1e-6


TraitsLike = (
    WeighterTraits
    | Mapping[str, Any]
    | Callable[[Options], WeighterTraits | Mapping[str, Any]]
    | None
)
"""A traits declaration: the dataclass, a mapping of its fields, or a function of the options."""
OptionsLike = Mapping[str, Any] | Callable[[Sequence[str]], Mapping[str, Any]]
"""An options set: a mapping, or a function of the (sorted) task names, for options keyed by
task name."""

GRAD_KINDS = ["random", "small", "conflicting", "parallel"]
"""Raw, unnormalised task gradients: ``random`` N(0, 1); ``small`` the same at 1e-4 scale;
``conflicting`` every pair at a negative dot product (the centred basis vectors ``e_i - 1/t``,
plus noise, unequal norms; needs ``d >= t``); ``parallel`` near-parallel (a common direction plus
2% noise, norms 0.5 to 5)."""


def raw_grads(
    kind: str, t: int, d: int = 6, seed: int = 0, dtype: torch.dtype = torch.float64
) -> Tensor:
    """``[t, d]`` gradients of one of the :data:`GRAD_KINDS` (the inputs that break solvers)."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(t, d, generator=g, dtype=torch.float64)
    norms = torch.linspace(0.5, 5.0, t, dtype=torch.float64)[torch.randperm(t, generator=g)]
    if kind == "random":
        out = noise
    elif kind == "small":
        out = 1e-4 * noise
    elif kind == "conflicting":  # e_i - 1/t: pairwise cosine -1/(t-1), then noise and norms
        if d < t:
            raise ValueError(f"conflicting gradients need d >= t, got d={d}, t={t}")
        out = 0.05 * noise
        out[:, :t] += torch.eye(t, dtype=torch.float64) - 1.0 / t
        out = norms[:, None] * out / out.norm(dim=1, keepdim=True)
    elif kind == "parallel":
        base = torch.randn(d, generator=g, dtype=torch.float64)
        out = norms[:, None] * (base / base.norm() + 0.02 * noise / d**0.5)
    else:
        raise ValueError(f"unknown gradient kind {kind!r}; one of {GRAD_KINDS}")
    return out.to(dtype)


def roundtrip(state: Any) -> Any:
    """Through ``torch.save`` / ``torch.load(weights_only=True)``, as mtlkit checkpoints are."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run with torch's global CPU generator at ``seed``, restoring the caller's state after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def task_names(t: int) -> list[str]:
    """The kit's task names: ``t0 .. t{T-1}`` (option factories receive these)."""
    return [f"t{i}" for i in range(t)]


def validate_options(cls: type[Weighter], options: OptionsLike, names: Sequence[str]) -> Options:
    """The options model for ``names``: a factory gets them sorted, so the same set of tasks
    gets the same options in any order (as a config keyed by task name does)."""
    raw = options(sorted(names)) if callable(options) else options
    return cls.Options.model_validate(dict(raw))


def build_weighter(
    cls: type[Weighter],
    options: OptionsLike,
    names: Sequence[str],
    *,
    seed: int = 0,
    setup: WeighterSetup | None = None,
) -> Weighter:
    """Construct (and ``setup`` when given) under a fixed global seed: random inits reproduce."""
    opts = validate_options(cls, options, names)
    with seeded(seed):
        weighter = cls(list(names), opts)
        if setup is not None:
            weighter.setup(setup)
    return weighter


def resolve_traits(
    cls: type[Weighter], options: Options, traits: TraitsLike = None
) -> WeighterTraits:
    """The declaration in force: ``traits`` if given, else the class's ``conformance_traits``."""
    decl: Any = traits if traits is not None else getattr(cls, TRAITS_ATTRIBUTE, None)
    if callable(decl) and not isinstance(decl, (WeighterTraits, Mapping)):
        decl = decl(options)
    if decl is None:
        return WeighterTraits()
    if isinstance(decl, WeighterTraits):
        return decl
    if isinstance(decl, Mapping):
        known = {f.name for f in fields(WeighterTraits)}
        unknown = sorted(set(decl) - known)
        if unknown:
            raise TypeError(f"unknown weighter traits {unknown}; known: {sorted(known)}")
        return WeighterTraits(**decl)
    raise TypeError(f"weighter traits must be WeighterTraits, a mapping or a function: {decl!r}")


# --- the fake trainer ---------------------------------------------------------------------------


@dataclass
class StepOut:
    """One fake step: the weighter's answer, what it was given, and the detached losses."""

    update: Update
    inp: WeighterInput
    losses: Tensor


class FakeTrainer:
    """A tiny deterministic multi-task problem driven like mtlkit's trainer drives a weighter.

    Model: shared ``W`` ([H, F], the backbone and its only, hence last, layer), features
    ``z = tanh(x W^T)``, one linear head ``v_i`` ([H]) per task, loss ``mean((z v_i - y_i)^2)``,
    step metric ``exp(-loss)``. Batch ``s`` is a pure function of ``(seed, s)``, so a resumed run
    sees the batches the uninterrupted one saw. ``perm`` reorders the tasks (and their data).
    One SGD optimizer holds the model and the weighter's param groups; ``steps_per_epoch`` makes
    the epoch counter. The backward is the real :class:`~mtlkit.gradient_paths.GradientPaths`
    call: the stacked gradients are handed over as scratch, and each head gets its own loss
    gradient times ``Update.head_weights`` (None: the weights).
    ``setup`` runs under ``init_seed`` (default ``seed``), so random weighter inits reproduce.
    """

    def __init__(
        self,
        weighter: Weighter,
        num_tasks: int,
        *,
        seed: int = 0,
        lr: float = 0.05,
        features: int = 5,
        hidden: int = 4,
        batch: int = 8,
        steps_per_epoch: int = 2,
        perm: Sequence[int] | None = None,
        duplicate: bool = False,
        init_seed: int | None = None,
    ) -> None:
        g = torch.Generator().manual_seed(seed)
        self.seed = seed
        self.num_tasks = num_tasks
        self.perm = list(perm) if perm is not None else list(range(num_tasks))
        self.features, self.batch, self.steps_per_epoch = features, batch, steps_per_epoch
        self.W = nn.Parameter(torch.randn(hidden, features, generator=g) * 0.5)
        heads = torch.randn(num_tasks, hidden, generator=g)
        targets = torch.randn(num_tasks, features, generator=g)  # y_i = x . t_i
        if duplicate:  # every task identical: singular Gram matrices
            heads[:] = heads[0]
            targets[:] = targets[0]
        self.heads = [nn.Parameter(heads[i].clone()) for i in self.perm]
        self.targets = targets[self.perm]
        self.weighter = weighter
        self.info = WeighterSetup(
            feature_dim=hidden, shared_numel=self.W.numel(), device=torch.device("cpu")
        )
        with seeded(seed if init_seed is None else init_seed):
            weighter.setup(self.info)
        groups: list[dict[str, Any]] = [{"params": [self.W, *self.heads]}]
        groups += weighter.param_groups()
        self.opt = torch.optim.SGD(groups, lr=lr)
        self.paths = GradientPaths(weighter, [self.W], last_shared=[self.W])
        self.step_index = 0

    # --- state, as a checkpoint would hold it -----------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Model, optimizer, weighter and step, through ``torch.save``/``load(weights_only)``."""
        return roundtrip(
            {
                "W": self.W.detach().clone(),
                "heads": [h.detach().clone() for h in self.heads],
                "opt": self.opt.state_dict(),
                "weighter": self.weighter.state_dict(),
                "step": self.step_index,
            }
        )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.W.copy_(state["W"])
            for h, s in zip(self.heads, state["heads"]):
                h.copy_(s)
        self.opt.load_state_dict(state["opt"])
        self.weighter.load_state_dict(state["weighter"])
        self.step_index = int(state["step"])

    # --- one step ---------------------------------------------------------------------------
    def data(self, step: int) -> tuple[Tensor, Tensor]:
        """Batch ``step``: inputs ``[B, F]`` and targets ``[B, T]`` (in this trainer's order)."""
        g = torch.Generator().manual_seed(1000 * self.seed + step)
        x = torch.randn(self.batch, self.features, generator=g)
        noise = 0.1 * torch.randn(self.num_tasks, self.batch, generator=g)
        return x, x @ self.targets.T + noise[self.perm].T

    def _losses(self, z: Tensor, y: Tensor) -> tuple[list[Tensor], Tensor, Tensor]:
        """Per-task losses kept apart (each differentiated alone), stacked, and step metrics."""
        per_task = [((z @ h - y[:, i]) ** 2).mean() for i, h in enumerate(self.heads)]
        losses = torch.stack(per_task)
        return per_task, losses, torch.exp(-losses.detach())

    def step(self) -> StepOut:
        """One training step: the forward, then the real gradient paths (the call the Trainer's
        engine and ``mtlkit.backward`` make), the optimizer step and ``after_step``."""
        w = self.weighter
        needs = w.needs
        step = self.step_index
        x, y = self.data(step)
        self.opt.zero_grad(set_to_none=True)
        z = torch.tanh(x @ self.W.T)
        # on the representation path the heads read a detached copy, as in the engine
        zz = z.detach().requires_grad_(True) if needs.grads == "representation" else z
        per_task, losses, metrics = self._losses(zz, y)
        result = self.paths(
            per_task, [[h] for h in self.heads], needs=needs, features=z,
            heads_input=zz if zz is not z else None, metrics=metrics, step=step,
            epoch=step // self.steps_per_epoch, distributed_=False,
        )
        assert result.update is not None
        self.opt.step()
        if needs.after_step:
            w.after_step(
                WeighterInput(
                    losses=losses.detach(),
                    metrics=metrics if needs.step_metrics else None,
                    step=result.input.step, epoch=result.input.epoch,
                )
            )
        self.step_index += 1
        return StepOut(update=result.update, inp=result.input, losses=losses.detach())

    def run(self, steps: int) -> list[StepOut]:
        return [self.step() for _ in range(steps)]

    def params(self) -> list[Tensor]:
        """The model's parameters (shared, then heads), detached copies."""
        return [self.W.detach().clone(), *[h.detach().clone() for h in self.heads]]


# --- a tiny model for the real gradient engine ---------------------------------------------------

H = 4
"""Feature width of the head problems."""


class LinearTrunk(Backbone):
    """``z = x W^T``: one shared layer (also the "last shared layer" GradNorm reads)."""

    def __init__(self, weight: Tensor) -> None:
        super().__init__()
        self.lin = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        with torch.no_grad():
            self.lin.weight.copy_(weight)

    @property
    def feature_dim(self) -> int:
        return self.lin.out_features

    def forward(self, x: Tensor) -> Tensor:
        return self.lin(x)


class _NoMeter(MetricMeter):
    def update(self, output: Any, target: Tensor, batch: Mapping[str, Any]) -> None:
        pass

    def compute(self) -> dict[str, float]:
        return {}


class RegressionTask(Task):
    """A linear head ``z . a`` and the loss ``(z . a - y)^2 / 2``, step metric ``exp(-loss)``."""

    def build_head(self, feature_dim: int, info: Mapping[str, Any]) -> nn.Module:
        return nn.Linear(feature_dim, 1, bias=False)

    def per_sample_loss(self, output: Tensor, target: Tensor) -> Tensor:
        return 0.5 * (output.squeeze(-1) - target) ** 2

    def metrics(self) -> list[MetricSpec]:
        return [MetricSpec("mse", higher_is_better=False)]

    def new_meter(self) -> MetricMeter:
        return _NoMeter()

    def step_metric(self, output: Tensor, target: Tensor) -> Tensor:
        return torch.exp(-self.loss(output, target).detach())


HEAD_CASES = ["random3", "parallel2", "conflict2", "batch"]
"""The head problems: crafted Gram matrices that push shared coefficients negative, and one
ordinary random regression batch."""


def head_problem(case: str) -> tuple[MultiTaskModel, list[Task], dict[str, Any]]:
    """A tiny model, its tasks and one batch.

    The crafted cases use one sample ``x = 1`` and targets with residual 1, so the shared
    gradient of task i (w.r.t. W and w.r.t. the features alike) is exactly its head vector
    ``a_i``, and its own head gradient is the feature vector ``z = W``: the head vectors choose
    the Gram matrix. ``random3`` gives IMTL a negative coefficient, ``parallel2`` (``[1, 0]`` and
    ``[10, 1]``) gives Aligned-MTL one; ``batch`` is an ordinary random regression (T = 3).
    """
    gen = torch.Generator().manual_seed(7)
    if case == "batch":
        t, f, b = 3, 3, 5
        weight = torch.randn(H, f, generator=gen)
        heads = torch.randn(t, H, generator=gen)
        x = torch.randn(b, f, generator=gen)
        y = torch.randn(b, t, generator=gen)
    else:
        if case == "random3":
            heads = torch.randn(3, H, generator=torch.Generator().manual_seed(1))
        elif case == "parallel2":
            heads = torch.tensor([[1.0, 0.0, 0.0, 0.0], [10.0, 1.0, 0.0, 0.0]])
        elif case == "conflict2":
            heads = torch.tensor([[1.0, 0.2, 0.0, 0.0], [-1.0, 0.3, 0.1, 0.0]])
        else:
            raise ValueError(f"unknown head case {case!r}; one of {HEAD_CASES}")
        t = heads.shape[0]
        weight = torch.tensor([[0.5], [-0.3], [0.8], [0.2]])
        x = torch.ones(1, 1)
        y = (heads @ weight[:, 0] - 1.0)[None, :]  # residual z . a_i - y_i = 1
    names = task_names(t)
    tasks: list[Task] = [RegressionTask(n) for n in names]
    model = MultiTaskModel(
        LinearTrunk(weight), {n: task.build_head(H, {}) for n, task in zip(names, tasks)}
    )
    with torch.no_grad():
        for n, a in zip(names, heads):
            model.heads[n].weight.copy_(a[None, :])
    batch = {"input": x, "targets": {n: y[:, i] for i, n in enumerate(names)}, "meta": {}}
    return model, tasks, batch


def own_head_gradients(
    model: MultiTaskModel, tasks: Sequence[Task], batch: Mapping[str, Any]
) -> list[Tensor]:
    """The gradient of each task's own loss w.r.t. its head (computed apart, from scratch)."""
    _, outputs = model(batch["input"])
    out = []
    for task in tasks:
        loss = task.loss(outputs[task.name], batch["targets"][task.name])
        params = list(model.heads[task.name].parameters())
        out.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]))
    return out


def head_engine(
    cls: type[Weighter], options: OptionsLike, case: str, *, seed: int = 0
) -> tuple[GradientEngine, Weighter, MultiTaskModel, list[Task], dict[str, Any]]:
    """The real :class:`GradientEngine` over :func:`head_problem` ``case`` with a fresh weighter,
    its own parameters moved off their (often trivial) start."""
    model, tasks, batch = head_problem(case)
    shared = sum(p.numel() for p in model.shared_parameters())
    info = WeighterSetup(feature_dim=H, shared_numel=shared, device=torch.device("cpu"))
    weighter = build_weighter(cls, options, [t.name for t in tasks], seed=seed, setup=info)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(3)
        for p in weighter.parameters():
            p.add_(0.4 * torch.rand(p.shape, generator=gen) - 0.2)
    return GradientEngine(model, tasks, weighter), weighter, model, tasks, batch


def head_grad(model: MultiTaskModel, name: str) -> Tensor | None:
    """Task ``name``'s accumulated head gradient, flattened (None when no parameter has one)."""
    grads = [p.grad for p in model.heads[name].parameters()]
    if all(g is None for g in grads):
        return None
    params = list(model.heads[name].parameters())
    return torch.cat(
        [(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)]
    )


# --- checks -------------------------------------------------------------------------------------


def _finite(t: Tensor) -> bool:
    return bool(torch.isfinite(t).all())


def _state_equal(a: Mapping[str, Any], b: Mapping[str, Any], what: str) -> None:
    if set(a) != set(b):
        raise AssertionError(
            f"{what}: state_dict keys differ: only in one {sorted(set(a) - set(b))},"
            f" only in the other {sorted(set(b) - set(a))}"
        )
    for key, value in a.items():
        other = b[key]
        same = torch.equal(value, other) if isinstance(value, Tensor) else value == other
        if not same:
            raise AssertionError(f"{what}: state_dict[{key!r}] differs: {value!r} vs {other!r}")


def _check_update(update: Any, w: Weighter, inp: WeighterInput, t: int, where: str) -> None:
    """The shape and finiteness of one answer, per the declared gradient path."""
    if not isinstance(update, Update):
        raise AssertionError(f"{where}: combine returned {type(update).__name__}, not an Update")
    weights = update.weights
    if not isinstance(weights, Tensor) or tuple(weights.shape) != (t,):
        shape = tuple(weights.shape) if isinstance(weights, Tensor) else weights
        raise AssertionError(f"{where}: Update.weights has shape {shape}, expected ({t},)")
    if not _finite(weights):
        raise AssertionError(f"{where}: non-finite weights {weights.tolist()}")
    if weights.requires_grad:
        raise AssertionError(f"{where}: Update.weights must be detached (they are logged)")
    if not torch.allclose(w.weights.float(), weights.detach().float(), rtol=1e-6, atol=0):
        raise AssertionError(
            f"{where}: the weights buffer {w.weights.tolist()} does not hold the returned"
            f" weights {weights.tolist()} (record them with self.record(w))"
        )
    mode = w.needs.grads
    if mode in ("none", "last_layer"):
        if update.loss is None:
            raise AssertionError(f"{where}: needs.grads={mode!r} but no Update.loss was returned")
    elif update.grad is None:
        raise AssertionError(f"{where}: needs.grads={mode!r} but no Update.grad was returned")
    if update.loss is not None:
        if update.loss.numel() != 1 or not _finite(update.loss):
            raise AssertionError(f"{where}: Update.loss must be a finite scalar, got {update.loss}")
    if update.grad is not None:
        assert inp.grads is not None
        expected = (
            tuple(inp.grads.shape[1:]) if mode in ("parameters", "representation") else None
        )
        if expected is not None and tuple(update.grad.shape) != expected:
            raise AssertionError(
                f"{where}: Update.grad has shape {tuple(update.grad.shape)}, expected {expected}"
            )
        if not _finite(update.grad):
            raise AssertionError(f"{where}: non-finite Update.grad")
    if update.head_weights is not None:
        hw = update.head_weights
        if tuple(hw.shape) != (t,) or not _finite(hw) or not bool((hw >= 0).all()):
            raise AssertionError(
                f"{where}: Update.head_weights must be finite, >= 0 and shaped ({t},),"
                f" got {hw.tolist()}"
            )


def synthetic_batch(t: int) -> int:
    """Samples of the raw-gradient inputs: 3, more for many tasks (conflicting needs B*H >= T)."""
    return max(3, -(-t // H))


def synthetic_setup(t: int) -> WeighterSetup:
    """The model facts of the raw-gradient inputs: 4 features, max(12, T) shared parameters."""
    return WeighterSetup(feature_dim=H, shared_numel=max(12, t), device=torch.device("cpu"))


def synthetic_input(
    w: Weighter, kind: str, t: int, step: int, *, seed: int = 0
) -> tuple[WeighterInput, Tensor]:
    """What the engine would hand ``w`` at ``step``, with raw gradients of ``kind``.

    Returns the input and the leaf the losses hang from (its gradient is the update's gradient
    w.r.t. the losses on the loss paths).
    """
    needs = w.needs
    g = torch.Generator().manual_seed(seed * 7919 + step * 31 + GRAD_KINDS.index(kind))
    scale = 1e-4 if kind == "small" else 1.0
    leaf = (scale * (0.2 + 1.8 * torch.rand(t, generator=g))).requires_grad_(True)
    loss_path = needs.grads in ("none", "last_layer")
    losses = leaf * 1.0 if loss_path else leaf.detach()
    info = synthetic_setup(t)
    b, f, d = synthetic_batch(t), info.feature_dim, info.shared_numel
    grads: Tensor | None = None
    if needs.grads in ("parameters", "last_layer"):
        grads = raw_grads(kind, t, d=d, seed=seed + step, dtype=torch.float32)
    elif needs.grads == "representation":
        grads = raw_grads(kind, t, d=b * f, seed=seed + step, dtype=torch.float32).view(t, b, f)
    features = torch.randn(b, f, generator=g) if needs.features else None
    metrics = torch.rand(t, generator=g) if needs.step_metrics else None
    counters: dict[str, int] = {"step": step, "epoch": step // 2} if needs.counters else {}
    inp = WeighterInput(
        losses=losses, features=features, grads=grads, metrics=metrics,
        grads_scratch=grads is not None, **counters,
    )
    return inp, leaf


def _drive(w: Weighter, inputs: Callable[[int], tuple[WeighterInput, Tensor]], steps: int,
           t: int, where: str) -> list[Update]:
    """Combine, backward the update's loss, step the weighter's own groups, ``after_step``;
    returns detached copies of the answers as ``combine`` gave them."""
    groups = w.param_groups()
    opt = torch.optim.SGD(groups, lr=0.05) if groups else None
    out = []
    for step in range(steps):
        inp, leaf = inputs(step)
        at = f"{where}, step {step}"
        update = w.combine(inp)
        _check_update(update, w, inp, t, at)
        out.append(
            Update(
                weights=update.weights.detach().clone(),
                loss=None if update.loss is None else update.loss.detach().clone(),
                grad=None if update.grad is None else update.grad.detach().clone(),
            )
        )
        if update.loss is not None and update.loss.requires_grad:
            update.loss.backward()
            if leaf.grad is not None and not _finite(leaf.grad):
                raise AssertionError(f"{at}: non-finite gradient of Update.loss w.r.t. the losses")
        if w.needs.grads in ("none", "last_layer") and leaf.grad is None:
            raise AssertionError(f"{at}: Update.loss does not depend on the task losses")
        for name, p in w.named_parameters():
            if p.grad is not None and not _finite(p.grad):
                raise AssertionError(f"{at}: non-finite gradient of the weighter's {name}")
        if opt is not None:
            opt.step()
            opt.zero_grad(set_to_none=True)
        if w.needs.after_step:
            w.after_step(
                WeighterInput(
                    losses=inp.losses.detach(), step=inp.step, epoch=inp.epoch,
                    metrics=inp.metrics,
                )
            )
        for name, value in w.state_dict().items():
            if isinstance(value, Tensor) and value.is_floating_point() and not _finite(value):
                raise AssertionError(f"{at}: the weighter's {name} became non-finite")
    return out


class _Case:
    """One (class, options) pair under test, with the helpers every check shares."""

    def __init__(self, cls: type[Weighter], options: OptionsLike, traits: TraitsLike) -> None:
        self.cls = cls
        self.options = options
        self.traits = traits

    def build(self, names: Sequence[str], seed: int = 0) -> Weighter:
        return build_weighter(self.cls, self.options, names, seed=seed)

    def trainer(self, t: int, *, perm: Sequence[int] | None = None, seed: int = 0,
                init_seed: int = 0, **kw: Any) -> FakeTrainer:
        names = task_names(t)
        if perm is not None:
            names = [names[i] for i in perm]
        return FakeTrainer(self.build(names, init_seed), t, perm=perm, seed=seed,
                           init_seed=init_seed, **kw)

    def resolved_traits(self, t: int) -> WeighterTraits:
        return resolve_traits(
            self.cls, validate_options(self.cls, self.options, task_names(t)), self.traits
        )

    # --- the checks ---------------------------------------------------------------------------
    def finite(self, t: int) -> None:
        """Finite, well-shaped answers on raw random / tiny / conflicting / near-parallel
        gradients, and through a fake training run with distinct and with identical tasks."""
        for kind in GRAD_KINDS:
            w = build_weighter(self.cls, self.options, task_names(t), setup=synthetic_setup(t))
            _drive(w, lambda s, w=w, kind=kind: synthetic_input(w, kind, t, s), 4, t,
                   f"T={t}, {kind} gradients")
        for duplicate in (False, True):  # True: identical tasks, a singular Gram matrix
            where = f"T={t}, fake training{' on identical tasks' if duplicate else ''}"
            trainer = self.trainer(t, duplicate=duplicate)
            kept: list[tuple[Tensor, Tensor]] = []
            for step in range(7):  # crosses three epochs
                out = trainer.step()
                _check_update(out.update, trainer.weighter, out.inp, t, f"{where}, step {step}")
                kept.append((out.update.weights, out.update.weights.detach().clone()))
            for step, (returned, copy) in enumerate(kept):
                if not torch.equal(returned, copy):
                    raise AssertionError(
                        f"{where}: the weights returned at step {step} changed later"
                        f" ({copy.tolist()} -> {returned.tolist()}): return a copy, not a live"
                        " view of a buffer you update"
                    )
            for p in trainer.params():
                if not _finite(p):
                    raise AssertionError(f"{where}: the model's parameters became non-finite")

    def single_task(self) -> None:
        """T = 1 is plain training: finite weights and updates."""
        trainer = self.trainer(1)
        for step in range(3):
            out = trainer.step()
            _check_update(out.update, trainer.weighter, out.inp, 1, f"T=1, step {step}")

    def equivariance(self, t: int) -> None:
        """Relabelling the tasks permutes the weights and leaves the update unchanged."""
        traits = self.resolved_traits(t)
        limit = traits.equivariant_max_tasks
        if limit is not None and t > limit:
            raise SkipCheck(f"declares permutation equivariance only up to T={limit}")
        perm = [t - 1, *range(t - 1)]
        base, permuted = self.trainer(t), self.trainer(t, perm=perm)
        for step in range(6):  # lockstep: Update.grad may live in the step's scratch buffer
            a, b = base.step(), permuted.step()
            try:
                torch.testing.assert_close(
                    b.update.weights, a.update.weights[perm], rtol=traits.rtol, atol=traits.atol
                )
                if a.update.grad is not None and b.update.grad is not None:
                    torch.testing.assert_close(
                        b.update.grad, a.update.grad, rtol=traits.rtol, atol=traits.atol
                    )
            except AssertionError as exc:
                raise AssertionError(
                    f"T={t}, step {step}: relabelling the tasks by {perm} should give weights"
                    f" {a.update.weights[perm].tolist()} (and the same update), got"
                    f" {b.update.weights.tolist()}; a method that depends on task order or on a"
                    f" per-position random init must declare it"
                    f" (WeighterTraits.equivariant_max_tasks). {exc}"
                ) from None

    def state_roundtrip(self, t: int) -> None:
        """``state_dict`` survives ``torch.save``/``torch.load(weights_only=True)`` and loads
        into a fresh weighter (another seed) to the same state."""
        trainer = self.trainer(t)
        trainer.run(5)
        try:
            state = roundtrip(trainer.weighter.state_dict())
        except Exception as exc:
            raise AssertionError(
                f"T={t}: state_dict does not load with torch.load(weights_only=True):"
                f" {type(exc).__name__}: {exc} (keep state in tensors, parameters and buffers)"
            ) from None
        fresh = self.trainer(t, init_seed=1).weighter
        fresh.load_state_dict(state)
        _state_equal(state, fresh.state_dict(), f"T={t}, after load_state_dict")

    def resume(self, t: int) -> None:
        """A run stopped and resumed from a checkpoint (mid-epoch, at an epoch boundary)
        continues bit-identically to the uninterrupted run."""
        full = self.trainer(t)
        reference = full.run(8)
        for stop in (3, 4):
            part = self.trainer(t)
            part.run(stop)
            state = part.state_dict()
            resumed = self.trainer(t, init_seed=1)  # a fresh process: new weighter and optimizer
            resumed.load_state_dict(state)
            continued = resumed.run(8 - stop)
            for k, (a, b) in enumerate(zip(reference[stop:], continued)):
                if not (torch.equal(a.update.weights, b.update.weights)
                        and torch.equal(a.losses, b.losses)):
                    raise AssertionError(
                        f"T={t}, resumed at step {stop}: step {stop + k} differs from the"
                        f" uninterrupted run (weights {a.update.weights.tolist()} vs"
                        f" {b.update.weights.tolist()}); is some state outside state_dict?"
                    )
            for a, b in zip(full.params(), resumed.params()):
                if not torch.equal(a, b):
                    raise AssertionError(f"T={t}, resumed at step {stop}: parameters differ")
            _state_equal(full.weighter.state_dict(), resumed.weighter.state_dict(),
                         f"T={t}, resumed at step {stop}")

    def inputs_untouched(self, t: int) -> None:
        """With ``grads_scratch=False`` every input tensor comes back as it was given; with the
        trainer's scratch buffer the answer is the same."""
        out = self.trainer(t).step()
        src = out.inp
        grads = None
        if src.grads is not None:
            shift = torch.linspace(-1, 1, src.grads.numel()).view_as(src.grads)
            grads = src.grads.clone().add_(shift)
        loss_path = self.build(task_names(t)).needs.grads in ("none", "last_layer")
        answers: list[Update] = []
        for scratch in (False, True) if grads is not None else (False,):
            trainer = self.trainer(t)  # a fresh weighter at the same state
            given = {
                "losses": src.losses.detach().clone().requires_grad_(loss_path),
                "features": None if src.features is None else src.features.detach().clone(),
                "grads": None if grads is None else grads.clone(),
                "metrics": None if src.metrics is None else src.metrics.clone(),
            }
            pristine = {k: None if v is None else v.detach().clone() for k, v in given.items()}
            inp = WeighterInput(**given, step=src.step, epoch=src.epoch, grads_scratch=scratch)
            update = trainer.weighter.combine(inp)
            if update.loss is not None and update.loss.requires_grad:
                update.loss.backward()
            answers.append(update)
            if scratch:
                continue
            for key, before in pristine.items():
                after = given[key]
                if before is not None and after is not None and not torch.equal(
                    after.detach(), before
                ):
                    raise AssertionError(
                        f"T={t}: combine modified WeighterInput.{key} although grads_scratch"
                        " was False (only the trainer's scratch buffer may be overwritten)"
                    )
        if len(answers) == 2:
            a, b = answers
            for field_name in ("weights", "grad"):
                x, y = getattr(a, field_name), getattr(b, field_name)
                if x is None or y is None:
                    continue
                if not torch.allclose(x.detach(), y.detach(), rtol=1e-5, atol=1e-6):
                    raise AssertionError(
                        f"T={t}: Update.{field_name} differs between grads_scratch=False and"
                        " True on the same input"
                    )

    def heads_descend(self) -> None:
        """Through the real GradientEngine, every head's gradient is a descent direction for
        its own loss (also where the shared coefficients go negative)."""
        for case in HEAD_CASES:
            engine, _, model, tasks, batch = head_engine(self.cls, self.options, case)
            own = own_head_gradients(model, tasks, batch)
            model.zero_grad(set_to_none=True)
            result = engine.backward(batch, step=0, epoch=0)
            for task, g in zip(tasks, own):
                got = head_grad(model, task.name)
                if got is None:
                    raise AssertionError(f"case {case}: the head of {task.name} got no gradient")
                if not _finite(got):
                    raise AssertionError(f"case {case}: non-finite gradient on {task.name}'s head")
                dot = float(got @ g)
                if dot < -1e-6 * float(got.norm() * g.norm()):
                    raise AssertionError(
                        f"case {case}: the head of {task.name} is trained against its own loss"
                        f" (gradient . own-loss gradient = {dot:.3g}; weights"
                        f" {result.weights.tolist()}); return Update.head_weights >= 0"
                    )

    def ddp_declaration(self, t: int) -> None:
        """Needs, options and state that let every rank compute the same update (see
        :func:`weighter_checks`)."""
        cls = self.cls
        if not (isinstance(cls, type) and issubclass(cls, Weighter)):
            raise AssertionError(f"{cls!r} is not a subclass of mtlkit.Weighter")
        if getattr(cls, "__abstractmethods__", None):
            raise AssertionError(f"abstract methods left: {sorted(cls.__abstractmethods__)}")
        if not (isinstance(cls.Options, type) and issubclass(cls.Options, Options)):
            raise AssertionError("Options must subclass mtlkit.Options (pydantic, extra=forbid)")
        names = task_names(t)
        opts = validate_options(cls, self.options, names)
        again = type(opts).model_validate_json(opts.model_dump_json())
        if again != opts:
            raise AssertionError(
                f"options do not survive a JSON round trip (the resolved config every rank and"
                f" every resume reads): {opts!r} -> {again!r}"
            )
        _check_needs(cls.needs, "the class's needs")
        a = build_weighter(cls, self.options, names, seed=0, setup=synthetic_setup(t))
        _check_needs(a.needs, "the instance's needs")
        a2 = build_weighter(cls, self.options, names, seed=0, setup=synthetic_setup(t))
        _state_equal(a.state_dict(), a2.state_dict(), "two constructions under one seed")
        b = build_weighter(cls, self.options, names, seed=1, setup=synthetic_setup(t))
        for kind, ta, tb in _tensors(a, b):
            if ta.shape != tb.shape or ta.dtype != tb.dtype:
                raise AssertionError(
                    f"{kind} shapes or dtypes depend on the random seed ({ta.shape}, {ta.dtype}"
                    f" vs {tb.shape}, {tb.dtype}): rank 0's cannot be broadcast to the others"
                )
        own = {id(p) for p in a.parameters()}
        grouped = [p for g in a.param_groups() for p in g["params"]]
        if any(id(p) not in own for p in grouped) or len({id(p) for p in grouped}) != len(grouped):
            raise AssertionError(
                "param_groups() must list each of the weighter's own parameters at most once and"
                " nothing else (their gradients are all-reduced through weighter.parameters())"
            )
        # what mtlkit.build.sync_weighter does at start: rank 0's parameters and buffers everywhere
        with torch.no_grad():
            for _, ta, tb in _tensors(a, b):
                tb.copy_(ta)
        runs = []
        for w, seed in ((a, 11), (b, 23)):
            with seeded(seed):  # ranks' global generators differ
                runs.append(_drive(w, lambda s, w=w: synthetic_input(w, "random", t, s), 3, t,
                                   f"T={t}, rank seeded {seed}"))
        for step, (ua, ub) in enumerate(zip(*runs)):
            for field_name in ("weights", "grad", "loss"):
                x, y = getattr(ua, field_name), getattr(ub, field_name)
                if (x is None) != (y is None) or (x is not None and not torch.equal(x, y)):
                    raise AssertionError(
                        f"T={t}, step {step}: two ranks with rank 0's parameters and buffers and"
                        f" the same inputs returned different Update.{field_name}: the weighter"
                        " keeps state outside its parameters/buffers or draws from the global"
                        " random generator"
                    )


def _check_needs(needs: Any, what: str) -> None:
    if not isinstance(needs, Needs):
        raise AssertionError(f"{what} is {needs!r}, not an mtlkit.weighter.Needs")
    if needs.grads not in get_args(GradSource):
        raise AssertionError(f"{what}: grads={needs.grads!r}, not one of {get_args(GradSource)}")
    for f in fields(Needs):
        if f.name != "grads" and not isinstance(getattr(needs, f.name), bool):
            raise AssertionError(f"{what}: {f.name}={getattr(needs, f.name)!r} is not a bool")


def _tensors(a: nn.Module, b: nn.Module) -> Iterator[tuple[str, Tensor, Tensor]]:
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    ba, bb = dict(a.named_buffers()), dict(b.named_buffers())
    if set(pa) != set(pb) or set(ba) != set(bb):
        raise AssertionError("the weighter's parameter or buffer names depend on the random seed")
    for name in pa:
        yield f"parameter {name}", pa[name], pb[name]
    for name in ba:
        yield f"buffer {name}", ba[name], bb[name]


def weighter_checks(
    cls: type[Weighter],
    options: Sequence[OptionsLike] = ({},),
    num_tasks: Sequence[int] = (2, 3),
    *,
    traits: TraitsLike = None,
    name: str | None = None,
) -> list[Check]:
    """Every conformance check of ``cls``, for each options set and each T in ``num_tasks``.

    Per options set (ids ``<name><-k=v...>-<check>[-T<t>]``):

    - ``finite-T<t>``: finite weights/update/loss, right shapes, weights recorded and detached,
      head weights >= 0, on raw random, 1e-4-scale, conflicting and near-parallel gradients and
      through 7 fake training steps (distinct and identical tasks); returned weights are never a
      live view of a buffer updated later;
    - ``single-task``: T = 1 trains;
    - ``equivariant-T<t>``: relabelling the tasks permutes the weights (skipped above the
      declared ``WeighterTraits.equivariant_max_tasks``);
    - ``state-T<t>``: ``state_dict`` round trip through ``torch.load(weights_only=True)``;
    - ``resume-T<t>``: stop at step 3 and 4, resume in a fresh weighter: bit-identical;
    - ``inputs-T<t>``: ``grads_scratch=False`` inputs come back untouched, same answer as scratch;
    - ``heads``: through the real GradientEngine each head descends its own loss;
    - ``ddp``: the DDP-safe declaration: a subclass of Weighter with ``Options`` subclassing
      ``mtlkit.Options``; the options validate and survive a JSON round trip; ``needs`` (class
      and instance) is a ``Needs`` with a known gradient source and bool flags; two
      constructions under one seed have bit-identical state and under another seed the same
      parameter/buffer names, shapes and dtypes (rank 0's can be broadcast); ``param_groups``
      holds only the weighter's own parameters (so their gradients are all-reduced); and two
      instances given rank 0's parameters and buffers, fed the same inputs under different
      global random states, return bit-identical updates (no hidden per-process state).
    """
    label = name or cls.__name__
    out: list[Check] = []
    for opts in options:
        case = _Case(cls, opts, traits)
        prefix = f"{label}{options_id(opts)}"
        out.append(Check(f"{prefix}-ddp", lambda c=case: c.ddp_declaration(max(num_tasks))))
        for t in num_tasks:
            out += [
                Check(f"{prefix}-finite-T{t}", lambda c=case, t=t: c.finite(t)),
                Check(f"{prefix}-equivariant-T{t}", lambda c=case, t=t: c.equivariance(t)),
                Check(f"{prefix}-state-T{t}", lambda c=case, t=t: c.state_roundtrip(t)),
                Check(f"{prefix}-resume-T{t}", lambda c=case, t=t: c.resume(t)),
                Check(f"{prefix}-inputs-T{t}", lambda c=case, t=t: c.inputs_untouched(t)),
            ]
        out.append(Check(f"{prefix}-single-task", case.single_task))
        out.append(Check(f"{prefix}-heads", case.heads_descend))
    return out


def check_weighter(
    cls: type[Weighter],
    options: Sequence[OptionsLike] = ({},),
    num_tasks: Sequence[int] = (2, 3),
    *,
    traits: TraitsLike = None,
    name: str | None = None,
) -> None:
    """Run :func:`weighter_checks`; raise one AssertionError naming every failed check."""
    run_checks(
        weighter_checks(cls, options, num_tasks, traits=traits, name=name),
        f"weighter {name or cls.__qualname__}",
    )


__all__ = [
    "GRAD_KINDS",
    "HEAD_CASES",
    "FakeTrainer",
    "StepOut",
    "WeighterTraits",
    "build_weighter",
    "check_weighter",
    "head_engine",
    "head_grad",
    "head_problem",
    "own_head_gradients",
    "raw_grads",
    "resolve_traits",
    "roundtrip",
    "seeded",
    "synthetic_input",
    "task_names",
    "weighter_checks",
]
