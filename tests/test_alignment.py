"""Hidden/attention alignment: mappings on odd shapes, CKA, attention KL, selective capture."""
import numpy as np
import pytest
import torch

from wbvb.train import losses
from wbvb.models.capture import Capture
from wbvb.config import ConfigError, config_from_dict
from wbvb.train.alignment import check_stored_layers, head_map, layer_pairs


def test_uniform_mapping_three_student_blocks_to_eight_teacher_blocks():
    # round((i+1)*8/3) - 1 for i = 0, 1, 2: round(2.67)-1, round(5.33)-1, round(8)-1
    assert layer_pairs("uniform", [], 3, 8) == [(0, 2), (1, 4), (2, 7)]
    assert layer_pairs("last", [], 3, 8) == [(2, 7)]
    assert layer_pairs("explicit", [[0, 1], [-1, -1]], 3, 8) == [(0, 1), (2, 7)]
    with pytest.raises(ConfigError, match="block 8 does not exist in a 8-block"):
        layer_pairs("explicit", [[0, 8]], 3, 8)


def test_grouped_head_map_averages_teacher_heads_per_student_head():
    hm = head_map("grouped", [], 2, 6)  # e.g. a GQA student with 2 query heads, teacher with 6
    t = torch.arange(6.0).view(1, 6, 1, 1).expand(1, 6, 2, 2)
    s = torch.zeros(1, 2, 2, 2)
    _, tm = hm.apply(s, t)
    assert tm[0, :, 0, 0].tolist() == [1.0, 4.0]  # mean(0,1,2), mean(3,4,5)
    sm, _ = head_map("grouped", [], 4, 2).apply(torch.arange(4.0).view(1, 4, 1, 1), torch.zeros(1, 2, 1, 1))
    assert sm.flatten().tolist() == [0.5, 2.5]
    _, te = head_map("explicit", [[5], [0, 2]], 2, 6).apply(s, t)
    assert te[0, :, 0, 0].tolist() == [5.0, 1.0]
    with pytest.raises(ConfigError, match="head_map=explicit"):
        head_map("grouped", [], 4, 6)
    with pytest.raises(ConfigError, match="teacher head 7 does not exist"):
        head_map("explicit", [[7], [0]], 2, 6)


def test_uniform_mapping_of_a_student_more_than_twice_as_deep_stays_in_the_teacher():
    # 7 -> 3: output depths (i+1)/7 vs teacher (j+1)/3; block 0 (1/7) is nearer the embeddings
    # (depth 0) than teacher block 0 (1/3), and takes block 0, the nearest block
    assert layer_pairs("uniform", [], 7, 3) == [(0, 0), (1, 0), (2, 0), (3, 1), (4, 1), (5, 2), (6, 2)]
    for ls, lt in [(30, 4), (12, 5), (9, 2), (5, 1)]:
        pairs = layer_pairs("uniform", [], ls, lt)
        teacher = [t for _, t in pairs]
        assert [s for s, _ in pairs] == list(range(ls)) and pairs[-1] == (ls - 1, lt - 1)
        assert all(0 <= t < lt for t in teacher) and teacher == sorted(teacher), (ls, lt, pairs)
        for i, t in enumerate(teacher):  # nearest valid teacher output depth to the student's
            best = min(range(lt), key=lambda j: (abs((j + 1) / lt - (i + 1) / ls), -j))
            assert abs((t + 1) / lt - (i + 1) / ls) == pytest.approx(abs((best + 1) / lt - (i + 1) / ls)), (ls, lt, i)


def _cka(x, y):
    return losses.sequence_cka(x[None], y[None], torch.ones(1, x.size(0)))[0][0]


