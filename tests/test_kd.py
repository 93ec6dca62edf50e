"""Sparse top-k KD: hand values, equality with dense KL, divergences, vocabulary padding, gradients."""
import math

import pytest
import torch
import torch.nn.functional as F

from wbvb.train import kd


def _dense_kl(s_logits, t_logits, answer, T=1.0):
    t = torch.log_softmax(t_logits / T, -1)
    s = torch.log_softmax(s_logits / T, -1)
    kl = (t.exp() * (t - s)).sum(-1)[:, :-1]
    return kl[answer[:, 1:]].mean() * T * T


@pytest.mark.parametrize("T", [1.0, 2.0])
def test_k_equal_vocab_is_dense_kl_at_any_temperature(T):
    g = torch.Generator().manual_seed(3)
    s_logits, t_logits = torch.randn(2, 5, 7, generator=g), torch.randn(2, 5, 7, generator=g)
    vals, ids = torch.log_softmax(t_logits, -1).topk(7, -1)
    answer = torch.tensor([[0, 1, 1, 1, 0], [0, 0, 1, 1, 1]], dtype=torch.bool)
    got = kd.topk_kd_loss(s_logits, ids, vals, answer, temperature=T)
    assert got.item() == pytest.approx(_dense_kl(s_logits, t_logits, answer, T).item(), rel=1e-4, abs=1e-6)


def test_reverse_kl_and_jsd_two_bucket_hand_values():
    # teacher top-1 p=0.5 (tail 0.5); student uniform over 4 tokens: buckets (0.25, 0.75)
    student = torch.zeros(1, 2, 4)
    ids = torch.tensor([[[0], [0]]])
    logp = torch.log(torch.tensor([[[0.5], [0.5]]]))
    answer = torch.tensor([[False, True]])
    rev = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)  # = 0.130812
    got = kd.topk_kd_loss(student, ids, logp, answer, divergence_kind="reverse_kl")
    assert got.item() == pytest.approx(rev, rel=1e-5)
    m = (0.375, 0.625)  # beta=0.5 mixture
    jsd = 0.5 * (0.5 * math.log(0.5 / m[0]) + 0.5 * math.log(0.5 / m[1])) + \
        0.5 * (0.25 * math.log(0.25 / m[0]) + 0.75 * math.log(0.75 / m[1]))
    got = kd.topk_kd_loss(student, ids, logp, answer, divergence_kind="jsd", jsd_beta=0.5)
    assert got.item() == pytest.approx(jsd, rel=1e-5)


def test_no_tail_mode_is_the_dense_reconstruction_with_minus_inf_fill():
    g = torch.Generator().manual_seed(4)
    s_logits, t_logits = torch.randn(1, 6, 50, generator=g), torch.randn(1, 6, 50, generator=g)
    vals, ids = torch.log_softmax(t_logits, -1).topk(5, -1)
    answer = torch.ones(1, 6, dtype=torch.bool)
    dense_t = torch.full_like(t_logits, float("-inf")).scatter(-1, ids, vals)
    T = 2.0
    p = torch.softmax(dense_t / T, -1)
    s = torch.log_softmax(s_logits / T, -1)
    expected = (torch.xlogy(p, p) - p * s).sum(-1)[:, :-1].mean() * T * T
    got = kd.topk_kd_loss(s_logits, ids, vals, answer, temperature=T, tail_bucket=False)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_padded_embedding_rows_are_ignored():
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(1, 4, 6, generator=g)
    vals, ids = torch.log_softmax(torch.randn(1, 4, 6, generator=g), -1).topk(3, -1)
    answer = torch.ones(1, 4, dtype=torch.bool)
    padded = torch.cat([logits, torch.full((1, 4, 2), 30.0)], -1)  # 2 junk rows past the vocabulary
    a = kd.topk_kd_loss(logits, ids, vals, answer)
    b = kd.topk_kd_loss(padded, ids, vals, answer, vocab=6)
    assert b.item() == pytest.approx(a.item(), rel=1e-6)


@pytest.mark.parametrize("T,chunk", [(1.0, 1), (2.0, 3), (0.5, 100)])
def test_chunked_gradient_equals_autograd_of_the_plain_formula(T, chunk):
    g = torch.Generator().manual_seed(6)
    logits = torch.randn(2, 5, 9, generator=g, requires_grad=True)
    ids = torch.randint(0, 9, (2, 5, 3), generator=g)
    b_idx, t_idx = torch.tensor([0, 0, 1, 1]), torch.tensor([1, 3, 0, 4])
    w = torch.randn(4, 3, generator=g)
    (kd.student_logprobs_at(logits, b_idx, t_idx, ids[b_idx, t_idx], T, chunk=chunk) * w).sum().backward()
    sparse = logits.grad.clone()
    logits.grad = None
    ref = torch.log_softmax(logits / T, -1)[b_idx, t_idx].gather(-1, ids[b_idx, t_idx])
    (ref * w).sum().backward()
    assert torch.allclose(sparse, logits.grad, atol=1e-6)


def test_no_answer_tokens_gives_zero_with_a_graph():
    logits = torch.randn(1, 3, 5, requires_grad=True)
    ids = torch.zeros(1, 3, 2, dtype=torch.long)
    loss = kd.topk_kd_loss(logits, ids, torch.full((1, 3, 2), -1.0), torch.zeros(1, 3, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and logits.grad.abs().sum() == 0


def test_forward_kl_matches_torch_kl_div_on_buckets():
    p = torch.log(torch.tensor([[0.2, 0.3, 0.5]]))
    q = torch.log(torch.tensor([[0.4, 0.4, 0.2]]))
    expected = F.kl_div(q, p, log_target=True, reduction="sum")
    assert kd.divergence(p, q, "forward_kl").item() == pytest.approx(expected.item(), rel=1e-6)
