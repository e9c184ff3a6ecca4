"""Small solvers shared by the gradient-based weighters.

Everything here works on the T x T Gram matrix ``K = G G^T`` of the per-task gradients, never on
the [T, D] buffer itself, so the cost of a solver does not grow with the model.

- :func:`gram` and :func:`combine_rows` are the only O(T D) operations (on the device).
- :func:`min_norm_2` is the closed form of the two-task min-norm problem, in torch on the device
  (no host synchronisation).
- :func:`min_norm_simplex`, :func:`cagrad_weights`, :func:`nash_weights` and :func:`project_simplex`
  are float64 numpy routines for tiny host-side matrices: the caller moves the T x T Gram matrix to
  the CPU once per step (one device synchronisation of T^2 numbers) and the answer back.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def flat(grads: Tensor) -> Tensor:
    """``[T, ...]`` gradients as a ``[T, N]`` view (no copy for contiguous buffers)."""
    return grads.reshape(grads.shape[0], -1)


GRAM_BLOCK = 1 << 12


def gram(grads: Tensor) -> Tensor:
    """``G G^T`` of the ``[T, ...]`` gradients, in float32 at least (float64 stays float64).

    Computed blockwise: the D columns are cut into blocks of 4096, one batched product gives the
    per-block T x T Gram matrices, which are summed in float64. A single float32 ``[T, D] @ [D, T]``
    over D ~ 1e7 loses about 1e-3 relative precision (and, on the CPU, runs at a fraction of the
    memory bandwidth); the blocked form is ~1e-8 accurate and reads the buffer once.
    """
    g = flat(grads)
    if g.dtype not in (torch.float32, torch.float64):
        g = g.float()
    t, d = g.shape
    nb = d // GRAM_BLOCK
    if nb < 2:
        return g @ g.T
    main = g[:, : nb * GRAM_BLOCK].view(t, nb, GRAM_BLOCK).transpose(0, 1)
    parts = torch.bmm(main, main.transpose(1, 2))  # [nb, T, T]
    acc = parts.dtype if g.device.type == "mps" else torch.float64
    k = parts.sum(0, dtype=acc)
    tail = g[:, nb * GRAM_BLOCK :]
    if tail.shape[1]:
        k = k + (tail @ tail.T).to(acc)
    return k.to(g.dtype)


def combine_rows(weights: Tensor, grads: Tensor, out: Tensor | None = None) -> Tensor:
    """``sum_i w_i g_i`` over the rows of ``grads`` ``[T, ...]``, shaped like one row.

    Written into ``out`` when given, which may be ``grads[0]`` itself: the trainer hands its
    per-step buffer over as scratch (``WeighterInput.grads_scratch``), so the combined gradient
    then costs no D-sized allocation at all (on the CPU a fresh D-sized result per step also pays
    the page faults again, as the allocator returns big blocks to the OS). One multiply and T-1
    fused multiply-adds with on-device weights: no host synchronisation.
    """
    g = flat(grads)
    w = weights.to(g.dtype)
    dst = torch.empty_like(g[0]) if out is None else out.view(-1)
    torch.mul(g[0], w[0], out=dst)  # exact aliasing (dst is g[0]) is allowed for elementwise ops
    for i in range(1, g.shape[0]):
        dst.addcmul_(g[i], w[i])
    return dst.view(grads.shape[1:])


def combine_input_rows(weights: Tensor, grads: Tensor, scratch: bool) -> Tensor:
    """:func:`combine_rows` over row 0 of ``grads`` when the caller gave it as scratch."""
    return combine_rows(weights, grads, flat(grads)[0] if scratch else None)


def to_host(*tensors: Tensor) -> list[np.ndarray]:
    """Move tiny tensors to float64 numpy with ONE device-to-host copy (one synchronisation)."""
    sizes = [t.numel() for t in tensors]
    packed = torch.cat([t.detach().reshape(-1).to(torch.float64) for t in tensors]).cpu().numpy()
    out, offset = [], 0
    for t, n in zip(tensors, sizes):
        out.append(packed[offset : offset + n].reshape(tuple(t.shape)))
        offset += n
    return out


def to_device(array: np.ndarray, like: Tensor) -> Tensor:
    """A host float64 array back onto ``like``'s device as float32 (non-blocking host copy)."""
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(
        like.device, non_blocking=True
    )


