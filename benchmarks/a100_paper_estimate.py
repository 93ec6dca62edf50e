"""The seed study's grid on one A100, on paper: GPU-hours, bytes written and kept, before and after.

No GPU is lent here, so these are arithmetic from stated rates, not measurements; every assumption
is a named constant below and every figure is printed as a ``name: value`` line. Run
``benchmarks/gpu_checks.py`` where a GPU is lent to measure what this estimates.

Grid: 4 white-box/black-box types x 7 seeds, plus sft and seq_kd once (30 trials), TinyLlama-1.1B
student, 7,000 train examples (SST-2 5,000, MMLU 1,000, GSM8K 1,000), 3 epochs; eval on SST-2 dev
(872), MMLU val (1,531), GSM8K test (1,319, greedy, up to 256 new tokens).
Before: sweeps/a100.yaml as it was (fp32 eval of the whole splits every epoch plus a second pass for
validation loss; a 13.2 GB checkpoint with AdamW state every 200 steps and at every epoch end, copied
by Tune to the run folder (Drive on Colab)). After: sweeps/a100-40gb.yaml / a100-80gb.yaml (bf16
eval, 200 examples per task for epochs 1-2, the whole splits at the last, 200 held-out train examples per
task every epoch for epoch selection; resume state on local disk,
latest only; Tune keeps a pointer and the bf16 final model of each type's first seed,
``training.keep_final_model: first_seed``; ``all`` keeps every trial's).

    python benchmarks/a100_paper_estimate.py
"""
from __future__ import annotations

import math

P = 1.1e9  # TinyLlama-1.1B parameters
LAYERS, D, VOCAB = 22, 2048, 32000
TRIALS = 4 * 7 + 2
TYPES = 4 + 2  # one kept final model per distill type (keep_final_model: first_seed)
EPOCHS = 3
TRAIN = {"sst2": (5000, 64), "mmlu": (1000, 256), "gsm8k": (1000, 320)}  # examples, padded tokens each
EVAL = {"sst2": (872, 64, 2), "mmlu": (1531, 256, 4), "gsm8k": (1319, 96, 0)}  # examples, prompt tokens, choices
GEN_TOKENS, EVAL_BATCH = 256, 16
PEAK_BF16, PEAK_FP32 = 312e12, 19.5e12  # A100 dense FLOP/s (fp32 without TF32)
HBM = 1.55e12  # bytes/s
MFU_TRAIN = 0.30  # achieved fraction of bf16 peak in training (AdamW, autocast, seq <= 512)
MFU_EVAL = 0.45  # achieved fraction of peak in eval forwards (no backward, larger batches)
BW_DECODE = 0.5  # achieved fraction of HBM bandwidth per decode step (weights read once a step)
DRIVE_BPS = 60e6  # Google Drive FUSE writes from Colab, bytes/s (blocking the trial while Tune copies)
LOCAL_BPS = 1.0e9  # local NVMe, bytes/s
CKPT_FULL = 12 * P  # fp32 weights + AdamW m, v: 13.2 GB
FINAL_BF16 = 2 * P  # bf16 save_pretrained
STEPS_BEFORE = math.ceil(7000 / 16)  # a100.yaml: effective batch 16, checkpoint every 200 steps
SUBSET = 200


def train_s() -> float:
    tokens = sum(n * t for n, t in TRAIN.values()) * EPOCHS
    return 6 * P * tokens / (PEAK_BF16 * MFU_TRAIN)


def eval_s(fraction: float, peak: float, bytes_per_param: int, second_pass: bool) -> float:
    """One evaluation of ``fraction`` of each split at ``peak``: choice forwards (prompt recomputed
    per choice), greedy decoding (memory-bound: the weights read once a step), validation loss."""
    flops = sum(n * fraction * t * max(c, 1) * 2 * P for n, t, c in EVAL.values())
    if second_pass:
        flops += sum(n * fraction * t * 2 * P for n, t, _ in EVAL.values())
    n_gen = EVAL["gsm8k"][0] * fraction
    decode = math.ceil(n_gen / EVAL_BATCH) * GEN_TOKENS * bytes_per_param * P / (HBM * BW_DECODE)
    return flops / (peak * MFU_EVAL) + decode


