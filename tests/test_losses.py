"""Golden-value tests for the losses: numbers you can check by hand."""
import math

import pytest
import torch
import torch.nn.functional as F

from wbvb.train import kd, losses
from wbvb.config import LossConfig


def test_task_loss_counts_only_answer_tokens():
    ids = torch.tensor([[0, 1, 2]])
    answer = torch.tensor([[False, False, True]])  # token 2 is the answer; logits[:, 1] predict it
    logits = torch.zeros(1, 3, 3)
    assert losses.task_loss(logits, ids, answer).item() == pytest.approx(math.log(3))
    logits[0, 0] = torch.tensor([9.0, -9.0, 0.0])  # a prompt position: must not matter
    logits[0, 2] = torch.tensor([9.0, -9.0, 0.0])  # the position after the last token: must not matter
    assert losses.task_loss(logits, ids, answer).item() == pytest.approx(math.log(3))


def test_task_loss_independent_of_padding():
    ids = torch.tensor([[0, 1, 2]])
    answer = torch.tensor([[False, True, True]])
    logits = torch.randn(1, 3, 5, generator=torch.Generator().manual_seed(0))
    base = losses.task_loss(logits, ids, answer)
    # the same row right-padded by 2, batched with a second (different) row
    ids2 = torch.tensor([[0, 1, 2, 4, 4], [3, 3, 1, 0, 4]])
    ans2 = torch.tensor([[False, True, True, False, False], [False, False, False, True, False]])
    logits2 = torch.randn(2, 5, 5, generator=torch.Generator().manual_seed(1))
    logits2[0, :3] = logits[0]
    both = losses.task_loss(logits2, ids2, ans2)
    second = -torch.log_softmax(logits2[1, 2], -1)[0]
    assert both.item() == pytest.approx((base.item() * 2 + second.item()) / 3, rel=1e-6)


def test_topk_kd_hand_value_with_tail_bucket():
    # teacher: top-1 token 0 with p=0.5 (tail 0.5); student uniform over 3 tokens: buckets (1/3, 2/3)
    student = torch.zeros(1, 2, 3)
    ids = torch.tensor([[[0], [0]]])
    logp = torch.log(torch.tensor([[[0.5], [0.5]]]))
    answer = torch.tensor([[False, True]])
    expected = 0.5 * math.log(0.5 / (1 / 3)) + 0.5 * math.log(0.5 / (2 / 3))  # = 0.0588915
    got = kd.topk_kd_loss(student, ids, logp, answer)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    assert expected == pytest.approx(0.0588915, rel=1e-5)


def test_topk_kd_equals_full_kl_when_k_is_the_vocabulary():
    g = torch.Generator().manual_seed(0)
    t_logits, s_logits = torch.randn(2, 4, 6, generator=g), torch.randn(2, 4, 6, generator=g)
    t_logp = torch.log_softmax(t_logits, -1)
    vals, ids = t_logp.topk(6, -1)
    answer = torch.tensor([[False, True, True, True], [False, False, True, False]])
    got = kd.topk_kd_loss(s_logits, ids, vals, answer)
    kl = F.kl_div(torch.log_softmax(s_logits, -1), t_logp, log_target=True, reduction="none").sum(-1)
    mask = answer[:, 1:]
    expected = kl[:, :-1][mask].mean()
    assert got.item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-6)


def test_topk_kd_zero_when_student_matches_teacher():
    logits = torch.randn(1, 5, 8, generator=torch.Generator().manual_seed(2))
    vals, ids = torch.log_softmax(logits, -1).topk(3, -1)
    answer = torch.tensor([[False, False, True, True, True]])
    assert kd.topk_kd_loss(logits, ids, vals, answer).item() == pytest.approx(0.0, abs=1e-5)


def test_topk_kd_temperature_tempers_both_sides_k_plus_one_categories_alike():
    # k=2 at T=2: teacher (0.6, 0.3, tail 0.1), student uniform over 4 tokens (0.25, 0.25, tail 0.5);
    # each side's three masses tempered as m^(1/T) and renormalised, then T^2 * KL
    student = torch.zeros(1, 2, 4)
    ids = torch.tensor([[[0, 1], [0, 1]]])
    logp = torch.log(torch.tensor([[[0.6, 0.3], [0.6, 0.3]]]))
    answer = torch.tensor([[False, True]])
    pt = [m ** 0.5 for m in (0.6, 0.3, 0.1)]
    pt = [x / sum(pt) for x in pt]
    q = [m ** 0.5 for m in (0.25, 0.25, 0.5)]
    q = [x / sum(q) for x in q]
    expected = 4 * sum(p * math.log(p / qi) for p, qi in zip(pt, q))
    assert expected == pytest.approx(0.492359, rel=1e-5)
    assert kd.topk_kd_loss(student, ids, logp, answer, temperature=2.0).item() == pytest.approx(expected, rel=1e-5)