# --- the min-norm point of a convex hull (MGDA) ------------------------------------------------


def min_norm_2(k: Tensor) -> Tensor:
    """Closed form of ``min_{a in [0,1]} ||a g_1 + (1-a) g_2||^2`` from the 2 x 2 Gram matrix.

    ``a = clip((K22 - K12) / (K11 + K22 - 2 K12), 0, 1)``; equal gradients give ``a = 1/2``.
    Pure tensor ops: runs on the device with no host synchronisation.
    """
    k11, k12, k22 = k[0, 0], k[0, 1], k[1, 1]
    den = k11 + k22 - 2 * k12
    tiny = torch.finfo(k.dtype).eps * (k11 + k22) + torch.finfo(k.dtype).tiny
    a = ((k22 - k12) / torch.where(den > tiny, den, torch.ones_like(den))).clamp(0.0, 1.0)
    a = torch.where(den > tiny, a, torch.full_like(a, 0.5))
    return torch.stack([a, 1 - a])


def min_norm_simplex(
    k: np.ndarray, max_iter: int = 250, tol: float = 1e-12, start: np.ndarray | None = None
) -> np.ndarray:
    """``argmin_{a in simplex} a^T K a``: Wolfe's nearest-point algorithm on the Gram matrix.

    The MGDA subproblem (Sener & Koltun 2018 use Frank-Wolfe). Wolfe's method ("Finding the
    nearest point in a polytope", Math. Programming 1976) keeps a "corral" S of vertices, takes
    the min-norm point of their affine hull (a small KKT solve) and steps back into the convex
    hull when that point leaves it; it terminates after finitely many corrals with the exact
    answer, where Frank-Wolfe only converges sublinearly. Optimality: ``(K a)_j >= a^T K a`` for
    every vertex j, up to ``tol`` relative to the trace. ``k`` is a float64 host array;
    ``max_iter`` bounds the major plus minor cycles; ``start`` (a point of the simplex) seeds the
    corral with its support, which makes a re-solve after a small change of ``k`` cheap.
    """
    t = k.shape[0]
    if t == 1:
        return np.ones(1)
    scale = max(float(np.trace(k)) / t, 1e-300)
    kn = k / scale
    if start is not None and start.shape == (t,) and np.all(start >= 0) and start.sum() > 0:
        corral = [int(i) for i in np.flatnonzero(start > 0)]
        lam = start[corral] / start[corral].sum()
    else:
        corral = [int(np.argmin(np.diag(kn)))]
        lam = np.ones(1)
    iters = 0
    while iters < max_iter:
        # minor cycles: the affine min-norm point of the corral, kept inside the convex hull
        while iters < max_iter and len(corral) > 1:
            iters += 1
            m = len(corral)
            kkt = np.zeros((m + 1, m + 1))
            kkt[:m, :m] = kn[np.ix_(corral, corral)]
            kkt[:m, m] = 1.0
            kkt[m, :m] = 1.0
            rhs = np.zeros(m + 1)
            rhs[m] = 1.0
            try:
                mu = np.linalg.solve(kkt, rhs)[:m]
            except np.linalg.LinAlgError:
                mu = np.linalg.lstsq(kkt, rhs, rcond=None)[0][:m]
            if not np.all(np.isfinite(mu)):
                mu = np.linalg.lstsq(kkt, rhs, rcond=None)[0][:m]
            if np.all(mu > 1e-14):
                lam = mu / mu.sum()
                break
            neg = mu <= 1e-14
            theta = float(np.min(lam[neg] / np.maximum(lam[neg] - mu[neg], 1e-300)))
            lam = lam + min(max(theta, 0.0), 1.0) * (mu - lam)
            keep = lam > 1e-14
            if not np.any(keep):
                keep[int(np.argmax(lam))] = True
            corral = [c for c, kp in zip(corral, keep) if kp]
            lam = lam[keep] / lam[keep].sum()
        # major cycle: optimal, or add the most improving vertex
        iters += 1
        a = np.zeros(t)
        a[corral] = lam
        ka = kn @ a
        j = int(np.argmin(ka))
        if float(a @ ka) - ka[j] <= tol or j in corral:
            break
        corral.append(j)
        lam = np.append(lam, 0.0)
    a = np.zeros(t)
    a[corral] = np.maximum(lam, 0.0)
    return a / a.sum()