def main() -> None:
    t_train = train_s()
    ev_before = EPOCHS * eval_s(1.0, PEAK_FP32, 4, True)
    full = eval_s(1.0, PEAK_BF16, 2, False)
    sub = eval_s(SUBSET / 1319, PEAK_BF16, 2, False)  # 200 per task: the GSM8K fraction bounds it
    ev_after = (EPOCHS - 1) * sub + full + EPOCHS * sub  # + the n_select set (200 per task) every epoch
    ck_before_n = EPOCHS * (STEPS_BEFORE // 200) + EPOCHS
    io_before = ck_before_n * CKPT_FULL * (1 / LOCAL_BPS + 1 / DRIVE_BPS)  # written, then copied by Tune
    ck_after_n = EPOCHS  # the new recipes: epoch ends only (an epoch trains in about a minute), latest kept
    io_after = ck_after_n * CKPT_FULL / LOCAL_BPS + FINAL_BF16 / DRIVE_BPS
    before = t_train + ev_before + io_before
    after = t_train + ev_after + io_after
    print(f"train_s_per_trial: {t_train:.0f}")
    print(f"eval_s_per_trial_before: {ev_before:.0f}")
    print(f"eval_s_per_trial_after: {ev_after:.0f}")
    print(f"eval_share_before: {ev_before / before:.2f}")
    print(f"checkpoint_io_s_per_trial_before: {io_before:.0f}")
    print(f"checkpoint_io_s_per_trial_after: {io_after:.0f}")
    # one 40 GB card runs one trial at a time: GPU-hours = wall hours
    print(f"grid_gpu_h_40gb_before: {TRIALS * before / 3600:.1f}")
    print(f"grid_gpu_h_40gb_after: {TRIALS * after / 3600:.1f}")
    # 80 GB, two packed: the GPU-bound parts add up, the checkpoint I/O of one overlaps the other's compute
    print(f"grid_gpu_h_80gb_after: {TRIALS * (t_train + ev_after + io_after / 2) / 3600:.1f}")
    written_before = ck_before_n * CKPT_FULL * 2  # local temp dir + Tune's copy
    written_after = ck_after_n * CKPT_FULL + FINAL_BF16
    print(f"bytes_written_per_trial_before_gb: {written_before / 1e9:.0f}")
    print(f"bytes_written_per_trial_after_gb: {written_after / 1e9:.1f}")
    print(f"bytes_to_run_storage_per_trial_before_gb: {ck_before_n * CKPT_FULL / 1e9:.0f}")
    print(f"bytes_to_run_storage_per_trial_after_gb: {FINAL_BF16 / 1e9:.1f}")  # at most: a first seed's trial
    print(f"bytes_kept_grid_before_gb: {TRIALS * (CKPT_FULL + FINAL_BF16 * 2) / 1e9:.0f}")  # num_to_keep=1, fp32 final
    print(f"bytes_kept_grid_after_gb: {TYPES * FINAL_BF16 / 1e9:.1f}")  # keep_final_model: first_seed
    print(f"bytes_kept_grid_after_all_final_models_gb: {TRIALS * FINAL_BF16 / 1e9:.0f}")  # keep_final_model: all
    print(f"bytes_kept_local_disk_peak_gb: {2 * CKPT_FULL / 1e9:.1f}")  # latest + the one being written
    # MFU of the training phase, aggregate over the packed trials (what MFU_TRAIN assumes per card)
    print(f"train_mfu_assumed: {MFU_TRAIN:.2f}")


if __name__ == "__main__":
    main()
