"""Distillation losses for causal LMs. All reductions are means over the tokens that count.

Positions: ``logits[:, t]`` predicts token ``t+1``; the teacher's stored top-k at position ``t``
is its distribution over token ``t+1``. ``answer_mask[b, t]`` marks answer *tokens*, so the
positions that predict them are ``answer_mask[:, 1:]`` aligned with ``logits[:, :-1]``.
Means are over answer tokens (task, KD) or real tokens (alignment), never over padding, so a
loss does not depend on how much padding a batch carries. Masks select (``torch.where``, boolean
indexing) rather than multiply: 0 * NaN is NaN, so a NaN or Inf at a padded position would
otherwise reach the loss or its gradient.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from wbvb.train.alignment import HeadMap, head_map


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.bool()
    return torch.where(mask, values, 0.0).sum() / mask.sum().clamp_min(1)


def answer_positions(answer_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, position) of every position that predicts an answer token, row-major: where the task
    and KD losses read the logits (``answer_mask[:, 1:]``, as logits[:, t] predicts token t+1)."""
    return answer_mask[:, 1:].nonzero(as_tuple=True)


def task_loss(logits: torch.Tensor, input_ids: torch.Tensor, answer_mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the answer tokens, shifted for a causal LM.

    ``logits`` is [B, T, V], or [N, V] already taken at ``answer_positions(answer_mask)``."""
    if logits.dim() == 2:
        b, t = answer_positions(answer_mask)
        nll = F.cross_entropy(logits.float(), input_ids[b, t + 1], reduction="sum")
        return nll / max(b.numel(), 1)
    pred = logits[:, :-1].float()
    target = input_ids[:, 1:]
    nll = F.cross_entropy(pred.reshape(-1, pred.size(-1)), target.reshape(-1), reduction="none")
    return _masked_mean(nll.view_as(target), answer_mask[:, 1:])


def _strided(x: torch.Tensor, stride: int, n: int, axes: tuple[int, ...]) -> torch.Tensor:
    """Keep every ``stride``-th position on ``axes`` (as the teacher store did), first ``n`` of them."""
    index = [slice(None)] * x.dim()
    for a in axes:
        index[a] = slice(None, None, stride)
    x = x[tuple(index)]
    for a in axes:
        x = x.narrow(a, 0, n)
    return x


def sequence_cka(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Linear CKA of each sequence's real tokens: ([B] values, [B] whether the sequence has >= 2).

    Per sequence b over its n_b real tokens: <Kx, Ky>_F / (||Kx||_F ||Ky||_F), with Kx = Xc Xc^T
    the Gram matrix of its centred states (the HSIC form; equal to ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)). 1 for identical
    states, invariant to orthogonal transforms and isotropic scaling of either side.
    Computed on Gram matrices, so the cost is n^2 per sequence whatever the two widths.
    """
    keep = mask.bool()[..., None]
    count = keep.sum(1).clamp_min(1)

    def gram(z):
        z = torch.where(keep, z, 0.0)
        z = torch.where(keep, z - z.sum(1, keepdim=True) / count[:, None], 0.0)
        return z @ z.transpose(1, 2)

    kx, ky = gram(x), gram(y)
    cross = (kx * ky).sum((1, 2))
    norm = kx.pow(2).sum((1, 2)).sqrt() * ky.pow(2).sum((1, 2)).sqrt()
    return cross / norm.clamp_min(1e-12), mask.bool().sum(1) >= 2


def hidden_loss(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, projector: torch.nn.Module | None,
                attention_mask: torch.Tensor, stride: int = 1, kind: str = "mse") -> torch.Tensor:
    """Alignment of one student block's states to one stored teacher block, at the stored positions.

    mse: mean squared error of projector(student) vs teacher, per token averaged over dims;
    cosine: 1 - cosine(projector(student), teacher) per token; cka: 1 - linear CKA of each
    sequence over its real tokens, averaged over the sequences with two or more (no projector), so
    it does not depend on how a batch is split into micro-batches. Padding never counts.
    """
    n = teacher_hidden.size(1)
    s = _strided(student_hidden, stride, n, (1,)).float()
    mask = _strided(attention_mask, stride, n, (1,)).bool()
    t = teacher_hidden.float()
    if kind == "cka":
        cka, valid = sequence_cka(s, t, mask)
        return torch.where(valid, 1.0 - cka, 0.0).sum() / valid.sum().clamp_min(1)
    s, t = s[mask], t[mask]  # [real tokens, dims]: padded positions never enter the arithmetic
    p = projector(s) if projector is not None else s
    if p.size(-1) != t.size(-1):
        raise ValueError(f"hidden_loss '{kind}': student states have {p.size(-1)} dims, teacher {t.size(-1)}; "
                         "give a projector (mse/cosine) or use cka")
    if kind == "mse":
        per_pos = (p - t).pow(2).mean(-1)
    elif kind == "cosine":
        per_pos = 1.0 - F.cosine_similarity(p, t, dim=-1, eps=1e-8)
    else:
        raise ValueError(f"unknown hidden loss '{kind}': choose mse | cosine | cka")
    return per_pos.sum() / max(per_pos.numel(), 1)


def _row_kl(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """KL(teacher row || student row) per query row, each renormalised over its kept keys (the
    others already 0)."""
    s = s / s.sum(-1, keepdim=True).clamp_min(1e-12)
    t = t / t.sum(-1, keepdim=True).clamp_min(1e-12)
    return (torch.xlogy(t, t) - torch.xlogy(t, s.clamp_min(1e-12))).sum(-1)


def attention_loss(student_attn: torch.Tensor, teacher_attn: torch.Tensor, attention_mask: torch.Tensor,
                   stride: int = 1, heads: HeadMap | None = None, kind: str = "mse",
                   row_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Alignment of attention maps over the causal window of real tokens (strided like the store).

    mse: mean squared error of probabilities over valid (query, key) pairs; kl: KL on attention
    rows, each row renormalised over its valid keys (strided maps drop keys), mean over real
    query rows. Heads are first averaged into common groups (``heads``; grouped by default).
    ``row_mask`` [B, n] marks the query rows the store kept (``attention_rows: answer``); others
    are left out.
    """
    n = teacher_attn.size(-1)
    s = _strided(student_attn, stride, n, (2, 3)).float()
    heads = heads or head_map("grouped", [], s.size(1), teacher_attn.size(1))
    s, t = heads.apply(s, teacher_attn.float())
    real = _strided(attention_mask, stride, n, (1,)).bool()
    causal = torch.tril(torch.ones(n, n, dtype=torch.bool, device=s.device))
    query = real if row_mask is None else real & row_mask[:, :n].to(real.device).bool()
    mask = query[:, None, :, None] & real[:, None, None, :] & causal  # [B, 1, n, n], broadcast over groups
    s, t = torch.where(mask, s, 0.0), torch.where(mask, t, 0.0)
    groups = s.size(1)
    if kind == "mse":
        return (s - t).pow(2).sum() / (mask.sum() * groups).clamp_min(1)
    if kind == "kl":
        rows = query[:, None, :]
        return torch.where(rows, _row_kl(s, t), 0.0).sum() / (rows.sum() * groups).clamp_min(1)
    raise ValueError(f"unknown attention loss '{kind}': choose mse | kl")


WEIGHT_OF = {"task": "alpha", "kd": "beta", "hidden": "gamma_hidden", "attention": "gamma_attention"}
ALIGNMENT_PARTS = ("hidden", "attention")


def balance_scales(parts: dict[str, torch.Tensor], policy: str) -> dict[str, torch.Tensor]:
    """Per-part factors (no gradient) applied before the weights; kd_magnitude sizes each alignment
    term like the KD term, so gamma means the same across distill types and loss kinds."""
    scales = {k: torch.ones((), device=v.device) for k, v in parts.items()}
    if policy == "kd_magnitude" and "kd" in parts:
        kd = parts["kd"].detach().abs()
        for k in ALIGNMENT_PARTS:
            if k in parts:
                scales[k] = kd / parts[k].detach().abs().clamp_min(1e-12)
    return scales


def weighted_parts(parts: dict[str, torch.Tensor], weights, policy: str = "none") -> dict[str, torch.Tensor]:
    """Each part times its weight (and balancing scale): the summands of the total loss."""
    scales = balance_scales(parts, policy)
    return {k: getattr(weights, WEIGHT_OF[k]) * scales[k] * v for k, v in parts.items()}


TUNING_KEYS = {"task": "loss.alpha", "kd": "loss.beta (or loss.temperature)",
               "hidden": "loss.gamma_hidden (or loss.hidden_loss)",
               "attention": "loss.gamma_attention (or loss.attention_loss)"}
SCALE_RATIO = 10.0


def scale_imbalance(weighted: dict[str, float], ratio: float = SCALE_RATIO) -> str:
    """'' unless the largest weighted term exceeds the smallest non-zero one by more than ``ratio``
    times; then a sentence naming both, their values and the config keys that set their sizes."""
    sizes = {k: abs(v) for k, v in weighted.items() if math.isfinite(v) and v != 0}
    if len(sizes) < 2:
        return ""
    big, small = max(sizes, key=sizes.get), min(sizes, key=sizes.get)
    if sizes[big] <= ratio * sizes[small]:
        return ""
    balance = " or set loss.balancing=kd_magnitude" if "kd" in sizes and big in ALIGNMENT_PARTS else ""
    return (f"the weighted {big} term ({sizes[big]:.4g}) is {sizes[big] / sizes[small]:.3g}x the weighted {small} "
            f"term ({sizes[small]:.4g}) at the first optimizer step, so training follows {big} almost alone; "
            f"change {TUNING_KEYS[big]} or {TUNING_KEYS[small]}{balance}")


def combine(parts: dict[str, torch.Tensor], weights, policy: str = "none") -> torch.Tensor:
    """L = alpha*task + beta*KD + gamma_hidden*hidden + gamma_attention*attention (as the type uses)."""
    return sum(weighted_parts(parts, weights, policy).values())