# --- projections and the CAGrad / Nash-MTL subproblems -----------------------------------------


def project_simplex(v: np.ndarray) -> np.ndarray:
    """Euclidean projection onto ``{x >= 0, sum x = 1}`` (sort-based, Held et al. 1974)."""
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - 1.0
    idx = np.arange(1, v.size + 1)
    rho = int(np.nonzero(u - css / idx > 0)[0][-1])
    return np.maximum(v - css[rho] / (rho + 1.0), 0.0)


def cagrad_weights_2(k: Tensor, c: float) -> Tensor:
    """Closed form of CAGrad's dual for T = 2, in torch on the device (no host sync).

    With ``w = (p, 1 - p)``, ``delta = g_1 - g_2``, ``A = |delta|^2``, ``B = g_2 . delta``,
    ``C = |g_2|^2``, ``rho = c ||g_0||`` and ``kappa = -delta . g_0 / rho``, the objective
    ``f(p) = g_w . g_0 + rho ||g_w||`` is convex in p and stationary where
    ``(B + A p) / ||g_w|| = kappa``, i.e. ``||g_w||^2 = (AC - B^2) / (A - kappa^2)`` and
    ``p = (kappa ||g_w|| - B) / A`` when ``kappa^2 < A``; otherwise ``f`` is monotone on [0, 1]
    and the answer is the endpoint that the sign of ``f'`` points to. Clipping to [0, 1] is exact
    for a convex function of one variable.
    """
    k = k.to(torch.float64) if k.device.type != "mps" else k
    k11, k12, k22 = k[0, 0], k[0, 1], k[1, 1]
    big_a = k11 + k22 - 2 * k12
    big_b = k12 - k22
    big_c = k22
    g0g0 = (k11 + k22 + 2 * k12) / 4
    rho = c * g0g0.clamp_min(0).sqrt()
    dg0 = (k11 - k22) / 2  # delta . g_0
    tiny = torch.finfo(k.dtype).tiny
    eps = torch.finfo(k.dtype).eps * (k11 + k22) + tiny
    kappa = -dg0 / rho.clamp_min(tiny)
    interior = (big_a > eps) & (rho > tiny) & (kappa * kappa < big_a)
    det = (big_a * big_c - big_b * big_b).clamp_min(0)
    s = (det / (big_a - kappa * kappa).clamp_min(tiny)).sqrt()
    p_in = ((kappa * s - big_b) / big_a.clamp_min(tiny)).clamp(0, 1)
    # monotone case: f'(p) = delta . g_0 + rho (B + A p)/||g_w|| has the sign of delta . g_0 +
    # rho sign(kappa) sqrt(A) ... everywhere; decreasing f -> p = 1, increasing -> p = 0
    slope = dg0 + rho * torch.sign(kappa) * big_a.clamp_min(0).sqrt()
    p_edge = torch.where(slope < 0, torch.ones_like(slope), torch.zeros_like(slope))
    p = torch.where(interior, p_in, p_edge)
    p = torch.where(big_a > eps, p, torch.full_like(p, 0.5))  # identical gradients: any p
    return torch.stack([p, 1 - p])


