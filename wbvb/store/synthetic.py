"""Synthetic teacher outputs with the shape statistics of real causal LMs, and students near them.

For the fidelity tests and the store benchmark: the compact codes are only worth their bytes if
the losses of a student that is already close to the teacher (a trained one, where an error in
the stored signal matters most) stay within 1e-3. So the tensors copy what the codes must cope
with: peaked next-token distributions (one dominant token most of the time, a long tail),
attention with a sink on the first key and a bias towards recent keys under a causal mask, and
hidden states with a few large outlier features and a massive activation at the first position.
"""
from __future__ import annotations

import torch

OUTLIER_DIMS = 4  # features with ~20x the typical magnitude, as in LLM.int8's analysis
OUTLIER_SCALE = 20.0
MASSIVE_SCALE = 200.0  # first position's activation in two of them ("massive activations")


def teacher_logits(n: int, vocab: int, gen: torch.Generator) -> torch.Tensor:
    """[n, vocab] logits whose softmax puts 30-99% on one token and spreads the rest over a long tail."""
    z = 1.5 * torch.randn(n, vocab, generator=gen)
    top = torch.randint(0, vocab, (n,), generator=gen)
    boost = 4 + 8 * torch.rand(n, generator=gen)
    z[torch.arange(n), top] += boost
    return z


def teacher_hidden(n: int, dim: int, gen: torch.Generator) -> torch.Tensor:
    """[n, dim] states: unit-scale features with per-token scale, a few outlier dims, a massive first token."""
    h = torch.randn(n, dim, generator=gen) * torch.exp(0.3 * torch.randn(n, 1, generator=gen))
    dims = torch.arange(min(OUTLIER_DIMS, dim)) * max(dim // OUTLIER_DIMS, 1)
    signs = torch.where(torch.rand(len(dims), generator=gen) < 0.5, -1.0, 1.0)
    h[:, dims] += signs * OUTLIER_SCALE * (1 + 0.2 * torch.randn(n, len(dims), generator=gen))
    h[0, dims[:2]] = signs[:2] * MASSIVE_SCALE
    return h


def attention_scores(heads: int, n: int, gen: torch.Generator) -> torch.Tensor:
    """[heads, n, n] pre-softmax scores: content noise, a sink on key 0, a recency bias."""
    q = torch.arange(n)
    dist = (q[:, None] - q[None, :]).clamp_min(0).float()
    scores = 1.5 * torch.randn(heads, n, n, generator=gen) - 0.15 * dist
    scores[..., 0] += 3.0
    return scores


def causal_softmax(scores: torch.Tensor) -> torch.Tensor:
    n = scores.shape[-1]
    return torch.softmax(scores.masked_fill(~torch.tril(torch.ones(n, n, dtype=torch.bool)), float("-inf")), -1)


def teacher_row(n: int, vocab: int, k: int, dim: int, heads: int, hidden_stride: int, attention_stride: int,
                gen: torch.Generator) -> dict:
    """One row's fp32 teacher outputs, full resolution (``*_full``) and as the generator stores them."""
    logits = teacher_logits(n, vocab, gen)
    vals, ids = torch.log_softmax(logits, -1).topk(k, -1)
    hidden = teacher_hidden(n, dim, gen)
    scores = attention_scores(heads, n, gen)
    attn = causal_softmax(scores)
    return {"logits": logits, "ids": ids, "logp": vals, "hidden_full": hidden, "scores": scores,
            "hidden": hidden[None, ::hidden_stride].contiguous(),  # [layers=1, n/stride, dim]
            "attention": attn[None, :, ::attention_stride, ::attention_stride].contiguous()}


def near_student(row: dict, gen: torch.Generator, logit_noise: float = 0.5, hidden_noise: float = 0.3,
                 score_noise: float = 0.5) -> dict:
    """A student close to the teacher: KL ~0.1 nat per token, hidden MSE ~0.09, attention score noise 0.5."""
    logits = row["logits"] + logit_noise * torch.randn(row["logits"].shape, generator=gen)
    hidden = row["hidden_full"] + hidden_noise * torch.randn(row["hidden_full"].shape, generator=gen)
    attn = causal_softmax(row["scores"] + score_noise * torch.randn(row["scores"].shape, generator=gen))
    return {"logits": logits, "hidden": hidden, "attention": attn}
