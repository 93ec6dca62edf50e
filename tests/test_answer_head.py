"""The student's LM head at the answer positions only: its task and KD losses and their gradients
equal a dense reference computed here from the full [B, T, V] logits (shift, mask, cross-entropy;
forward KL over the teacher's k ids plus the tail bucket)."""
import pytest
import torch

from wbvb.config import config_from_dict
from wbvb.models.head import HeadAt
from wbvb.models.load import load_tokenizer
from wbvb.models.presets import ensure_preset
from wbvb.store.schema import TeacherDims
from wbvb.train.trainer import Trainer

DIMS = TeacherDims(hidden_size=32, hidden_stride=1, attention_stride=1, hidden_layers=(0, 1),
                   attention_layers=(1,), num_layers=2, heads=4)


def _batch(vocab, B=3, L=9, k=4):
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(B, L, dtype=torch.long)
    mask[1, 6:] = 0  # padded rows
    mask[2, 4:] = 0
    answer = torch.zeros(B, L, dtype=torch.bool)
    answer[0, 5:] = True
    answer[1, 3:6] = True
    answer[2, 3] = True
    return {"input_ids": torch.randint(0, vocab, (B, L), generator=g), "attention_mask": mask, "answer_mask": answer,
            "topk_ids": torch.randint(0, vocab, (B, L, k), generator=g).to(torch.int16),
            "topk_logprobs": torch.log_softmax(torch.randn(B, L, k + 1, generator=g), -1)[..., :k].half(),
            "hidden": torch.randn(B, 2, L, 32, generator=g).half(),
            "attention": torch.softmax(torch.randn(B, 1, 4, L, L, generator=g), -1).half()}


def _dense(logits, batch, vocab):
    """Task CE and forward KL (T = 1, tail bucket) by their definitions, from the full logits."""
    logp = torch.log_softmax(logits[..., :vocab].double(), -1)
    ce, kl, n = 0.0, 0.0, 0
    for b in range(logits.size(0)):
        for t in range(logits.size(1) - 1):
            if not batch["answer_mask"][b, t + 1]:
                continue
            n += 1
            ce = ce - logp[b, t, batch["input_ids"][b, t + 1]]
            q = logp[b, t, batch["topk_ids"][b, t].long()].exp()
            p = batch["topk_logprobs"][b, t].double().exp()
            p, q = torch.cat([p, 1 - p.sum(0, keepdim=True)]), torch.cat([q, 1 - q.sum(0, keepdim=True)])
            kl = kl + (p * (p / q).log()).sum()
    return ce / n, kl / n


@pytest.mark.parametrize("distill_type", ["black_box", "combined"])
def test_answer_only_head_equals_the_dense_losses_and_gradients(tiny_dict, distill_type):
    cfg = config_from_dict(tiny_dict)
    paths = ensure_preset(cfg.models.preset, cfg.cache_dir)
    tok = load_tokenizer(str(paths["student"]))
    t = Trainer(cfg, distill_type, 0, str(paths["student"]), tok, DIMS)
    student = t.bundle.student.float()
    batch = _batch(t.vocab)
    seen = []
    hook = student.get_output_embeddings().register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape)))
    loss, parts = t._loss(batch)
    hook.remove()
    n_answer = int(batch["answer_mask"][:, 1:].sum())
    assert seen == [(n_answer, student.config.vocab_size)]  # the head ran at the answer positions only
    loss.backward()
    grads = {k: p.grad.clone() for k, p in student.named_parameters() if p.grad is not None}
    student.zero_grad()
    if t.bundle.projectors is not None:
        t.bundle.projectors.zero_grad()

    full = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert full.shape[:2] == batch["input_ids"].shape  # outside the loss the model is unchanged
    ce, kl = _dense(full, batch, t.vocab)
    assert parts["task"].item() == pytest.approx(ce.item(), abs=1e-5)
    assert parts["kd"].item() == pytest.approx(kl.item(), abs=1e-5)
    (ce + cfg.loss.beta * kl).float().backward()
    for k, g in grads.items():
        if distill_type == "black_box":
            assert torch.allclose(g, student.get_parameter(k).grad, atol=1e-5), k
    if distill_type == "combined":  # capture still fills the alignment terms, which reach the blocks
        assert parts["hidden"].item() > 0 and parts["attention"].item() > 0
        assert grads["model.layers.0.self_attn.q_proj.weight"].abs().sum() > 0


def test_no_answer_tokens_gives_zero_task_loss_with_a_graph(tiny_dict):
    cfg = config_from_dict(tiny_dict)
    paths = ensure_preset(cfg.models.preset, cfg.cache_dir)
    t = Trainer(cfg, "sft", 0, str(paths["student"]), load_tokenizer(str(paths["student"])), DIMS)
    batch = _batch(t.vocab)
    batch["answer_mask"][:] = False
    loss, parts = t._loss(batch)
    loss.backward()
    assert parts["task"].item() == 0.0


def test_head_at_picks_the_rows_of_the_full_logits_in_order(tiny_dict):
    cfg = config_from_dict(tiny_dict)
    paths = ensure_preset(cfg.models.preset, cfg.cache_dir)
    t = Trainer(cfg, "sft", 0, str(paths["student"]), load_tokenizer(str(paths["student"])), DIMS)
    student = t.bundle.student.float().eval()
    batch = _batch(t.vocab)
    head = HeadAt(student)
    b, p = torch.tensor([2, 0, 1, 0]), torch.tensor([1, 8, 0, 3])
    with torch.no_grad(), head.at(b, p):
        some = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    head.remove()
    with torch.no_grad():
        full = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.allclose(some, full[b, p], atol=1e-6)
