"""A black_box trial's training loop (shards streamed through Ray Data) vs a bare PyTorch loop.

Both train the same quickstart student on the same batches; the bare loop has them in memory
and does only forward, task + top-k KD loss, backward, clip and AdamW. Prints `name: value`
lines: tokens/s of each, their ratio (target >= 0.9), and where the trial loop's time went.

python benchmarks/trainer_throughput.py
"""
from __future__ import annotations

import os
import tempfile
import time

import torch


def bare_loop(model, batches, lr, clip, temperature) -> float:
    """Tokens/s of the plain loop on in-memory batches."""
    from wbvb import losses

    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    tokens, t0 = 0, time.perf_counter()
    for b in batches:
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        loss = losses.task_loss(logits, b["input_ids"], b["answer_mask"]) + 0.5 * losses.topk_kd_loss(
            logits, b["topk_ids"], b["topk_logprobs"], b["answer_mask"], temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        tokens += int(b["attention_mask"].sum())
    return tokens / (time.perf_counter() - t0)


def main() -> None:
    import ray

    from wbvb.config import SIGNALS_BY_TYPE, load_config
    from wbvb.models import load_model, load_tokenizer
    from wbvb.stream import ShardStream
    from wbvb.teacher import prepare
    from wbvb.trainer import TeacherDims, Trainer

    torch.set_num_threads(1)
    tmp = tempfile.mkdtemp(prefix="wbvb-bench-tp-")
    os.environ.setdefault("WBVB_CACHE", f"{tmp}/cache")
    os.environ.setdefault("WBVB_OFFLINE_DATA_PATH", f"{tmp}/teacher")
    cfg = load_config(None, ["training.epochs=2", f"output.dir={tmp}/out"])
    prep = prepare(cfg)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    tok = load_tokenizer(prep.student_path)
    dims = TeacherDims.from_manifest(prep.manifest)
    trainer = Trainer(cfg, "black_box", 0, prep.student_path, tok, dims)
    stream = ShardStream(prep.data_dir, prep.manifest, SIGNALS_BY_TYPE["black_box"], trainer.micro_batch,
                         cfg.sweep.data_cpus, cfg.sweep.stall_timeout_s)
    trainer._setup_optimisation(cfg.training.epochs * 100)
    trainer._train_epoch(stream, 0)  # warm-up: Ray Data workers, allocator
    t0 = time.perf_counter()
    m = trainer._train_epoch(stream, 1)
    trial_s = time.perf_counter() - t0
    batches = list(stream.epoch(1, 0))
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    model = load_model(prep.student_path)
    bare_loop(model, batches[:5], cfg.training.lr, cfg.training.grad_clip, cfg.loss.temperature)  # warm-up
    bare = bare_loop(model, batches, cfg.training.lr, cfg.training.grad_clip, cfg.loss.temperature)
    trial = tokens / trial_s
    print(f"trial_loop_tokens_per_s: {trial:.0f}")
    print(f"bare_loop_tokens_per_s: {bare:.0f}")
    print(f"trial_vs_bare_ratio: {trial / bare:.3f}")
    print(f"trial_epoch_s: {trial_s:.2f}")
    print(f"trial_data_wait_s: {m['data_wait_s']:.2f}")
    print(f"trial_compute_s: {trial_s - m['data_wait_s']:.2f}")
    print(f"trial_reported_tokens_per_s: {m['tokens_per_s']:.0f}")
    ray.shutdown()


if __name__ == "__main__":
    main()
