"""Sparse top-k KD (wbvb.train.kd) vs the dense reconstruction the earlier scripts used.

Dense: scatter the stored top-k log-probs into a vocabulary-sized tensor (-inf elsewhere),
softmax at T, KL against the student's log-softmax at T. Sparse with ``tail_bucket=False`` is
defined the same way, so their values must agree; the default (tail bucket) is timed too.
Shapes: vocab 32000, k 128, seq 512, batch 4, T 2, every position an answer token (worst case
for the sparse loss). Teacher inputs in the store's dtypes (int16 ids, float16 log-probs).

Each variant runs in a fresh process; "extra peak" is the rise of the process's peak RSS (VmHWM,
reset after the inputs are built) over the first forward + backward, minus the student logits' gradient (both variants must allocate it).

python benchmarks/kd_sparse_vs_dense.py  -> `name: value` lines
"""
from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

B, L, V, K, T = 4, 512, 32000, 128, 2.0
REPS = 3


def _inputs():
    import torch

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(B, L, V, generator=g)
    teacher = torch.randn(B, L, V, generator=g) * 2
    vals, ids = torch.log_softmax(teacher, -1).topk(K, -1)
    del teacher
    answer = torch.ones(B, L, dtype=torch.bool)
    return logits, ids.to(torch.int16), vals.half(), answer


def dense_loss(logits, ids, vals, answer):
    import torch
    import torch.nn.functional as F

    full = torch.full(logits.shape, float("-inf"), dtype=torch.float32)
    full.scatter_(-1, ids.long(), vals.float())
    p = torch.softmax(full / T, -1)[:, :-1]
    s = torch.log_softmax(logits / T, -1)[:, :-1]
    kl = F.kl_div(s, p, reduction="none").sum(-1)
    return kl[answer[:, 1:]].mean() * T * T, full.numel() * full.element_size()


def sparse_loss(logits, ids, vals, answer, tail: bool):
    from wbvb.config import LossConfig
    from wbvb.train.kd import topk_kd_loss

    chunk = LossConfig().kd_chunk_positions
    loss = topk_kd_loss(logits, ids, vals, answer, temperature=T, tail_bucket=tail, chunk=chunk)
    return loss, ids.numel() * ids.element_size() + vals.numel() * vals.element_size()


def _reset_peak_rss() -> None:
    """Linux: writing 5 to clear_refs resets the peak RSS (VmHWM) to the current RSS."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def worker(variant: str) -> None:
    import torch

    torch.manual_seed(0)
    logits, ids, vals, answer = _inputs()
    fn = {"dense": dense_loss, "sparse": lambda *a: sparse_loss(*a, tail=False),
          "sparse_tail": lambda *a: sparse_loss(*a, tail=True)}[variant]
    leaf = logits.requires_grad_(True)
    _reset_peak_rss()
    before = _peak_rss_bytes()
    times, value, teacher_bytes = [], None, 0
    for _ in range(REPS):
        leaf.grad = None
        t0 = time.perf_counter()
        loss, teacher_bytes = fn(leaf, ids, vals, answer)
        loss.backward()
        times.append(time.perf_counter() - t0)
        value = loss.item()
        if len(times) == 1:
            first_peak = _peak_rss_bytes()
    grad_bytes = leaf.grad.numel() * leaf.grad.element_size()
    print(json.dumps({"time_s": sorted(times)[len(times) // 2], "value": value, "teacher_bytes": teacher_bytes,
                      "extra_peak_bytes": max(0, first_peak - before - grad_bytes)}))


def run(variant: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", variant], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    dense, sparse, tail = run("dense"), run("sparse"), run("sparse_tail")
    mib = 1 << 20
    print(f"kd_dense_teacher_mib: {dense['teacher_bytes'] / mib:.1f}")
    print(f"kd_sparse_teacher_mib: {sparse['teacher_bytes'] / mib:.2f}")
    print(f"kd_teacher_bytes_ratio: {dense['teacher_bytes'] / sparse['teacher_bytes']:.1f}")
    print(f"kd_dense_fwd_bwd_s: {dense['time_s']:.3f}")
    print(f"kd_sparse_fwd_bwd_s: {sparse['time_s']:.3f}")
    print(f"kd_sparse_tail_fwd_bwd_s: {tail['time_s']:.3f}")
    print(f"kd_speedup: {dense['time_s'] / sparse['time_s']:.2f}")
    print(f"kd_speedup_tail_bucket: {dense['time_s'] / tail['time_s']:.2f}")
    print(f"kd_dense_extra_peak_mib: {dense['extra_peak_bytes'] / mib:.1f}")
    print(f"kd_sparse_extra_peak_mib: {sparse['extra_peak_bytes'] / mib:.1f}")
    print(f"kd_sparse_tail_extra_peak_mib: {tail['extra_peak_bytes'] / mib:.1f}")
    print(f"kd_extra_peak_ratio: {dense['extra_peak_bytes'] / max(sparse['extra_peak_bytes'], 1):.1f}")
    print(f"kd_value_abs_diff: {abs(dense['value'] - sparse['value']):.2e}")
    print(f"kd_value_dense: {dense['value']:.6f}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker(sys.argv[2])
    else:
        main()
