"""Student training-step throughput with alignment capture vs black_box, on the same batch.

One Llama-family student (4 blocks, hidden 256, 8 query / 4 key-value heads, vocab of the tiny
preset tokenizer), batch 8 x 256 tokens, one mapped block (last <-> last): ``attention`` computes
eager probabilities for that block only (the others keep sdpa); ``hidden_state`` hooks one block
and trains a projector. Steps are interleaved across the three trainers; medians are compared,
and minima too (the least disturbed step: on a shared machine other processes inflate medians).

python benchmarks/capture_step_throughput.py  -> `name: value` lines
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

B, L, ROUNDS = 8, 256, 9
TEACHER_HIDDEN, TEACHER_HEADS, TEACHER_LAYERS = 384, 8, 6


def build_student(path: Path, vocab: int) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                      num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=L)
    LlamaForCausalLM(cfg).save_pretrained(path)


def batch(vocab: int, k: int = 8) -> dict:
    g = torch.Generator().manual_seed(1)
    answer = torch.zeros(B, L, dtype=torch.bool)
    answer[:, L // 2:] = True
    return {"input_ids": torch.randint(0, vocab, (B, L), generator=g),
            "attention_mask": torch.ones(B, L, dtype=torch.long), "answer_mask": answer,
            "topk_ids": torch.randint(0, vocab, (B, L, k), generator=g).to(torch.int16),
            "topk_logprobs": torch.log_softmax(torch.randn(B, L, k + 1, generator=g), -1)[..., :k].half(),
            "hidden": torch.randn(B, 1, L, TEACHER_HIDDEN, generator=g).half(),
            "attention": torch.softmax(torch.randn(B, 1, TEACHER_HEADS, L, L, generator=g), -1).half(),
            "example_ids": [str(i) for i in range(B)]}


def main() -> None:
    from wbvb.config import config_from_dict
    from wbvb.models.load import load_tokenizer
    from wbvb.models.presets import ensure_preset
    from wbvb.store.schema import TeacherDims
    from wbvb.train.trainer import Trainer

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    with tempfile.TemporaryDirectory(prefix="wbvb-bench-capture-") as tmp:
        cfg = config_from_dict({"models": {"cache_dir": f"{tmp}/cache"}, "teacher_data": {"path": f"{tmp}/t"},
                                "output": {"dir": f"{tmp}/out"},
                                "training": {"device": "cpu", "batch_size": B, "max_length": L}})
        tok = load_tokenizer(str(ensure_preset(cfg.models.preset, cfg.cache_dir)["student"]))
        student = Path(tmp) / "student"
        build_student(student, len(tok))
        dims = TeacherDims(hidden_size=TEACHER_HIDDEN, hidden_layers=(TEACHER_LAYERS - 1,),
                           attention_layers=(TEACHER_LAYERS - 1,), num_layers=TEACHER_LAYERS, heads=TEACHER_HEADS)
        trainers = {}
        for kind in ("black_box", "hidden_state", "attention"):
            t = Trainer(cfg, kind, 0, str(student), tok, dims)
            t._setup_optimisation(ROUNDS + 1)
            trainers[kind] = t
        data = batch(len(tok))
        times = {k: [] for k in trainers}
        for r in range(ROUNDS + 1):
            for kind, t in trainers.items():
                t0 = time.perf_counter()
                t._micro_step(data, last_of_group=True)  # one full optimizer step
                if r:  # round 0 warms up
                    times[kind].append(time.perf_counter() - t0)
        for stat, fn in (("median", statistics.median), ("min", min)):
            s = {k: fn(v) for k, v in times.items()}
            for k, v in s.items():
                print(f"step_s_{stat}_{k}: {v:.3f}")
            for k in ("attention", "hidden_state"):
                print(f"throughput_ratio_{stat}_{k}_vs_black_box: {s['black_box'] / s[k]:.3f}")


if __name__ == "__main__":
    main()