def test_cka_is_one_for_itself_and_invariant_to_rotation_and_scale():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20, 5, generator=g)
    q, _ = torch.linalg.qr(torch.randn(5, 5, generator=g))
    assert _cka(x, x).item() == pytest.approx(1.0, abs=1e-6)
    assert _cka(x, 3.0 * x @ q).item() == pytest.approx(1.0, abs=1e-5)
    y = torch.randn(20, 9, generator=g)  # other dims are fine: no projector needed
    assert _cka(x, y).item() == pytest.approx(_cka(x @ q * 0.1, y).item(), rel=1e-5)
    assert 0.0 <= _cka(x, y).item() < 0.9


def _hsic_cka(x, y):
    """Linear CKA from its HSIC definition (Kornblith et al. 2019), in numpy float64."""
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, l_ = x @ x.T, y @ y.T
    hsic = lambda a, b: np.trace(a @ h @ b @ h) / (n - 1) ** 2  # noqa: E731
    return hsic(k, l_) / np.sqrt(hsic(k, k) * hsic(l_, l_))


def test_cka_loss_is_per_sequence_hsic_cka_and_independent_of_micro_batches():
    g = torch.Generator().manual_seed(3)
    b, n = 8, 12
    s = torch.randn(b, n, 16, generator=g) + 3 * torch.randn(b, 1, 16, generator=g)  # per-sequence offsets
    t = s @ torch.randn(16, 24, generator=g) + 2 * torch.randn(b, n, 24, generator=g)
    lengths = [12, 9, 12, 7, 10, 12, 5, 11]
    mask = torch.tensor([[1] * m + [0] * (n - m) for m in lengths])
    ref = np.mean([1 - _hsic_cka(s[i, :m].double().numpy(), t[i, :m].double().numpy())
                   for i, m in enumerate(lengths)])
    whole = losses.hidden_loss(s, t, None, mask, kind="cka").item()
    assert whole == pytest.approx(ref, rel=1e-5)
    s_bad, t_bad = s.clone(), t.clone()
    s_bad[1, 9:], t_bad[6, 5:] = float("nan"), float("inf")  # padded positions: never read
    assert losses.hidden_loss(s_bad, t_bad, None, mask, kind="cka").item() == pytest.approx(whole, rel=1e-6)
    for size in (1, 2, 4):  # the effective batch kept through accumulation: the mean of equal micro-batches
        micro = np.mean([losses.hidden_loss(s[i:i + size], t[i:i + size], None, mask[i:i + size], kind="cka").item()
                         for i in range(0, b, size)])
        assert micro == pytest.approx(whole, rel=1e-5), size
    one = mask.clone()
    one[1, 1:] = 0  # a sequence with one real token has no CKA: it is left out of the mean
    ref_one = np.mean([1 - _hsic_cka(s[i, :m].double().numpy(), t[i, :m].double().numpy())
                       for i, m in enumerate(lengths) if i != 1])
    assert losses.hidden_loss(s, t, None, one, kind="cka").item() == pytest.approx(ref_one, rel=1e-5)