def cagrad_weights(k: np.ndarray, c: float, max_iter: int = 100, tol: float = 1e-10) -> np.ndarray:
    """CAGrad's dual: ``argmin_{w in simplex} w^T K b + rho sqrt(w^T K w)``, ``b = 1/T``,
    ``rho = c ||g_0||``, ``||g_0||^2 = b^T K b`` (``g_0`` the mean gradient).

    Replaces the reference code's ``scipy.optimize.minimize`` with an exact reduction to MGDA's
    problem: since ``rho ||x|| = min_{tau > 0} rho (||x||^2 / tau + tau) / 2``, the minimiser also
    minimises ``w^T K b + rho ||g_w||^2 / (2 tau)`` for ``tau = ||g_{w*}||``, and on the simplex
    that is the min-norm point of the hull of ``{g_i + (tau / rho) g_0}`` (Gram
    ``K + mu (q 1^T + 1 q^T) + mu^2 ||g_0||^2``, ``q = K b``, ``mu = tau / rho``). Alternating the
    two minimisations of this jointly convex function (``tau <- ||g_w||``) converges monotonically;
    each min-norm problem is warm-started from the previous answer. Stops when ``tau`` changes by
    less than ``tol`` (relative).
    """
    t = k.shape[0]
    if t == 1:
        return np.ones(1)
    scale = max(float(np.trace(k)) / t, 1e-300)
    kn = k / scale
    b = np.full(t, 1.0 / t)
    q = kn @ b
    g0sq = max(float(b @ q), 0.0)
    rho = c * np.sqrt(g0sq)
    if rho <= 0:
        return min_norm_simplex(kn)  # c = 0: the dual is linear, any minimiser of w^T q
    w = b.copy()
    tau = float(np.sqrt(max(w @ kn @ w, 0.0)))
    qq = np.add.outer(q, q)
    for _ in range(max_iter):
        mu = tau / rho
        w = min_norm_simplex(kn + mu * qq + mu * mu * g0sq, start=w)
        new_tau = float(np.sqrt(max(w @ kn @ w, 0.0)))
        if abs(new_tau - tau) <= tol * max(tau, 1e-300):
            break
        tau = new_tau
    return w


def nash_weights(
    k: np.ndarray, start: np.ndarray | None = None, max_iter: int = 20, tol: float = 1e-14,
    reg: float = 1e-6,
) -> np.ndarray:
    """Positive solution of the Nash-MTL equation ``K a = 1 / a`` (Navon et al. 2022).

    ``K a = 1/a`` is the stationarity condition of the strictly convex, self-concordant potential
    ``f(a) = a^T K a / 2 - sum_i log a_i`` on ``a > 0``; damped Newton on ``f`` (step
    ``1 / (1 + lambda)`` while the Newton decrement ``lambda`` exceeds 1/4, full steps after)
    converges from any positive start and stays positive, replacing the reference's cvxpy
    concave-convex procedure. ``K`` gets ``reg * I`` so that ``f`` stays bounded below when the
    gradients are linearly dependent (at a Pareto-stationary point the equation has no solution:
    the weights grow like ``1/sqrt(reg)`` while the update ``sum a_i g_i`` shrinks to zero).
    ``start`` warm-starts from the previous step's weights; the start (or ones) is first moved to
    the minimum of ``f`` along its ray, ``a <- a sqrt(T / a^T K a)`` (exact line minimisation), so a
    start of the wrong scale (the first step's ones, gradients that shrank) costs no iterations.
    """
    t = k.shape[0]
    kr = k + reg * np.eye(t)
    usable = start is not None and start.shape == (t,) and bool(np.all(np.isfinite(start)))
    if usable and start is not None and bool(np.all(start > 0)):
        a = start.astype(np.float64).copy()
    else:
        a = np.ones(t)
    quad = float(a @ kr @ a)
    if np.isfinite(quad) and quad > 0:
        a = a * np.sqrt(t / quad)
    for _ in range(max_iter):
        ka = kr @ a
        grad = ka - 1.0 / a
        hess = kr + np.diag(1.0 / (a * a))
        try:
            newton = np.linalg.solve(hess, grad)
        except np.linalg.LinAlgError:
            break
        lam2 = float(grad @ newton)
        if not np.isfinite(lam2) or lam2 / 2 <= tol:
            break
        lam = np.sqrt(max(lam2, 0.0))
        a = a - (1.0 / (1.0 + lam) if lam > 0.25 else 1.0) * newton
        a = np.maximum(a, 1e-300)
    return a
