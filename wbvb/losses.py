"""Distillation losses for causal LMs. All reductions are means over the tokens that count.

Positions: ``logits[:, t]`` predicts token ``t+1``; the teacher's stored top-k at position ``t``
is its distribution over token ``t+1``. ``answer_mask[b, t]`` marks answer *tokens*, so the
positions that predict them are ``answer_mask[:, 1:]`` aligned with ``logits[:, :-1]``.
Means are over answer tokens (task, KD) or real tokens (alignment), never over padding, so a
loss does not depend on how much padding a batch carries.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def task_loss(logits: torch.Tensor, input_ids: torch.Tensor, answer_mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the answer tokens, shifted for a causal LM."""
    pred = logits[:, :-1].float()
    target = input_ids[:, 1:]
    nll = F.cross_entropy(pred.reshape(-1, pred.size(-1)), target.reshape(-1), reduction="none")
    return _masked_mean(nll.view_as(target), answer_mask[:, 1:])


def _log_tail(logp_k: torch.Tensor) -> torch.Tensor:
    """log(1 - sum(exp(logp_k))): the mass outside the top-k, as one extra bucket."""
    lse = torch.logsumexp(logp_k, dim=-1, keepdim=True).clamp(max=-1e-6)
    return torch.log(-torch.expm1(lse))


def topk_kd_loss(student_logits: torch.Tensor, topk_ids: torch.Tensor, topk_logprobs: torch.Tensor,
                 answer_mask: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Forward KL(teacher || student) over the teacher's k tokens plus one tail bucket.

    Never builds a vocabulary-sized teacher tensor. At T=1 the tail bucket holds 1 - sum(top-k)
    on both sides, so the loss is a true KL over a (k+1)-way partition of the vocabulary. At
    T != 1 the tail cannot be tempered from stored log-probs, so both sides are renormalised
    over the k tokens (teacher log-probs / T) and the loss is scaled by T^2.
    """
    t = temperature
    s_logp = torch.log_softmax(student_logits[:, :-1].float() / t, dim=-1)
    ids = topk_ids[:, :-1].long()
    s_k = s_logp.gather(-1, ids)
    t_k = topk_logprobs[:, :-1].float()
    if t == 1.0:
        teacher = torch.cat([t_k, _log_tail(t_k)], dim=-1)
        student = torch.cat([s_k, _log_tail(s_k)], dim=-1)
    else:
        teacher = torch.log_softmax(t_k / t, dim=-1)
        student = s_k - torch.logsumexp(s_k, dim=-1, keepdim=True)
    kl = (teacher.exp() * (teacher - student)).sum(-1)
    return _masked_mean(kl, answer_mask[:, 1:]) * (t * t)


def hidden_loss(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, projector: torch.nn.Module,
                attention_mask: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """MSE between projected student states and the teacher's, at the stored (strided) positions."""
    n = teacher_hidden.size(1)
    s = student_hidden[:, ::stride][:, :n].float()
    mask = attention_mask[:, ::stride][:, :n]
    diff = projector(s) - teacher_hidden.float()
    per_pos = (diff * diff).mean(-1)
    return _masked_mean(per_pos, mask)


def map_heads(student_attn: torch.Tensor, teacher_attn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bring both maps to one head count: average heads in groups (or all, if counts don't divide)."""
    hs, ht = student_attn.size(1), teacher_attn.size(1)
    if hs == ht:
        return student_attn, teacher_attn
    if ht % hs == 0:
        b, _, q, k = teacher_attn.shape
        return student_attn, teacher_attn.view(b, hs, ht // hs, q, k).mean(2)
    if hs % ht == 0:
        b, _, q, k = student_attn.shape
        return student_attn.view(b, ht, hs // ht, q, k).mean(2), teacher_attn
    return student_attn.mean(1, keepdim=True), teacher_attn.mean(1, keepdim=True)


def attention_loss(student_attn: torch.Tensor, teacher_attn: torch.Tensor,
                   attention_mask: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """MSE of attention probabilities over the causal window of real tokens (strided)."""
    n = teacher_attn.size(-1)
    s = student_attn[:, :, ::stride, ::stride][:, :, :n, :n].float()
    s, t = map_heads(s, teacher_attn.float())
    real = attention_mask[:, ::stride][:, :n].bool()
    causal = torch.tril(torch.ones(n, n, dtype=torch.bool, device=s.device))
    mask = real[:, None, :, None] & real[:, None, None, :] & causal
    mask = mask.expand_as(s)
    return _masked_mean((s - t) ** 2, mask)


def combine(distill_type: str, parts: dict[str, torch.Tensor], weights) -> torch.Tensor:
    """L = alpha*task + beta*KD + gamma_hidden*hidden + gamma_attention*attention (as the type uses)."""
    total = weights.alpha * parts["task"]
    if "kd" in parts:
        total = total + weights.beta * parts["kd"]
    if "hidden" in parts:
        total = total + weights.gamma_hidden * parts["hidden"]
    if "attention" in parts:
        total = total + weights.gamma_attention * parts["attention"]
    return total
