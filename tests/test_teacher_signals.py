"""The store's teacher forward gives what the all-eager output_hidden_states/output_attentions path gave."""
from __future__ import annotations

import copy

import pytest
import torch

from wbvb.teacher import signals
from wbvb.teacher.signals import TeacherSignals, real_positions, topk_logprobs


def _reference(model, ids, mask, vocab, k):
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    with torch.no_grad():
        out = eager(input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    logits = out.logits[..., :vocab].float()
    vals, top = logits.topk(k, dim=-1)
    return out, vals - torch.logsumexp(logits, dim=-1, keepdim=True), top


def _batch(vocab):
    ids = torch.randint(0, vocab, (3, 11), generator=torch.Generator().manual_seed(1))
    lengths = [11, 8, 5]
    mask = (torch.arange(11)[None, :] < torch.tensor(lengths)[:, None]).long()
    return ids, mask, lengths


def test_topk_logprobs_in_chunks_match_the_whole_logits(monkeypatch):
    logits = torch.randn(24, 50, generator=torch.Generator().manual_seed(0)) * 4
    monkeypatch.setattr(signals, "CHUNK_ELEMENTS", 5 * 45)  # 5 positions per chunk: the last one short
    vals, ids = topk_logprobs(logits, 6, vocab=45)  # the last 5 rows of the embedding are padding
    ref = logits[..., :45]
    ref_vals, ref_ids = ref.topk(6, dim=-1)
    assert torch.equal(ids, ref_ids)
    assert torch.allclose(vals, ref_vals - torch.logsumexp(ref, dim=-1, keepdim=True), atol=1e-6)


def test_real_positions_list_each_rows_unpadded_positions():
    rows, pos = real_positions([3, 1, 2], "cpu")
    assert rows.tolist() == [0, 0, 0, 1, 2, 2] and pos.tolist() == [0, 1, 2, 0, 0, 1]


def _llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=48, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    return LlamaForCausalLM(cfg).eval()


def _gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=48, n_embd=32, n_layer=3, n_head=4, n_positions=32)).eval()


@pytest.mark.parametrize("make", [_llama, _gpt2], ids=["llama-capture", "gpt2-eager-fallback"])
def test_teacher_signals_match_the_all_eager_forward(make):
    model = make()
    ids, mask, lengths = _batch(45)
    out, ref_vals, ref_ids = _reference(model, ids, mask, vocab=45, k=5)
    hidden_layers, attention_layers = [0, 2], [1]
    teacher = TeacherSignals(model, hidden_layers, attention_layers)
    heads = []  # the LM head runs at the real positions only: no [B, S, vocab] logits for a padded batch
    hook = model.get_output_embeddings().register_forward_hook(lambda m, i, o: heads.append(tuple(o.shape)))
    vals, top, hidden, attn = teacher(ids, mask, lengths, k=5, vocab=45, hidden_stride=2, attention_stride=2)
    hook.remove()
    assert heads == [(sum(lengths), 48)]
    assert hidden.shape == (3, 2, 6, 32) and attn.shape == (3, 1, 4, 6, 6)
    for i, n in enumerate(lengths):
        m = (n + 1) // 2
        assert not vals[i, n:].any() and not top[i, n:].any()  # padding: zeros
        assert torch.equal(top[i, :n], ref_ids[i, :n])
        assert torch.allclose(vals[i, :n], ref_vals[i, :n], atol=1e-5)
        for j, layer in enumerate(hidden_layers):  # block i's output is hidden_states[i + 1]
            assert torch.allclose(hidden[i, j, :m], out.hidden_states[layer + 1][i, ::2][:m], atol=1e-5)
        assert torch.allclose(attn[i, 0, :, :m, :m], out.attentions[1][i, :, ::2, ::2][:, :m, :m], atol=1e-6)


def test_only_the_configured_attention_blocks_leave_the_fast_kernel():
    model = _llama()
    TeacherSignals(model, [2], [1])
    kernels = [layer.self_attn.config._attn_implementation for layer in model.model.layers]
    assert kernels == ["sdpa", "wbvb_probs", "sdpa"]
