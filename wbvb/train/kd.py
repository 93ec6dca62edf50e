"""Token-level KD on the teacher's stored top-k, without a vocabulary-sized teacher tensor.

Only answer positions are touched. The student's tempered log-probs at the k teacher ids come
from a custom autograd function that runs the vocabulary-wide softmax in chunks of positions
and recomputes it in backward, so the loss's extra memory is one chunk, not batch x seq x vocab.

Distributions are compared over k + 1 buckets: the k teacher tokens and one tail bucket with
the rest of the mass. The teacher's tail cannot be tempered from stored log-probs, so at T != 1
its stored tail mass is kept and the k entries are tempered among themselves; the student's
buckets are exact tempered probabilities. With k = vocabulary this is the dense tempered KL.
"""
from __future__ import annotations

import math

import torch


class _TemperedLogProbsAt(torch.autograd.Function):
    """log_softmax(logits[b, t, :vocab] / T) at ``ids``, for the (b, t) positions listed."""

    @staticmethod
    def forward(ctx, logits, b_idx, t_idx, ids, temperature: float, vocab: int, chunk: int):
        out = torch.empty(ids.shape, dtype=torch.float32, device=logits.device)
        lse = torch.empty(ids.shape[0], dtype=torch.float32, device=logits.device)
        for s in range(0, ids.shape[0], chunk):
            z = logits[b_idx[s:s + chunk], t_idx[s:s + chunk], :vocab].float()
            if temperature != 1.0:
                z.div_(temperature)
            lse[s:s + chunk] = torch.logsumexp(z, dim=-1)
            out[s:s + chunk] = z.gather(-1, ids[s:s + chunk]) - lse[s:s + chunk, None]
        ctx.save_for_backward(logits, b_idx, t_idx, ids, lse)
        ctx.temperature, ctx.vocab, ctx.chunk = temperature, vocab, chunk
        return out

    @staticmethod
    def backward(ctx, grad_out):
        logits, b_idx, t_idx, ids, lse = ctx.saved_tensors
        T, vocab, chunk = ctx.temperature, ctx.vocab, ctx.chunk
        grad = torch.zeros_like(logits)
        for s in range(0, ids.shape[0], chunk):
            sl = slice(s, s + chunk)
            z = logits[b_idx[sl], t_idx[sl], :vocab].float()
            if T != 1.0:
                z.div_(T)
            g = grad_out[sl]
            # d/dz of (z_id - lse(z)) summed with weights g: g scattered at ids minus softmax * sum(g)
            z.sub_(lse[sl, None]).exp_().mul_(-g.sum(-1, keepdim=True))
            z.scatter_add_(-1, ids[sl], g)
            if T != 1.0:
                z.div_(T)
            grad[b_idx[sl], t_idx[sl], :vocab] = z.to(grad.dtype)
        return grad, None, None, None, None, None, None


def student_logprobs_at(logits: torch.Tensor, b_idx: torch.Tensor, t_idx: torch.Tensor, ids: torch.Tensor,
                        temperature: float = 1.0, vocab: int | None = None, chunk: int = 64) -> torch.Tensor:
    """[N, k] tempered student log-probs at the teacher's ids, over the first ``vocab`` logits."""
    vocab = vocab or logits.size(-1)
    return _TemperedLogProbsAt.apply(logits, b_idx, t_idx, ids.long(), float(temperature), int(vocab), int(chunk))


def log_tail(logp_k: torch.Tensor) -> torch.Tensor:
    """log(1 - sum(exp(logp_k))): the mass outside the top-k, as one extra bucket."""
    lse = torch.logsumexp(logp_k, dim=-1, keepdim=True).clamp(max=-1e-6)
    return torch.log(-torch.expm1(lse))


def teacher_buckets(t_logp: torch.Tensor, temperature: float, tail: bool) -> torch.Tensor:
    """Teacher log-probs over k (+1 tail) buckets at temperature T (tail mass kept as stored)."""
    tempered = torch.log_softmax(t_logp / temperature, dim=-1)
    if not tail:
        return tempered
    log_tail_mass = log_tail(t_logp)
    log_top_mass = torch.log((-torch.expm1(log_tail_mass)).clamp_min(1e-30))  # log(1 - tail)
    return torch.cat([tempered + log_top_mass, log_tail_mass], dim=-1)


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def divergence(log_p: torch.Tensor, log_q: torch.Tensor, kind: str, beta: float = 0.5) -> torch.Tensor:
    """Per-position divergence of student Q from teacher P (both log-probs over the same buckets)."""
    if kind == "forward_kl":
        return _kl(log_p, log_q)
    if kind == "reverse_kl":
        return _kl(log_q, log_p)
    if kind == "jsd":
        log_m = torch.logsumexp(torch.stack([log_p + math.log(beta), log_q + math.log(1 - beta)]), dim=0)
        return beta * _kl(log_p, log_m) + (1 - beta) * _kl(log_q, log_m)
    raise ValueError(f"unknown KD divergence '{kind}': choose forward_kl | reverse_kl | jsd")


def topk_kd_loss(student_logits: torch.Tensor, topk_ids: torch.Tensor, topk_logprobs: torch.Tensor,
                 answer_mask: torch.Tensor, temperature: float = 1.0, divergence_kind: str = "forward_kl",
                 jsd_beta: float = 0.5, tail_bucket: bool = True, vocab: int | None = None,
                 chunk: int = 64) -> torch.Tensor:
    """T^2 * mean over answer tokens of D(teacher || student) on the stored top-k.

    Position t's logits and stored top-k both describe token t+1, so the answer tokens are
    ``answer_mask[:, 1:]`` at positions ``[:, :-1]``. ``vocab`` truncates embedding rows padded
    past the tokenizer's vocabulary. ``tail_bucket=False`` is the earlier scripts' definition
    (teacher renormalised over its top-k, student log-probs over the whole vocabulary).
    ``student_logits`` is [B, T, V], or [N, V] already taken at those answer positions (row-major).
    """
    pos = answer_mask[:, 1:].nonzero(as_tuple=True)
    if pos[0].numel() == 0:
        return student_logits.sum() * 0.0
    ids = topk_ids[:, :-1][pos].long()
    t_logp = topk_logprobs[:, :-1][pos].float()
    if student_logits.dim() == 2:  # gathered rows: one "sequence" of N positions
        rows = torch.arange(ids.size(0), device=ids.device)
        s_logp = student_logprobs_at(student_logits[None], torch.zeros_like(rows), rows, ids, temperature, vocab,
                                     chunk)
    else:
        s_logp = student_logprobs_at(student_logits, pos[0], pos[1], ids, temperature, vocab, chunk)
    log_p = teacher_buckets(t_logp, temperature, tail_bucket)
    log_q = torch.cat([s_logp, log_tail(s_logp)], dim=-1) if tail_bucket else s_logp
    per_token = divergence(log_p, log_q, divergence_kind, jsd_beta)
    return per_token.mean() * (temperature * temperature)
