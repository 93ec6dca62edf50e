"""Shard encoding: hand-checked packing, lossless round trips, and the 1e-3 loss-fidelity bound."""
import numpy as np
import pyarrow as pa
import pytest
import torch

from wbvb import losses
from wbvb.teacher.codec import (decode_batch, encode_signals, first_attention_row, id_dtype_for, layout_of,
                                pack_attention, quantize_int8, strided)
from wbvb.teacher.schema import arrow_schema, columns_for


def test_id_dtype_is_the_narrowest_that_holds_the_vocabulary():
    assert [id_dtype_for(v) for v in (256, 257, 32000, 65536, 65537)] == ["uint8", "uint16", "uint16", "uint16",
                                                                         "int32"]


def test_attention_keeps_the_lower_triangle_of_the_stored_rows():
    a = np.arange(9.0).reshape(1, 1, 3, 3)  # [[0,1,2],[3,4,5],[6,7,8]]
    assert pack_attention(a, 0).flatten().tolist() == [0, 3, 4, 6, 7, 8]
    assert pack_attention(a, 1).flatten().tolist() == [3, 4, 6, 7, 8]
    # answer rows start at the position predicting the first answer token: prompt_len - 1, strided up
    assert first_attention_row(5, 2, "answer") == 2 and first_attention_row(5, 1, "answer") == 4
    assert first_attention_row(5, 2, "all") == 0


def test_int8_hidden_is_absmax_per_vector():
    q, scale = quantize_int8(torch.tensor([[1.0, -0.5, 0.25], [0.0, 0.0, 2.0]]))
    assert q.tolist() == [[127, -64, 32], [0, 0, 127]]
    assert np.allclose(scale, [1 / 127, 2 / 127])


def _manifest(dtype="float32", hidden="float32", rows="all", k=3, dim=4, heads=2, layers=(1,), hs=2, s=2, vocab=50):
    return {"pad_token_id": 0, "vocab_size": vocab, "strides": {"hidden": hs, "attention": s},
            "columns": {"topk_ids": {"dtype": id_dtype_for(vocab), "k": k},
                        "topk_logprobs": {"dtype": dtype, "k": k},
                        "hidden": {"dtype": hidden, "dim": dim, "layers": list(layers)},
                        "attention": {"dtype": dtype, "heads": heads, "layers": list(layers), "rows": rows}}}


def _teacher_outputs(n: int, prompt_len: int, m: dict, gen: torch.Generator, vocab_logits: int = 50):
    """fp32 teacher tensors for one row, cut and strided as the generator stores them."""
    k, c = m["columns"]["topk_ids"]["k"], m["columns"]
    logp = torch.log_softmax(3 * torch.randn(n, vocab_logits, generator=gen), -1)
    vals, ids = logp.topk(k, -1)
    nl = len(c["hidden"]["layers"])
    hidden = torch.randn(nl, strided(n, m["strides"]["hidden"]), c["hidden"]["dim"], generator=gen)
    scores = torch.randn(nl, c["attention"]["heads"], n, n, generator=gen)
    full = torch.softmax(scores.masked_fill(~torch.tril(torch.ones(n, n, dtype=torch.bool)), float("-inf")), -1)
    s = m["strides"]["attention"]
    attn = full[..., ::s, ::s]
    return {"ids": ids, "logp": vals, "hidden": hidden, "attention": attn, "prompt_len": prompt_len, "n": n}


def _table(outs: list[dict], m: dict) -> pa.Table:
    rows = []
    for j, o in enumerate(outs):
        enc = encode_signals(o["prompt_len"], o["ids"], o["logp"], o["hidden"], o["attention"], layout_of(m))
        rows.append({"example_id": f"ex{j}", "task": "t", "split": "train", "input_ids": list(range(1, o["n"] + 1)),
                     "prompt_len": o["prompt_len"], "seq_len": o["n"], "label": "", **enc})
    return pa.Table.from_pylist(rows, schema=arrow_schema())