def test_hidden_loss_masks_padding_and_respects_stride():
    student = torch.zeros(1, 4, 2)
    teacher = torch.ones(1, 2, 2)  # stored at positions 0 and 2 (stride 2)
    teacher[0, 1] = 3.0
    mask = torch.tensor([[1, 1, 1, 1]])
    assert losses.hidden_loss(student, teacher, torch.nn.Identity(), mask, stride=2).item() == pytest.approx(5.0)
    mask = torch.tensor([[1, 1, 0, 0]])  # position 2 is padding: only the first stored row counts
    assert losses.hidden_loss(student, teacher, torch.nn.Identity(), mask, stride=2).item() == pytest.approx(1.0)


def test_attention_head_mapping_and_causal_mask():
    n = 3
    causal = torch.tril(torch.ones(n, n))
    s = torch.stack([causal * 0.2, causal * 0.4])[None]  # 2 student heads
    t = torch.stack([causal * 0.1, causal * 0.3, causal * 0.3, causal * 0.5])[None]  # 4 teacher heads
    t = t + torch.triu(torch.ones(n, n), 1)  # junk above the diagonal: must be ignored
    mask = torch.ones(1, n)
    assert losses.attention_loss(s, t, mask).item() == pytest.approx(0.0, abs=1e-7)
    s0 = torch.zeros(1, 2, n, n)
    mask = torch.tensor([[1, 1, 0]])  # last token is padding: 3 valid (q, k) pairs per head
    expected = ((0.2**2) * 3 + (0.4**2) * 3) / 6  # = 0.1: mean over 2 heads x 3 causal pairs
    assert losses.attention_loss(s0, t, mask).item() == pytest.approx(expected, rel=1e-6)


def test_combine_weights_each_part():
    w = LossConfig(alpha=1.0, beta=0.5, gamma_hidden=0.1, gamma_attention=0.2)
    parts = {"task": torch.tensor(2.0), "kd": torch.tensor(4.0), "hidden": torch.tensor(10.0),
             "attention": torch.tensor(5.0)}
    assert losses.combine(parts, w).item() == pytest.approx(2 + 2 + 1 + 1)
    assert losses.combine({"task": torch.tensor(2.0)}, w).item() == pytest.approx(2.0)


def _planted(x, lengths, dims, value):
    """x with ``value`` at every padded position (index >= length) along ``dims`` of each row."""
    x = x.clone()
    for b, n in enumerate(lengths):
        for d in dims:
            idx = [b] + [slice(None)] * (x.dim() - 1)
            idx[d] = slice(n, None)
            x[tuple(idx)] = value
    return x


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("kind", ["mse", "cosine"])
def test_hidden_loss_ignores_nan_and_inf_at_padded_positions(bad, kind):
    g = torch.Generator().manual_seed(21)
    lengths = [5, 3]
    s = torch.randn(2, 5, 4, generator=g)
    t = torch.randn(2, 5, 6, generator=g)
    proj = torch.nn.Linear(4, 6)
    mask = torch.tensor([[1] * 5, [1] * 3 + [0] * 2])
    # reference: the real tokens only, as a plain per-token mean
    rows = [(proj(s[b, :n]), t[b, :n]) for b, n in enumerate(lengths)]
    if kind == "mse":
        per = torch.cat([(p - y).pow(2).mean(-1) for p, y in rows])
    else:
        per = torch.cat([1 - F.cosine_similarity(p, y, dim=-1) for p, y in rows])
    s_bad = _planted(s, lengths, [1], bad).requires_grad_(True)
    got = losses.hidden_loss(s_bad, _planted(t, lengths, [1], bad), proj, mask, kind=kind)
    assert got.item() == pytest.approx(per.mean().item(), rel=1e-6)
    got.backward()
    assert torch.isfinite(s_bad.grad).all() and s_bad.grad[1, 3:].abs().sum() == 0


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("kind", ["mse", "kl"])
def test_attention_loss_ignores_nan_and_inf_at_padded_positions(bad, kind):
    g = torch.Generator().manual_seed(22)
    lengths, n = [4, 2], 4
    s = torch.softmax(torch.randn(2, 2, n, n, generator=g), -1)
    t = torch.softmax(torch.randn(2, 2, n, n, generator=g), -1)
    mask = torch.tensor([[1] * 4, [1] * 2 + [0] * 2])
    ref = []  # per sequence, its real n x n block, causal pairs only
    for b, m in enumerate(lengths):
        keep = torch.tril(torch.ones(m, m, dtype=torch.bool))
        sb, tb = s[b, :, :m, :m], t[b, :, :m, :m]
        if kind == "mse":
            ref.append(((sb - tb).pow(2))[:, keep].flatten())
        else:
            sr = torch.where(keep, sb, 0.0)
            tr = torch.where(keep, tb, 0.0)
            sr, tr = sr / sr.sum(-1, keepdim=True), tr / tr.sum(-1, keepdim=True)
            ref.append((torch.xlogy(tr, tr) - torch.xlogy(tr, sr)).sum(-1).flatten())
    expected = torch.cat(ref).mean()
    s_bad = _planted(s, lengths, [2, 3], bad).requires_grad_(True)
    t_bad = _planted(t, lengths, [2, 3], bad) + torch.triu(torch.full((n, n), bad), 1).nan_to_num(0.0, bad, bad)
    got = losses.attention_loss(s_bad, t_bad, mask, kind=kind)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    got.backward()
    assert torch.isfinite(s_bad.grad).all() and s_bad.grad[1, :, 2:].abs().sum() == 0
