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


@torch.no_grad()
def bare(model, data) -> float:
    t0 = time.perf_counter()
    for b in data:
        c = collate(b, 0)
        model(input_ids=c["input_ids"], attention_mask=c["attention_mask"]).logits.float()
    return time.perf_counter() - t0


class _Tokenizer:
    """What teacher_rows asks of a tokenizer: the pad id and the vocabulary size."""

    pad_token_id = 0

    def __len__(self) -> int:
        return VOCAB


COMPACT = dict(logprob_encoding="gaps8", hidden_encoding="int8", attention_encoding="cbrt")


def generation(signals: TeacherSignals, data, out_dir: Path, encodings: dict) -> float:
    td = TeacherDataConfig(top_k=K, hidden_stride=STRIDE, attention_stride=STRIDE, dtype="float16", **encodings)
    cfg = SimpleNamespace(teacher_data=td)
    model = signals.model
    layer = model.config.num_hidden_layers - 1
    manifest = {"format_version": FORMAT_VERSION, "shards": [], "num_rows": 0,
                "strides": {"hidden": STRIDE, "attention": STRIDE},
                "columns": store_columns(td, VOCAB, model.config.hidden_size, HEADS, [layer], [layer])}
    layout = layout_of(manifest)
    out_dir.mkdir(parents=True)
    t0 = time.perf_counter()
    writer = ShardWriter(out_dir, manifest)
    for i, b in enumerate(data):
        rows = teacher_rows(signals, _Tokenizer(), b, cfg, layout, "cpu")
        writer.submit(f"shard-{i:05d}.parquet", rows)
    writer.close()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--encoding", choices=["fp16", "compact"], default="compact",
                    help="fp16: lossless codes; compact: gaps8 log-probs, int8 hidden, cbrt attention")
    args = ap.parse_args()
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
