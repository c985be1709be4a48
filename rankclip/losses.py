"""The pre-training losses: CLIP, CyCLIP, ALIP and RankCLIP (see ``PAPER.md``, section "Losses").

Every loss takes the LOCAL batch of L2-normalised features (``B_local x d``) and the exponentiated logit
scale ``s``, and is computed as "local rows x global columns": the features of all ranks are gathered
with gradient, each local row uses the global batch as its list of columns, and the loss is the mean
over the local rows. DistributedDataParallel then averages the gradients over ranks, which is the
gradient of the mean over the global batch, so one rank and N ranks train the same model. This needs
the same local batch size on every rank (as ``torch.distributed.all_gather`` does).

All the loss arithmetic (similarities, cross-entropies, ranking, CyCLIP terms, ALIP gates) runs in at
least float32 with autocast disabled, whatever the precision of the features; float64 stays float64.
The features are gathered in their own dtype (half the traffic for fp16/bf16) and upcast afterwards.

Each ``forward`` returns ``(total, terms)``: ``total`` a 0-dim tensor to back-propagate, ``terms`` the
named components, detached, for logging.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
import torch.nn.functional as F
from torch import Tensor, nn

from rankclip.listmle import list_mle_rows

__all__ = [
    "LOSSES",
    "RANK_WEIGHT_SCHEDULES",
    "AlipLoss",
    "ClipLoss",
    "CyClipLoss",
    "RankClipLoss",
    "build_loss",
    "gather_features",
    "list_mle",
    "ranking_weight",
]

RANK_WEIGHT_SCHEDULES = ("code", "paper", "constant")


# ----------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------


def gather_features(*features: Tensor, rank: int, world_size: int) -> tuple[Tensor, ...]:
    """All-gather each ``B_local x d`` tensor over the default process group, with gradient.

    Returns the global tensors (``world_size * B_local`` rows, concatenated in rank order). The backward
    pass sums the gradients of every rank's loss into each rank's local slice. With ``world_size == 1``
    the inputs are returned unchanged. Tensors of the same dtype and device travel in one collective.
    """
    if world_size == 1:
        return features
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            f"gather_features: world_size={world_size} but torch.distributed is not initialised; "
            "call torch.distributed.init_process_group first, or use world_size=1"
        )
    if dist.get_world_size() != world_size or dist.get_rank() != rank:
        raise ValueError(
            f"gather_features: rank={rank}, world_size={world_size} do not match the process group "
            f"(rank {dist.get_rank()} of {dist.get_world_size()})"
        )
    first = features[0]
    packable = all(
        f.dim() == 2 and f.dtype == first.dtype and f.device == first.device and len(f) == len(first)
        for f in features
    )
    if packable and len(features) > 1:
        gathered = torch.cat(dist_fn.all_gather(torch.cat(features, dim=1)), dim=0)
        return tuple(gathered.split([f.shape[1] for f in features], dim=1))
    return tuple(torch.cat(dist_fn.all_gather(f), dim=0) for f in features)


def list_mle(scores: Tensor, targets: Tensor, tie_perm: Tensor | None = None) -> Tensor:
    """ListMLE ℓ(P, Q): Plackett-Luce negative log-likelihood of each row of ``targets``' descending order
    under ``scores`` (both ``rows x list``), averaged over rows.

    Per row i, with π_i the columns ordered by Q_i descending and m_i = max_j P_ij:
    ℓ_i = Σ_r [log Σ_{r' ≥ r} exp(P_{i,π_i(r')} − m_i) − (P_{i,π_i(r)} − m_i)], in at least float32,
    without underflow (shifted exp sums in float64, or log space). Only the order of ``targets`` is used
    (no gradient). Ties in ``targets`` keep column order; with ``tie_perm``, a permutation of the columns,
    they keep that (e.g. random) order instead. The arithmetic, its closed-form gradient and its tolerance
    are in :mod:`rankclip.listmle`.
    """
    if scores.dim() != 2 or scores.shape != targets.shape:
        raise ValueError(
            f"list_mle: scores and targets must be matrices of the same shape (rows x list); "
            f"got {tuple(scores.shape)} and {tuple(targets.shape)}"
        )
    dtype = torch.promote_types(scores.dtype, torch.float32)
    P = scores.to(dtype)
    Q = targets.detach().to(dtype)
    if tie_perm is None:
        tie_perm = torch.arange(P.shape[1], device=P.device)
    elif tie_perm.shape != (P.shape[1],):
        raise ValueError(f"list_mle: tie_perm must have {P.shape[1]} entries; got {tuple(tie_perm.shape)}")
    return list_mle_rows(P, Q, tie_perm.to(P.device))


class _Gram(torch.autograd.Function):
    """X·Xᵀ with a one-product backward, (G + Gᵀ)·X (autograd through ``X @ X.T`` takes two)."""

    @staticmethod
    def forward(ctx, X: Tensor) -> Tensor:
        ctx.save_for_backward(X)
        return X @ X.T

    @staticmethod
    def backward(ctx, G: Tensor) -> Tensor:
        (X,) = ctx.saved_tensors
        return (G + G.T) @ X


def ranking_weight(epoch: int, num_epochs: int, schedule: str = "code") -> float:
    """The weight w(e) of the ranking terms at the 1-indexed ``epoch`` of ``num_epochs`` (E).

    ``"code"`` (the authors' code): clip(3(e − 1)/(E − 1), 0, 2); ``"paper"`` (some summaries):
    clip((3e − 1)/(E − 1), 0, 2); ``"constant"``: 1. E − 1 is replaced by max(E − 1, 1).
    """
    if schedule not in RANK_WEIGHT_SCHEDULES:
        raise ValueError(
            f"schedule: unknown rank-weight schedule {schedule!r}; valid: {RANK_WEIGHT_SCHEDULES}"
        )
    if num_epochs < 1:
        raise ValueError(f"num_epochs must be >= 1; got {num_epochs}")
    if epoch < 1:
        raise ValueError(f"epoch is 1-indexed and must be >= 1; got {epoch}")
    if schedule == "constant":
        return 1.0
    numerator = 3 * (epoch - 1) if schedule == "code" else 3 * epoch - 1
    return float(min(2.0, max(0.0, numerator / max(num_epochs - 1, 1))))


def _full_precision(like: Tensor) -> AbstractContextManager:
    """Disable autocast, so that the loss arithmetic runs in the dtype we cast to."""
    return torch.autocast(device_type=like.device.type, enabled=False)


def _upcast(*tensors: Tensor) -> tuple[Tensor, ...]:
    """Each tensor in at least float32 (float64 stays float64)."""
    return tuple(t.to(torch.promote_types(t.dtype, torch.float32)) for t in tensors)


def _symmetric_cross_entropy(S: Tensor, S_t: Tensor, labels: Tensor, reduction: str = "mean") -> Tensor:
    """(CE(rows of S) + CE(rows of Sᵀ)) / 2 with the targets on the (global) diagonal."""
    return (
        F.cross_entropy(S, labels, reduction=reduction) + F.cross_entropy(S_t, labels, reduction=reduction)
    ) / 2


def _check_rank(rank: int, world_size: int) -> None:
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1; got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}); got {rank}")


def _check_non_negative(**values: float) -> None:
    for name, value in values.items():
        if not value >= 0:
            raise ValueError(f"{name} must be >= 0; got {value}")


# ----------------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------------


class ClipLoss(nn.Module):
    """Symmetric InfoNCE over S = s·I·Tᵀ with targets on the diagonal (open_clip's ``ClipLoss`` with
    ``local_loss=True, gather_with_grad=True``). Terms: ``clip``."""

    def __init__(self, rank: int = 0, world_size: int = 1):
        super().__init__()
        _check_rank(rank, world_size)
        self.rank = rank
        self.world_size = world_size

    def gather(self, *features: Tensor) -> tuple[Tensor, ...]:
        """The global batch of each local feature matrix, with gradient, in at least float32."""
        return _upcast(*gather_features(*features, rank=self.rank, world_size=self.world_size))

    def labels(self, local_batch_size: int, device: torch.device) -> Tensor:
        """The global column of each local row's positive pair."""
        return torch.arange(local_batch_size, device=device) + self.rank * local_batch_size

    def forward(
        self,
        image_features: Tensor,
        text_features: Tensor,
        logit_scale: Tensor,
        *,
        epoch: int = 1,
        caption_features: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        with _full_precision(image_features):
            I, T, s = _upcast(image_features, text_features, torch.as_tensor(logit_scale))  # noqa: E741
            I_all, T_all = self.gather(image_features, text_features)
            S, S_t = s * (I @ T_all.T), s * (T @ I_all.T)  # the local rows of S and of Sᵀ
            clip = _symmetric_cross_entropy(S, S_t, self.labels(len(I), I.device))
        return clip, {"clip": clip.detach()}


class CyClipLoss(ClipLoss):
    """CyCLIP = L_CLIP + λ_in·(1/B) Σ_jk (⟨I_j,I_k⟩ − ⟨T_j,T_k⟩)²
    + λ_cross·(1/B) Σ_jk (⟨I_j,T_k⟩ − ⟨I_k,T_j⟩)², on unscaled cosine similarities.
    Terms: ``clip``, ``cyclip_in``, ``cyclip_cross`` (before λ)."""

    def __init__(
        self, rank: int = 0, world_size: int = 1, lambda_in: float = 0.25, lambda_cross: float = 0.25
    ):
        super().__init__(rank, world_size)
        _check_non_negative(lambda_in=lambda_in, lambda_cross=lambda_cross)
        self.lambda_in = lambda_in
        self.lambda_cross = lambda_cross

    def forward(
        self,
        image_features: Tensor,
        text_features: Tensor,
        logit_scale: Tensor,
        *,
        epoch: int = 1,
        caption_features: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        with _full_precision(image_features):
            I, T, s = _upcast(image_features, text_features, torch.as_tensor(logit_scale))  # noqa: E741
            I_all, T_all = self.gather(image_features, text_features)
            cos_it, cos_ti = I @ T_all.T, T @ I_all.T  # row j: ⟨I_j,T_k⟩ and ⟨T_j,I_k⟩ = ⟨I_k,T_j⟩
            clip = _symmetric_cross_entropy(s * cos_it, s * cos_ti, self.labels(len(I), I.device))
            cyclip_in = cyclip_cross = clip.new_zeros(())
            if self.lambda_in:
                cyclip_in = (I @ I_all.T - T @ T_all.T).square().sum(dim=1).mean()
            if self.lambda_cross:
                cyclip_cross = (cos_it - cos_ti).square().sum(dim=1).mean()
            total = clip + self.lambda_in * cyclip_in + self.lambda_cross * cyclip_cross
        terms = {"clip": clip, "cyclip_in": cyclip_in, "cyclip_cross": cyclip_cross}
        return total, {name: value.detach() for name, value in terms.items()}


class AlipLoss(ClipLoss):
    """ALIP: per-sample symmetric CE of (image, raw text) and (image, synthetic caption), weighted by gates.

    Gates (no gradient, from the gathered features, float32), each with a running mean
    E ← momentum·E + (1 − momentum)·mean over the global batch, updated first (as the ALIP code does)
    and only in training mode: W_s = min(1, exp(2(⟨t,c⟩ − E_tc))); W_it = exp(2(⟨t,v⟩ − E_it)) and
    W_ic = exp(2(⟨c,v⟩ − E_ic)) where exp(2(⟨t,c⟩ − E_tc)) < 1, else 1.
    Loss = mean[W_s·W_it·CE(v,t)] + mean[W_s·W_ic·CE(v,c)]. The running means are buffers (state_dict).
    Terms: ``alip_text``, ``alip_caption`` (the two weighted means), ``clip`` (unweighted CE(v,t), for
    comparison), ``alip_w_{s,it,ic}_mean`` and ``alip_E_{tc,it,ic}``.
    """

    E_tc: Tensor
    E_it: Tensor
    E_ic: Tensor

    def __init__(self, rank: int = 0, world_size: int = 1, momentum: float = 0.99):
        super().__init__(rank, world_size)
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1); got {momentum}")
        self.momentum = momentum
        for name in ("E_tc", "E_it", "E_ic"):
            self.register_buffer(name, torch.ones((), dtype=torch.float32))

    @torch.no_grad()
    def _update_running_mean(self, name: str, similarities: Tensor) -> Tensor:
        running = getattr(self, name)
        value = running.to(similarities)
        if self.training:
            value = self.momentum * value + (1 - self.momentum) * similarities.mean()
            running.copy_(value)
        return value

    @torch.no_grad()
    def gates(self, I_all: Tensor, T_all: Tensor, C_all: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """W_s, W_it, W_ic for every sample of the global batch (updating the running means)."""
        tc, it, ic = (T_all * C_all).sum(1), (T_all * I_all).sum(1), (C_all * I_all).sum(1)
        W_s_raw = torch.exp(2 * (tc - self._update_running_mean("E_tc", tc)))
        W_it = torch.exp(2 * (it - self._update_running_mean("E_it", it)))
        W_ic = torch.exp(2 * (ic - self._update_running_mean("E_ic", ic)))
        inconsistent = W_s_raw < 1
        return (
            W_s_raw.clamp(max=1),
            torch.where(inconsistent, W_it, 1.0),
            torch.where(inconsistent, W_ic, 1.0),
        )

    def forward(
        self,
        image_features: Tensor,
        text_features: Tensor,
        logit_scale: Tensor,
        *,
        epoch: int = 1,
        caption_features: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        if caption_features is None:
            raise ValueError(
                "AlipLoss needs caption_features: the embeddings of the synthetic captions (B_local x d, "
                "from the text encoder); got None. Configure a caption column or use another loss."
            )
        if caption_features.shape != text_features.shape:
            raise ValueError(
                f"caption_features must have the shape of text_features {tuple(text_features.shape)}; "
                f"got {tuple(caption_features.shape)}"
            )
        with _full_precision(image_features):
            v, t, c, s = _upcast(
                image_features, text_features, caption_features, torch.as_tensor(logit_scale)
            )
            v_all, t_all, c_all = self.gather(image_features, text_features, caption_features)
            W_s, W_it, W_ic = self.gates(v_all.detach(), t_all.detach(), c_all.detach())
            local = slice(self.rank * len(v), (self.rank + 1) * len(v))
            labels = self.labels(len(v), v.device)
            ce_text = _symmetric_cross_entropy(s * (v @ t_all.T), s * (t @ v_all.T), labels, reduction="none")
            ce_caption = _symmetric_cross_entropy(
                s * (v @ c_all.T), s * (c @ v_all.T), labels, reduction="none"
            )
            alip_text = (W_s[local] * W_it[local] * ce_text).mean()
            alip_caption = (W_s[local] * W_ic[local] * ce_caption).mean()
            total = alip_text + alip_caption
        terms = {
            "clip": ce_text.mean(),
            "alip_text": alip_text,
            "alip_caption": alip_caption,
            "alip_w_s_mean": W_s.mean(),
            "alip_w_it_mean": W_it.mean(),
            "alip_w_ic_mean": W_ic.mean(),
            "alip_E_tc": self.E_tc.clone(),
            "alip_E_it": self.E_it.clone(),
            "alip_E_ic": self.E_ic.clone(),
        }
        return total, {name: value.detach() for name, value in terms.items()}


class RankClipLoss(ClipLoss):
    """RankCLIP = L_CLIP + w(e)·(λ_cross·L_cross + λ_in·L_in) / B, B the global list length.

    L_cross = [ℓ(S, Sᵀ) + ℓ(Sᵀ, S)]·list_scale, L_in = [ℓ(A, C) + ℓ(C, A)]·list_scale, with S = s·I·Tᵀ,
    A = s·I·Iᵀ, C = s·T·Tᵀ and ℓ = :func:`list_mle`. A term whose λ is 0 is not computed (reported as 0).
    Ties in the target rankings are broken by one permutation of the global columns per call, drawn from
    ``torch.Generator().manual_seed(tie_seed + calls)``; ``calls`` is a buffer (in the state_dict, the
    same on every rank) counting the training-mode calls. ``tie_seed=None``: ties keep column order.
    Terms: ``clip``, ``rank_cross`` (L_cross), ``rank_in`` (L_in), ``rank_weight`` (w(e)) and ``rank``
    (the added ranking term, so that total = clip + rank).
    """

    calls: Tensor

    def __init__(
        self,
        rank: int = 0,
        world_size: int = 1,
        lambda_cross: float = 1.0,
        lambda_in: float = 1.0,
        num_epochs: int = 64,
        schedule: str = "code",
        list_scale: float = 1 / 32,
        tie_seed: int | None = 0,
    ):
        super().__init__(rank, world_size)
        _check_non_negative(lambda_cross=lambda_cross, lambda_in=lambda_in)
        ranking_weight(1, num_epochs, schedule)  # validates num_epochs and schedule
        if not list_scale > 0:
            raise ValueError(f"list_scale must be > 0; got {list_scale}")
        if tie_seed is not None and not isinstance(tie_seed, int):
            raise ValueError(f"tie_seed must be an int or None; got {tie_seed!r}")
        self.lambda_cross = lambda_cross
        self.lambda_in = lambda_in
        self.num_epochs = num_epochs
        self.schedule = schedule
        self.list_scale = list_scale
        self.tie_seed = tie_seed
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))
        self._calls = 0  # host copy of `calls`, so that reading it never waits for the device

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._calls = int(self.calls)

    def tie_perm(self, num_columns: int) -> Tensor | None:
        """This call's permutation of the global columns (None without ``tie_seed``)."""
        if self.tie_seed is None:
            return None
        generator = torch.Generator().manual_seed(self.tie_seed + self._calls)
        return torch.randperm(num_columns, generator=generator)

    def forward(
        self,
        image_features: Tensor,
        text_features: Tensor,
        logit_scale: Tensor,
        *,
        epoch: int = 1,
        caption_features: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        w = ranking_weight(epoch, self.num_epochs, self.schedule)
        with _full_precision(image_features):
            I, T, s = _upcast(image_features, text_features, torch.as_tensor(logit_scale))  # noqa: E741
            I_all, T_all = self.gather(image_features, text_features)
            S = s * (I @ T_all.T)  # the local rows of S and of Sᵀ (on one rank, Sᵀ itself: one product less)
            S_t = S.T.contiguous() if self.world_size == 1 else s * (T @ I_all.T)
            clip = _symmetric_cross_entropy(S, S_t, self.labels(len(I), I.device))
            B = S.shape[1]
            perm = self.tie_perm(B)
            if perm is not None:
                perm = perm.to(S.device, non_blocking=True)
            rank_cross = rank_in = clip.new_zeros(())
            if self.lambda_cross:
                rank_cross = (list_mle(S, S_t, perm) + list_mle(S_t, S, perm)) * self.list_scale
            if self.lambda_in:
                if self.world_size == 1:  # A and C themselves, symmetric: one product each way
                    A, C = s * _Gram.apply(I), s * _Gram.apply(T)
                else:  # the local rows of A and of C
                    A, C = s * (I @ I_all.T), s * (T @ T_all.T)
                rank_in = (list_mle(A, C, perm) + list_mle(C, A, perm)) * self.list_scale
            rank = w * (self.lambda_cross * rank_cross + self.lambda_in * rank_in) / B
            total = clip + rank
        if self.training:
            self._calls += 1
            self.calls.fill_(self._calls)
        terms = {
            "clip": clip,
            "rank_cross": rank_cross,
            "rank_in": rank_in,
            "rank_weight": torch.tensor(w),
            "rank": rank,
        }
        return total, {name: value.detach() for name, value in terms.items()}


# ----------------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------------


def _with_fixed(cls: type[nn.Module], **fixed: Any) -> Callable[..., nn.Module]:
    """A factory of ``cls`` with some options fixed (the ablations); passing one of them is an error."""

    def make(**kwargs: Any) -> nn.Module:
        clash = sorted(set(kwargs) & set(fixed))
        if clash:
            raise TypeError(f"option(s) {clash} are fixed to {fixed} by this loss and cannot be passed")
        return cls(**fixed, **kwargs)

    signature = inspect.signature(cls)
    make.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[p for name, p in signature.parameters.items() if name not in fixed]
    )
    make.__name__ = f"{cls.__name__}({', '.join(f'{k}={v}' for k, v in fixed.items())})"
    return make


LOSSES: dict[str, Callable[..., nn.Module]] = {
    "clip": ClipLoss,
    "cyclip": CyClipLoss,
    "alip": AlipLoss,
    "rankclip": RankClipLoss,
    "rankclip_cross": _with_fixed(RankClipLoss, lambda_in=0.0),  # RankCLIP^C
    "rankclip_in": _with_fixed(RankClipLoss, lambda_cross=0.0),  # RankCLIP^I
}


def build_loss(name: str, **kwargs: Any) -> nn.Module:
    """The loss called ``name`` (a key of :data:`LOSSES`) with the given options."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid: {', '.join(LOSSES)}")
    factory = LOSSES[name]
    options = inspect.signature(factory).parameters
    unknown = [key for key in kwargs if key not in options]
    if unknown:
        raise TypeError(f"unknown option(s) {unknown} for loss {name!r}; valid options: {', '.join(options)}")
    return factory(**kwargs)
