"""Token-level KD on the teacher's stored top-k, without a vocabulary-sized teacher tensor.

Only answer positions are touched. The student's log-probs at the k teacher ids (and the log
mass of every other token) come from a custom autograd function that runs the vocabulary-wide
softmax in chunks of positions and recomputes it in backward, so the loss's extra memory is
one chunk, not batch x seq x vocab.

KD at temperature T compares k + 1 categories: the k stored ids and one tail bucket holding the
rest of the mass. Both sides are built by one rule, from their T = 1 masses m_1..m_k and
m_tail = 1 - sum(m_i): q_c = m_c^(1/T) / sum_c' m_c'^(1/T) over the k + 1 categories. The
teacher's stored log-probs fix its side; the student's come from its own full softmax. The loss
is therefore 0 exactly when the student's masses on the k ids (hence its tail) equal the
teacher's, at every T, and with k = vocabulary (no tail) it is the dense tempered KL. The
teacher's full-vocabulary tail cannot be tempered token by token from stored values, so the
tail is tempered as one category on both sides. Tail masses below ``TAIL_FLOOR`` (finer than a
sum of k stored probabilities resolves) count as ``TAIL_FLOOR`` on both sides.
"""
from __future__ import annotations

import math

import torch

TAIL_FLOOR = 1e-6


class _LogProbsAt(torch.autograd.Function):
    """log_softmax(logits[b, t, :vocab] / T) at ``ids`` for the (b, t) positions listed and, with
    ``tail``, one more column: the log of the summed probability of every token not in ``ids``."""

    @staticmethod
    def forward(ctx, logits, b_idx, t_idx, ids, temperature: float, vocab: int, chunk: int, tail: bool):
        k = ids.shape[1]
        out = torch.empty(ids.shape[0], k + int(tail), dtype=torch.float32, device=logits.device)
        lse = torch.empty(ids.shape[0], dtype=torch.float32, device=logits.device)
        lse_rest = torch.full_like(lse, float("-inf"))
        for s in range(0, ids.shape[0], chunk):
            sl = slice(s, s + chunk)
            z = logits[b_idx[sl], t_idx[sl], :vocab].float()
            if temperature != 1.0:
                z.div_(temperature)
            lse[sl] = torch.logsumexp(z, dim=-1)
            out[sl, :k] = z.gather(-1, ids[sl]) - lse[sl, None]
            if tail:  # the other tokens' mass summed directly, not as 1 - sum(top-k): exact when small
                lse_rest[sl] = torch.logsumexp(z.scatter_(-1, ids[sl], float("-inf")), dim=-1)
                out[sl, k] = lse_rest[sl] - lse[sl]
        ctx.save_for_backward(logits, b_idx, t_idx, ids, lse, lse_rest)
        ctx.temperature, ctx.vocab, ctx.chunk, ctx.tail = temperature, vocab, chunk, tail
        return out

    @staticmethod
    def backward(ctx, grad_out):
        logits, b_idx, t_idx, ids, lse, lse_rest = ctx.saved_tensors
        T, vocab, chunk, k = ctx.temperature, ctx.vocab, ctx.chunk, ids.shape[1]
        grad = torch.zeros_like(logits)
        for s in range(0, ids.shape[0], chunk):
            sl = slice(s, s + chunk)
            z = logits[b_idx[sl], t_idx[sl], :vocab].float()
            if T != 1.0:
                z.div_(T)
            g = grad_out[sl, :k]
            total = g.sum(-1, keepdim=True)
            rest = None
            if ctx.tail:
                # d(lse_rest - lse)/dz = softmax over the other tokens (0 at ids) - softmax over all
                g_rest = grad_out[sl, k:]
                total = total + g_rest
                base = torch.where(torch.isfinite(lse_rest[sl]), lse_rest[sl], 0.0)[:, None]
                rest = z.scatter(-1, ids[sl], float("-inf")).sub_(base).exp_().mul_(g_rest)
            # d/dz of (z_id - lse(z)) summed with weights g: g scattered at ids minus softmax * sum(g)
            z.sub_(lse[sl, None]).exp_().mul_(-total)
            z.scatter_add_(-1, ids[sl], g)
            if rest is not None:
                z.add_(rest)
            if T != 1.0:
                z.div_(T)
            grad[b_idx[sl], t_idx[sl], :vocab] = z.to(grad.dtype)
        return grad, None, None, None, None, None, None, None


def student_logprobs_at(logits: torch.Tensor, b_idx: torch.Tensor, t_idx: torch.Tensor, ids: torch.Tensor,
                        temperature: float = 1.0, vocab: int | None = None, chunk: int = 64,
                        tail: bool = False) -> torch.Tensor:
    """[N, k] tempered student log-probs at the teacher's ids, over the first ``vocab`` logits;
    [N, k + 1] with ``tail``: the last column is the log mass of all other tokens."""
    vocab = vocab or logits.size(-1)
    return _LogProbsAt.apply(logits, b_idx, t_idx, ids.long(), float(temperature), int(vocab), int(chunk), tail)


def log_tail(logp_k: torch.Tensor) -> torch.Tensor:
    """log(1 - sum(exp(logp_k))): the mass outside the stored top-k, from the stored values."""
    lse = torch.logsumexp(logp_k, dim=-1, keepdim=True).clamp(max=math.log1p(-TAIL_FLOOR))
    return torch.log(-torch.expm1(lse))


def tempered_buckets(log_mass: torch.Tensor, temperature: float) -> torch.Tensor:
    """Log-probs over the categories at T from their T = 1 log masses: q_c ∝ m_c^(1/T), the one
    rule both sides use."""
    return torch.log_softmax(log_mass / temperature, dim=-1)


def teacher_buckets(t_logp: torch.Tensor, temperature: float, tail: bool) -> torch.Tensor:
    """Teacher log-probs over k (+ 1 tail) categories at temperature T, from its stored log-probs."""
    if not tail:
        return torch.log_softmax(t_logp / temperature, dim=-1)  # the earlier scripts' renormalised top-k
    return tempered_buckets(torch.cat([t_logp, log_tail(t_logp)], dim=-1), temperature)


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
    """T^2 * mean over answer tokens of D(teacher || student) over the k + 1 categories (module doc).

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
        logits, b_idx, t_idx = student_logits[None], torch.zeros_like(rows), rows
    else:
        logits, b_idx, t_idx = student_logits, pos[0], pos[1]
    if not tail_bucket:
        log_p = teacher_buckets(t_logp, temperature, tail=False)
        log_q = student_logprobs_at(logits, b_idx, t_idx, ids, temperature, vocab, chunk)
    elif ids.size(-1) >= (vocab or student_logits.size(-1)):  # k = vocabulary: no tail, the dense KL at T
        log_p = tempered_buckets(t_logp, temperature)
        log_q = tempered_buckets(student_logprobs_at(logits, b_idx, t_idx, ids, 1.0, vocab, chunk), temperature)
    else:
        log_p = teacher_buckets(t_logp, temperature, tail=True)
        s = student_logprobs_at(logits, b_idx, t_idx, ids, 1.0, vocab, chunk, tail=True)
        s = torch.cat([s[:, :-1], s[:, -1:].clamp_min(math.log(TAIL_FLOOR))], dim=-1)
        log_q = tempered_buckets(s, temperature)
    per_token = divergence(log_p, log_q, divergence_kind, jsd_beta)
    return per_token.mean() * (temperature * temperature)
