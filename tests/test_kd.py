"""Sparse top-k KD: hand values, equality with dense KL, divergences, vocabulary padding, gradients."""
import math

import pytest
import torch
import torch.nn.functional as F

from wbvb.train import kd


TEMPERATURES = [0.5, 1.0, 2.0, 4.0]
DIVERGENCES = ["forward_kl", "reverse_kl", "jsd"]


@pytest.mark.parametrize("T", TEMPERATURES)
def test_k_equal_vocab_is_dense_kl_at_any_temperature(T):
    g = torch.Generator().manual_seed(3)
    s_logits, t_logits = torch.randn(2, 5, 7, generator=g), torch.randn(2, 5, 7, generator=g)
    vals, ids = torch.log_softmax(t_logits, -1).topk(7, -1)
    answer = torch.tensor([[0, 1, 1, 1, 0], [0, 0, 1, 1, 1]], dtype=torch.bool)
    got = kd.topk_kd_loss(s_logits, ids, vals, answer, temperature=T)
    kl = F.kl_div(torch.log_softmax(s_logits / T, -1), torch.log_softmax(t_logits / T, -1), log_target=True,
                  reduction="none").sum(-1)[:, :-1]
    expected = kl[answer[:, 1:]].mean() * T * T
    assert got.item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("T", TEMPERATURES)
@pytest.mark.parametrize("kind", DIVERGENCES)
def test_student_equal_to_teacher_gives_zero_at_every_temperature(T, kind):
    g = torch.Generator().manual_seed(11)
    logits = torch.randn(2, 6, 50, generator=g) * 2
    vals, ids = torch.log_softmax(logits, -1).topk(5, -1)  # k < V: a real tail bucket
    answer = torch.ones(2, 6, dtype=torch.bool)
    assert kd.topk_kd_loss(logits, ids, vals, answer, temperature=T, divergence_kind=kind).item() == \
        pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("T", TEMPERATURES)
def test_hand_case_identical_student_is_zero(T):
    # p = (0.6, 0.3, 0.1), k = 2: the earlier rule gave T^2 KL = 0.1296 at T = 2 (tail kept at 0.1)
    lp = torch.log(torch.tensor([0.6, 0.3, 0.1]))
    logits = lp.expand(1, 2, 3)
    ids = torch.tensor([0, 1]).expand(1, 2, 2)
    vals = lp[:2].expand(1, 2, 2)
    got = kd.topk_kd_loss(logits, ids, vals, torch.tensor([[False, True]]), temperature=T)
    assert got.item() == pytest.approx(0.0, abs=5e-6)  # float32 rounding; the earlier rule: 0.0194..1.26


def _dense_bucket_kd(logits, ids, vals, answer, T):
    """The k + 1 category rule written densely: full log-softmax, tail = log-sum-exp of the rest."""
    logp = torch.log_softmax(logits, -1)[:, :-1][answer[:, 1:]]
    i, t_val = ids[:, :-1][answer[:, 1:]], vals[:, :-1][answer[:, 1:]]
    rest = logp.masked_fill(F.one_hot(i, logp.size(-1)).sum(-2).bool(), float("-inf")).logsumexp(-1, keepdim=True)
    s = torch.log_softmax(torch.cat([logp.gather(-1, i), rest], -1) / T, -1)
    t = torch.cat([t_val, torch.log1p(-t_val.exp().sum(-1, keepdim=True))], -1)
    t = torch.log_softmax(t / T, -1)
    return (t.exp() * (t - s)).sum(-1).mean() * T * T


@pytest.mark.parametrize("T,chunk", [(0.5, 1), (2.0, 3), (4.0, 100)])
def test_chunked_tail_loss_value_and_gradient_equal_the_dense_formula(T, chunk):
    g = torch.Generator().manual_seed(12)
    logits = torch.randn(2, 6, 30, generator=g, requires_grad=True)
    vals, ids = torch.log_softmax(torch.randn(2, 6, 30, generator=g) * 2, -1).topk(4, -1)
    answer = torch.tensor([[0, 1, 1, 0, 1, 1], [0, 0, 1, 1, 1, 0]], dtype=torch.bool)
    got = kd.topk_kd_loss(logits, ids, vals, answer, temperature=T, chunk=chunk)
    got.backward()
    sparse = logits.grad.clone()
    logits.grad = None
    ref = _dense_bucket_kd(logits, ids, vals, answer, T)
    ref.backward()
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)
    assert torch.allclose(sparse, logits.grad, atol=1e-6)


def test_tail_column_is_the_exact_mass_of_the_other_tokens_with_its_gradient():
    g = torch.Generator().manual_seed(13)
    logits = torch.randn(2, 4, 12, generator=g, requires_grad=True)
    ids = torch.stack([torch.randperm(12, generator=g)[:3] for _ in range(8)]).view(2, 4, 3)
    b_idx, t_idx = torch.tensor([0, 1, 1]), torch.tensor([2, 0, 3])
    w = torch.randn(3, 4, generator=g)
    (kd.student_logprobs_at(logits, b_idx, t_idx, ids[b_idx, t_idx], 2.0, chunk=2, tail=True) * w).sum().backward()
    sparse = logits.grad.clone()
    logits.grad = None
    logp = torch.log_softmax(logits / 2.0, -1)[b_idx, t_idx]
    sel = F.one_hot(ids[b_idx, t_idx], 12).sum(-2).bool()
    ref = torch.cat([logp.gather(-1, ids[b_idx, t_idx]), logp.masked_fill(sel, float("-inf")).logsumexp(-1, True)], -1)
    (ref * w).sum().backward()
    assert torch.allclose(sparse, logits.grad, atol=1e-6)


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