def test_float32_round_trip_is_exact_and_zero_padded():
    gen = torch.Generator().manual_seed(0)
    m = _manifest()
    outs = [_teacher_outputs(7, 3, m, gen), _teacher_outputs(4, 2, m, gen)]
    b = decode_batch(_table(outs, m), m, pad_id=0)
    assert b["input_ids"].tolist()[1] == [1, 2, 3, 4, 0, 0, 0]
    assert b["answer_mask"].tolist()[1] == [False, False, True, True, False, False, False]
    assert b["topk_ids"].dtype == torch.int32 and b["topk_ids"].shape == (2, 7, 3)
    assert torch.equal(b["topk_ids"][0], outs[0]["ids"].int()) and torch.equal(b["topk_logprobs"][1, :4], outs[1]["logp"])
    assert b["topk_logprobs"][1, 4:].abs().sum() == 0
    assert b["hidden"].shape == (2, 1, 4, 4) and torch.equal(b["hidden"][1, :, :2], outs[1]["hidden"])
    assert b["attention"].shape == (2, 1, 2, 4, 4)
    assert torch.equal(b["attention"][0], outs[0]["attention"]) and torch.equal(b["attention"][1, ..., :2, :2],
                                                                               outs[1]["attention"])
    assert "attention_row_mask" not in b


def test_answer_rows_store_only_loss_rows_and_say_which():
    gen = torch.Generator().manual_seed(1)
    m = _manifest(rows="answer", s=1)
    outs = [_teacher_outputs(6, 4, m, gen), _teacher_outputs(5, 2, m, gen)]
    table = _table(outs, m)
    # row 0 keeps query rows 3..5 of 6: 4 + 5 + 6 entries per head, 2 heads, 4 bytes each
    assert len(table.column("attention")[0].as_py()) == (4 + 5 + 6) * 2 * 4
    b = decode_batch(table, m, pad_id=0)
    assert b["attention_row_mask"].tolist() == [[False, False, False, True, True, True],
                                                [False, True, True, True, True, False]]
    assert torch.equal(b["attention"][0, ..., 3:, :], outs[0]["attention"][..., 3:, :])
    assert b["attention"][0, ..., :3, :].abs().sum() == 0


def test_column_projection_decodes_only_what_is_read():
    gen = torch.Generator().manual_seed(2)
    m = _manifest()
    table = _table([_teacher_outputs(5, 2, m, gen)], m).select(columns_for(["topk"]))
    b = decode_batch(table, m, pad_id=0)
    assert {"topk_ids", "topk_logprobs"} <= set(b) and not {"hidden", "attention"} & set(b)


@pytest.mark.parametrize("dtype,hidden", [("float16", "float16"), ("bfloat16", "bfloat16"), ("float16", "int8")])
def test_loss_from_stored_tensors_is_within_1e3_of_fp32(dtype, hidden):
    """Per signal: the loss a trial computes from decoded shards vs from the fp32 teacher outputs."""
    gen = torch.Generator().manual_seed(3)
    m = _manifest(dtype=dtype, hidden=hidden, k=16, dim=32, heads=4, hs=2, s=2, vocab=50)
    outs = [_teacher_outputs(n, p, m, gen) for n, p in ((24, 9), (17, 5), (20, 12))]
    b = decode_batch(_table(outs, m), m, pad_id=0)
    L = b["input_ids"].shape[1]

    def padded(key, shape_fn):
        out = torch.zeros(shape_fn(L))
        for i, o in enumerate(outs):
            t = o[key]
            out[(i,) + tuple(slice(0, d) for d in t.shape)] = t
        return out

    ref_ids = padded("ids", lambda n: (3, n, 16)).long()
    ref_logp = padded("logp", lambda n: (3, n, 16))
    ref_hidden = padded("hidden", lambda n: (3, 1, strided(n, 2), 32))
    na = strided(L, 2)
    ref_attn = padded("attention", lambda n: (3, 1, 4, na, na))
    student_logits = torch.randn(3, L, 50, generator=gen)
    student_hidden = torch.randn(3, L, 8, generator=gen)
    proj = torch.nn.Linear(8, 32)
    student_attn = torch.softmax(torch.randn(3, 2, L, L, generator=gen), -1)
    mask, ans = b["attention_mask"], b["answer_mask"]
    pairs = {
        "kd": (losses.topk_kd_loss(student_logits, ref_ids, ref_logp, ans),
               losses.topk_kd_loss(student_logits, b["topk_ids"], b["topk_logprobs"], ans)),
        "hidden": (losses.hidden_loss(student_hidden, ref_hidden[:, -1], proj, mask, 2),
                   losses.hidden_loss(student_hidden, b["hidden"][:, -1], proj, mask, 2)),
        "attention": (losses.attention_loss(student_attn, ref_attn[:, -1], mask, 2),
                      losses.attention_loss(student_attn, b["attention"][:, -1], mask, 2)),
    }
    for name, (ref, stored) in pairs.items():
        rel = abs(float(stored.detach()) - float(ref.detach())) / abs(float(ref.detach()))
        assert rel < 1e-3, f"{name}: relative error {rel:.2e} with dtype={dtype}, hidden={hidden}"
