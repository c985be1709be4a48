"""The fast ListMLE behind :func:`rankclip.losses.list_mle`: one autograd function, gradient in closed form.

For one list, with π the columns ordered by the target descending (ties in tie order), x_r = P_{π(r)} − m
(m = max_j P_j, which cancels) and the tail sums t_r = Σ_{r' ≥ r} exp(x_{r'}):

    ℓ = Σ_r [log t_r − x_r],        ∂ℓ/∂P_{π(j)} = exp(x_j) · Σ_{r ≤ j} 1/t_r − 1

(the softmax of every suffix that contains π(j), summed, minus one). The gradient is computed in the
forward, in the same pass, and saved; the backward only scales it. Nothing is differentiated through a
cumulative sum, and the targets get no gradient.

Two implementations of the same formulas (``implementation``):

- ``"numba"`` (the default on CPU): one compiled pass per row, rows split over ``torch.get_num_threads()``
  threads. The order: a stable LSD radix sort of the target's bits, fed in tie order so that ties keep it
  (float32 targets: 11-bit digits of (bits << 32 | position); float64: 8-bit digits). The sums: float64 in
  exp space, shifted by the row maximum; exp by a polynomial (relative error < 2e-16) so that the loop
  vectorises, and Σ log t_r from the exponents and one log per 512 mantissas. float64 holds every exp(x_r)
  when the row spans max P − min P ≤ 600 (RankCLIP's rows span at most 2s ≤ 200); a wider row is summed
  in log space (logaddexp) instead. float32 in exp space would underflow at s = 100 (A and C have s on
  the diagonal and much less elsewhere), and float32 log space needs a sequential scan per element
  (``logcumsumexp``), the slow part of the previous implementation.
- ``"torch"`` (the default on other devices): a stable sort of the tie-permuted targets, ``logcumsumexp``
  in the input's dtype for the log tail sums, and the closed-form gradient from a second ``logcumsumexp``.

Tolerance (tests/test_losses.py, against the previous implementation, which differentiated through
``logcumsumexp``): float64 inputs agree to 1e-10 (relative and absolute), values and gradients; float32
inputs to float32 rounding, 1e-5 (relative and absolute). The numba path rounds only its result to
float32, so it is closer to the exact value than the previous float32 computation.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["list_mle_rows"]

_EXP_RANGE = 600.0  # rows whose scores span more than this are summed in log space (float64 exp underflows)


# ----------------------------------------------------------------------------------------------------
# CPU: numba kernel
# ----------------------------------------------------------------------------------------------------


# exp(x) for x in [-_EXP_RANGE, 0] without a libm call, so that LLVM vectorises the loop: x = k·ln2 + r with
# |r| ≤ ln2/2 (k rounded with the 1.5·2^52 trick), exp(r) by its Taylor polynomial of degree 12 (relative
# error < 2e-16), 2^k built from its bits.
_LOG2E = 1.4426950408889634
_LN2 = 0.6931471805599453
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_ROUND = 6755399441055744.0  # 1.5·2^52: y + _ROUND rounds y to an integer, held in the low bits
_ROUND_BITS = 0x4338000000000000
_MANTISSA = 0x000FFFFFFFFFFFFF
_ONE_BITS = 0x3FF0000000000000
_INV_FACTORIALS = tuple(1.0 / math.factorial(k) for k in range(13))


@numba.njit(nogil=True, cache=True)
def _exclusive_prefix_sum(counts):  # pragma: no cover - compiled
    """A radix pass's bucket counts become each bucket's first slot: the count of the buckets before it."""
    total = 0
    for b in range(counts.shape[0]):
        c = counts[b]
        counts[b] = total
        total += c


@numba.njit(nogil=True, cache=True)
def _sort_by_float32(target, tie_order, packed, packed_tmp, counts):  # pragma: no cover - compiled
    """``target``'s entries by value descending, ties in tie order: a stable LSD radix sort (11-bit digits)
    of (order-preserving bits of the value << 32 | position in ``tie_order``). Returns the sorted keys;
    their low 32 bits are the positions."""
    n = target.shape[0]
    bits = target.view(np.int32)
    for k in range(n):
        u = np.int64(bits[tie_order[k]])
        if u == -2147483648:  # -0.0 ties with +0.0
            u = 0
        key = (u & 0xFFFFFFFF) if u < 0 else ((~u) & 0x7FFFFFFF)  # unsigned, smaller = larger value
        packed[k] = (key << 32) | k
    counts[:, :] = 0
    for k in range(n):
        v = packed[k]
        counts[0, (v >> 32) & 2047] += 1
        counts[1, (v >> 43) & 2047] += 1
        counts[2, (v >> 54) & 1023] += 1
    for d in range(3):
        shift = 32 + 11 * d
        mask = 2047 if d < 2 else 1023  # bits 54..63
        if counts[d, (packed[0] >> shift) & mask] == n:
            continue  # one digit value for the whole row
        _exclusive_prefix_sum(counts[d])
        for k in range(n):
            v = packed[k]
            b = (v >> shift) & mask
            packed_tmp[counts[d, b]] = v
            counts[d, b] += 1
        packed, packed_tmp = packed_tmp, packed
    return packed


@numba.njit(nogil=True, cache=True)
def _sort_by_float64(target, tie_order, keys, keys_tmp, positions, positions_tmp, counts):  # pragma: no cover
    """As :func:`_sort_by_float32` for float64 values: 8-bit digits of the 64-bit key, positions alongside."""
    n = target.shape[0]
    bits = target.view(np.int64)
    for k in range(n):
        u = bits[tie_order[k]]
        if u == -9223372036854775807 - 1:  # -0.0
            u = 0
        keys[k] = u if u < 0 else ((~u) & 0x7FFFFFFFFFFFFFFF)
        positions[k] = k
    counts[:, :] = 0
    for k in range(n):
        for d in range(8):
            counts[d, (keys[k] >> (8 * d)) & 255] += 1
    for d in range(8):
        shift = 8 * d
        if counts[d, (keys[0] >> shift) & 255] == n:
            continue
        _exclusive_prefix_sum(counts[d])
        for k in range(n):
            b = (keys[k] >> shift) & 255
            p = counts[d, b]
            counts[d, b] = p + 1
            keys_tmp[p] = keys[k]
            positions_tmp[p] = positions[k]
        keys, keys_tmp = keys_tmp, keys
        positions, positions_tmp = positions_tmp, positions
    return positions


@numba.njit(nogil=True, cache=True)
def _list_mle_kernel(
    scores, targets, tie_order, start, stop, losses, grads, with_grad, grad_scale
):  # pragma: no cover
    """Rows ``start:stop``: ``losses[i]`` = ℓ_i (float64) and, if ``with_grad``,
    ``grads[i]`` = grad_scale · ∂ℓ_i/∂P_i (in the dtype of ``grads``)."""
    n = scores.shape[1]
    packed = np.empty(n, np.int64)
    packed_tmp = np.empty(n, np.int64)
    keys_tmp = np.empty(n, np.int64)
    positions_tmp = np.empty(n, np.int64)
    counts = np.empty((8, 2048), np.int64)
    order = np.empty(n, np.int64)
    x = np.empty(n, np.float64)
    e = np.empty(n, np.float64)
    tail = np.empty(n, np.float64)
    scratch = np.empty(n, np.float64)
    scratch_bits = scratch.view(np.int64)
    tail_bits = tail.view(np.int64)
    for i in range(start, stop):
        p = scores[i]
        if targets.itemsize == 4:
            positions = _sort_by_float32(targets[i], tie_order, packed, packed_tmp, counts)
            for r in range(n):
                order[r] = tie_order[positions[r] & 0xFFFFFFFF]
        else:
            positions = _sort_by_float64(
                targets[i], tie_order, packed, keys_tmp, packed_tmp, positions_tmp, counts
            )
            for r in range(n):
                order[r] = tie_order[positions[r]]
        top = -np.inf
        bottom = np.inf
        for j in range(n):
            v = np.float64(p[j])
            top = max(top, v)
            bottom = min(bottom, v)
        for r in range(n):
            x[r] = np.float64(p[order[r]]) - top
        loss = 0.0
        if top - bottom <= _EXP_RANGE:  # exp space
            for r in range(n):  # e = exp(x), vectorised (see _ROUND)
                t = x[r] * _LOG2E + _ROUND
                k = t - _ROUND
                y = (x[r] - k * _LN2_HI) - k * _LN2_LO
                q = _INV_FACTORIALS[12]
                for c in range(11, -1, -1):
                    q = q * y + _INV_FACTORIALS[c]
                e[r] = q
                scratch[r] = t
            for r in range(n):
                scratch_bits[r] = (scratch_bits[r] - _ROUND_BITS + 1023) << 52
                e[r] *= scratch[r]
            acc = 0.0
            for r in range(n - 1, -1, -1):
                acc += e[r]
                tail[r] = acc
            # Σ log t_r = (Σ exponents)·ln2 + log Π mantissas (t_r = mantissa·2^exponent, mantissa in [1, 2))
            exponents = 0
            for r in range(n):
                exponents += (tail_bits[r] >> 52) - 1023
                scratch_bits[r] = (tail_bits[r] & _MANTISSA) | _ONE_BITS
            for lo in range(0, n, 512):  # 2^512 < float64 max
                product = 1.0
                for r in range(lo, min(lo + 512, n)):
                    product *= scratch[r]
                loss += math.log(product)
            loss += exponents * _LN2
            for r in range(n):
                loss -= x[r]
            if with_grad:
                acc = 0.0
                for r in range(n):
                    acc += 1.0 / tail[r]
                    grads[i, order[r]] = grad_scale * (e[r] * acc - 1.0)
        else:  # log space: tail[r] = log t_r
            acc = -np.inf
            for r in range(n - 1, -1, -1):
                hi = max(acc, x[r])
                acc = hi + math.log1p(math.exp(min(acc, x[r]) - hi))
                tail[r] = acc
                loss += acc - x[r]
            if with_grad:
                acc = -np.inf
                for r in range(n):
                    hi = max(acc, -tail[r])
                    acc = hi + math.log1p(math.exp(min(acc, -tail[r]) - hi))
                    grads[i, order[r]] = grad_scale * (math.exp(x[r] + acc) - 1.0)
        losses[i] = loss


_POOL: ThreadPoolExecutor | None = None


def _cpu_rows(P: Tensor, Q: Tensor, tie_order: Tensor, with_grad: bool, grad_scale: float):
    global _POOL
    scores, targets = P.detach().contiguous().numpy(), Q.detach().contiguous().numpy()
    order = tie_order.to(torch.int64).contiguous().numpy()
    rows = scores.shape[0]
    losses = np.empty(rows, np.float64)
    grads = np.empty(scores.shape, scores.dtype) if with_grad else np.empty((0, 0), scores.dtype)
    threads = max(1, min(torch.get_num_threads(), rows))
    bounds = np.linspace(0, rows, threads + 1).astype(np.int64)
    args = (scores, targets, order)
    if threads == 1:
        _list_mle_kernel(*args, 0, rows, losses, grads, with_grad, grad_scale)
    else:
        if _POOL is None or _POOL._max_workers < threads:
            _POOL = ThreadPoolExecutor(threads, thread_name_prefix="list_mle")
        jobs = [
            _POOL.submit(_list_mle_kernel, *args, lo, hi, losses, grads, with_grad, grad_scale)
            for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)
        ]
        for job in jobs:
            job.result()
    return torch.from_numpy(losses), (torch.from_numpy(grads) if with_grad else None)


# ----------------------------------------------------------------------------------------------------
# Other devices: torch ops
# ----------------------------------------------------------------------------------------------------


def _torch_rows(P: Tensor, Q: Tensor, tie_order: Tensor, with_grad: bool, grad_scale: float):
    order = tie_order[torch.sort(Q[:, tie_order], dim=1, descending=True, stable=True).indices]
    x = P.gather(1, order)
    x = x - x.max(dim=1, keepdim=True).values
    log_tail = torch.logcumsumexp(x.flip(1), dim=1).flip(1)
    losses = (log_tail - x).sum(dim=1)
    if not with_grad:
        return losses, None
    grad_sorted = torch.exp(x + torch.logcumsumexp(-log_tail, dim=1)) - 1
    return losses, torch.empty_like(P).scatter_(1, order, grad_sorted * grad_scale)


_IMPLEMENTATIONS = {"numba": _cpu_rows, "torch": _torch_rows}


class _ListMLE(torch.autograd.Function):
    """mean_i ℓ_i(P, Q) with ∂/∂P computed in the forward (closed form) and saved; no gradient to Q."""

    @staticmethod
    def forward(ctx, P: Tensor, Q: Tensor, tie_order: Tensor, implementation: str) -> Tensor:
        rows = P.shape[0]
        losses, grad = _IMPLEMENTATIONS[implementation](P, Q, tie_order, ctx.needs_input_grad[0], 1.0 / rows)
        ctx.save_for_backward(grad)
        return losses.to(P.device).sum().div(rows).to(P.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor):
        (grad,) = ctx.saved_tensors
        return grad.to(grad_output.device) * grad_output, None, None, None


def list_mle_rows(P: Tensor, Q: Tensor, tie_order: Tensor, implementation: str | None = None) -> Tensor:
    """The mean over rows of ListMLE ℓ(P_i, Q_i) (see the module docstring), differentiable in ``P``.

    ``P`` and ``Q``: ``rows x list`` of the same floating dtype (float32 or float64) and device;
    ``tie_order``: a permutation of the columns, the order in which ties in ``Q`` are ranked.
    ``implementation``: ``"numba"`` (CPU only; the default there) or ``"torch"`` (the default elsewhere).
    """
    if implementation is None:
        implementation = "numba" if P.device.type == "cpu" else "torch"
    if implementation not in _IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {sorted(_IMPLEMENTATIONS)}; got {implementation!r}")
    return _ListMLE.apply(P, Q.detach(), tie_order, implementation)