def test_cka_and_cosine_hidden_losses_ignore_padding():
    s = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])
    t = torch.tensor([[[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert losses.hidden_loss(s, t, None, mask, kind="cosine").item() == pytest.approx(0.0, abs=1e-6)
    t2 = t.clone()
    t2[0, 1] = torch.tensor([3.0, 0.0])  # cosine of (0,1) and (3,0) is 0: mean over two tokens = 0.5
    assert losses.hidden_loss(s, t2, None, mask, kind="cosine").item() == pytest.approx(0.5, abs=1e-6)
    s3 = torch.randn(1, 6, 4, generator=torch.Generator().manual_seed(1))
    full = torch.ones(1, 6)
    assert losses.hidden_loss(s3, 2 * s3, None, full, kind="cka").item() == pytest.approx(0.0, abs=1e-5)


def test_attention_kl_zero_for_identical_rows_and_masked_rows_ignored():
    n = 3
    rows = torch.tensor([[1.0, 0, 0], [0.3, 0.7, 0], [0.2, 0.3, 0.5]])
    t = rows.expand(1, 2, n, n).clone()
    assert losses.attention_loss(t.clone(), t, torch.ones(1, n), kind="kl").item() == pytest.approx(0.0, abs=1e-6)
    s = t.clone()
    s[:, :, 2] = torch.tensor([0.9, 0.05, 0.05])  # differs only in the query row of a padding token
    mask = torch.tensor([[1, 1, 0]])
    # rows renormalised over real keys: row 1 (0.3, 0.7) on both sides; row 2 is padding
    assert losses.attention_loss(s, t, mask, kind="kl").item() == pytest.approx(0.0, abs=1e-6)
    s[:, :, 1] = torch.tensor([0.5, 0.5, 0.0])
    expected = (0.3 * torch.log(torch.tensor(0.3 / 0.5)) + 0.7 * torch.log(torch.tensor(0.7 / 0.5))).item() / 2
    assert losses.attention_loss(s, t, mask, kind="kl").item() == pytest.approx(expected, rel=1e-5)


def _llama(layers=3, heads=4, kv_heads=2):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=48, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=32)
    return LlamaForCausalLM(cfg).eval()


def test_capture_only_mapped_blocks_and_matches_eager_outputs_on_gqa():
    import copy

    model = _llama()
    eager = copy.deepcopy(model)
    eager.config._attn_implementation = "eager"
    ids = torch.randint(0, 40, (2, 6), generator=torch.Generator().manual_seed(2))
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    ref = eager(input_ids=ids, attention_mask=mask, output_attentions=True, output_hidden_states=True)
    cap = Capture(model, hidden_blocks=[0, 2], attention_blocks=[1])
    with cap:
        out = model(input_ids=ids, attention_mask=mask)
    assert set(cap.hidden) == {0, 2} and set(cap.attentions) == {1}
    assert cap.attentions[1].shape == (2, 4, 6, 6)  # query heads, not the 2 key/value heads
    assert torch.allclose(cap.attentions[1], ref.attentions[1], atol=1e-6)
    assert torch.allclose(cap.hidden[0], ref.hidden_states[1], atol=1e-6)
    assert torch.allclose(cap.hidden[2], ref.hidden_states[3], atol=1e-6)  # after the final norm, like the store
    assert torch.allclose(out.logits, ref.logits, atol=1e-5)
    kernels = [layer.self_attn.config._attn_implementation for layer in model.model.layers]
    assert kernels == ["sdpa", "wbvb_probs", "sdpa"] and model.config._attn_implementation == "sdpa"
    model(input_ids=ids, attention_mask=mask)  # outside the context: nothing kept
    assert not cap.active


def _gemma2():
    from transformers import Gemma2Config, Gemma2ForCausalLM

    return Gemma2ForCausalLM(Gemma2Config(
        vocab_size=40, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, sliding_window=3, attn_logit_softcapping=2.0,
        max_position_embeddings=16, initializer_range=0.5, attn_implementation="eager"))  # logits past the cap


def _mistral():
    from transformers import MistralConfig, MistralForCausalLM

    return MistralForCausalLM(MistralConfig(
        vocab_size=40, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, sliding_window=3, max_position_embeddings=16, attn_implementation="sdpa"))


@pytest.mark.parametrize("make", [_gemma2, _mistral], ids=["gemma2-softcap-eager", "mistral-window-sdpa"])
def test_capture_keeps_the_maps_the_model_family_computes(make):
    """Gemma-2 soft-caps attention logits (it runs eager: sdpa cannot) and slides a 3-key window
    in its even blocks; Mistral slides one in every block, under sdpa. The maps kept must be the
    ones the family's own eager attention computes, not softmax(QK^T) over every earlier key."""
    import copy

    torch.manual_seed(0)
    model = make().eval()
    reference = copy.deepcopy(model)
    reference.set_attn_implementation("eager")
    ids = torch.randint(0, 40, (2, 7), generator=torch.Generator().manual_seed(3))
    for mask in (torch.tensor([[1] * 7, [1] * 5 + [0] * 2]), None):
        ref = reference(input_ids=ids, attention_mask=mask, output_attentions=True)
        cap = Capture(model, hidden_blocks=[], attention_blocks=[0, 1])
        with cap:
            out = model(input_ids=ids, attention_mask=mask)
        assert (ref.attentions[0][0, :, 6, :4] == 0).all()  # the window: keys 4..6 only
        for block in (0, 1):
            assert torch.allclose(cap.attentions[block], ref.attentions[block], atol=1e-6), (block, mask)
        assert torch.allclose(out.logits, ref.logits, atol=1e-5)


def test_implicit_causal_mask_keeps_a_sliding_window():
    from wbvb.models.capture import _additive_mask

    keep = _additive_mask(None, 3, 4, torch.zeros(1), window=2)[0, 0] == 0  # queries at positions 1..3
    assert keep.tolist() == [[True, True, False, False], [False, True, True, False], [False, False, True, True]]


def test_sweep_start_refuses_mapped_layers_that_are_not_stored(tiny_dict):
    tiny_dict["alignment"] = {"hidden_map": "uniform"}
    tiny_dict["teacher_data"]["hidden_layers"] = [-1]
    cfg = config_from_dict(tiny_dict)
    with pytest.raises(ConfigError, match=r"teacher_data.hidden_layers stores only \[7\].*missing \[2, 4\]"):
        check_stored_layers(cfg, student_layers=3, teacher_layers=8)
    tiny_dict["teacher_data"]["hidden_layers"] = [2, 4, 7]
    check_stored_layers(config_from_dict(tiny_dict), student_layers=3, teacher_layers=8)
    tiny_dict["sweep"]["distill_types"] = ["sft", "black_box"]  # no alignment: nothing to check
    tiny_dict["teacher_data"]["hidden_layers"] = [-1]
    check_stored_layers(config_from_dict(tiny_dict), student_layers=3, teacher_layers=8)


def test_alignment_and_loss_config_errors_name_the_key(tiny_dict):
    for section, bad, match in [("loss", {"kd_divergence": "kl"}, "loss.kd_divergence 'kl'"),
                                ("loss", {"jsd_beta": 1.0}, "loss.jsd_beta"),
                                ("loss", {"kd_tail_bucket": False, "kd_divergence": "jsd"}, "kd_tail_bucket"),
                                ("loss", {"balancing": "kd_magnitude", "beta": 0.0}, "balancing"),
                                ("alignment", {"hidden_map": "explicit"}, "alignment.hidden_pairs is empty"),
                                ("alignment", {"attention_pairs": [[0, 1]]}, "attention_map=explicit"),
                                ("alignment", {"head_map": "explicit"}, "head_groups is empty"),
                                ("alignment", {"hidden_mapping": "uniform"}, "unknown config key")]:
        d = {**tiny_dict, section: bad}
        with pytest.raises(ConfigError, match=match):
            config_from_dict(d)


def test_attention_row_mask_leaves_out_rows_the_store_did_not_keep():
    import torch

    from wbvb.train import losses

    n = 3
    causal = torch.tril(torch.ones(n, n))
    student = torch.zeros(1, 1, n, n)
    teacher = (causal * torch.tensor([[1.0], [2.0], [3.0]]))[None, None]  # row q holds value q+1
    mask = torch.ones(1, n)
    rows = torch.tensor([[False, False, True]])  # only the last (answer) row was stored
    # row 2 has 3 causal keys, each (0 - 3)^2 = 9
    assert losses.attention_loss(student, teacher, mask, row_mask=rows).item() == pytest.approx(9.0)
    # without the mask all 6 causal pairs count: (1 + 2*4 + 3*9) / 6 = 6
    assert losses.attention_loss(student, teacher, mask).item() == pytest.approx(6.0)
