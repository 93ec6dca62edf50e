"""Hidden-loss magnitudes at step 0 on a real model: which hidden loss keeps the terms comparable.

SmolLM2-135M-Instruct (preset:smollm2-135m-instruct) as teacher, a 6-block student cut from it
(blocks 0, 6, 12, 17, 23, 29, mapped from_teacher), 20 real SST-2 training rows. Prints the
residual stream's scale per stored block, then every loss term at step 0 (fresh projectors, as a
trial starts): task, KD, and the hidden term under each candidate definition:
  mse          raw MSE through the projector (the old default)
  rms_mse      MSE of both sides normalised as RMSNorm does (x / rms(x) per position, no gain)
  cosine       1 - cosine through the projector (the default)
  std_mse      MSE after standardising each dimension by the teacher states' mean/std over the rows
  cka          1 - linear CKA (no projector)

Usage: python benchmarks/hidden_loss_scale.py [--cache DIR]   (needs the smollm2 extra)
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wbvb.config import config_from_dict  # noqa: E402
from wbvb.feed.batches import collate, encode_example  # noqa: E402
from wbvb.models.load import load_model, load_tokenizer, resolve_model_paths  # noqa: E402
from wbvb.store.schema import TeacherDims  # noqa: E402
from wbvb.tasks import load_all  # noqa: E402
from wbvb.teacher.signals import TeacherSignals  # noqa: E402
from wbvb.train import losses  # noqa: E402
from wbvb.train.student import StudentLoss  # noqa: E402

BLOCKS = [0, 6, 12, 17, 23, 29]


def rms_normed(x: torch.Tensor) -> torch.Tensor:
    return x / x.pow(2).mean(-1, keepdim=True).sqrt().clamp_min(1e-12)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", default=os.environ.get("WBVB_CACHE", str(Path.home() / ".cache" / "wbvb")))
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = config_from_dict({
        "models": {"teacher": "preset:smollm2-135m-instruct", "student": {"from_teacher": {"blocks": BLOCKS}},
                   "cache_dir": args.cache},
        "tasks": [{"name": "sst2", "source": "local", "n_train": 20, "n_eval": 1}],
        "sweep": {"distill_types": ["combined"], "seeds": [0]}})
    paths = resolve_model_paths(cfg)
    tok = load_tokenizer(paths["teacher"])
    teacher, student = load_model(paths["teacher"]).eval(), load_model(paths["student"])
    rows = [encode_example(ex, tok, 128) for ex in load_all(cfg.tasks, "train")]
    batch = collate(rows, tok.pad_token_id)
    vals, ids, hidden, _ = TeacherSignals(teacher, BLOCKS, [29])(
        batch["input_ids"], batch["attention_mask"], [len(r["input_ids"]) for r in rows], 8, len(tok), 1, 1)
    batch.update(topk_ids=ids, topk_logprobs=vals, hidden=hidden)
    mask = batch["attention_mask"]
    real = mask.bool()
    print(f"rows: {len(rows)}")
    print(f"real_tokens: {int(mask.sum())}")
    for j, b in enumerate(BLOCKS):
        h = hidden[:, j][real]
        print(f"teacher_block{b}_rms: {h.pow(2).mean().sqrt():.4g}")
        print(f"teacher_block{b}_max_abs: {h.abs().max():.6g}")
    dims = TeacherDims(hidden_size=576, hidden_layers=tuple(BLOCKS), attention_layers=(29,), num_layers=30, heads=9)
    for kind in ("mse", "cosine", "cka"):
        cfg.loss.hidden_loss = kind
        torch.manual_seed(0)  # the same fresh projectors for mse and cosine
        loss = StudentLoss(cfg, "hidden_state", dims, student.config, len(tok))
        bundle = loss.bundle(student)
        with torch.no_grad():
            _, parts = loss(bundle, bundle.projectors, batch, torch.device("cpu"))
        if kind == "mse":
            for term in ("task", "kd"):
                print(f"{term}_loss_step0: {parts[term]:.4g}")
                print(f"{term}_weighted_step0: {parts[term + '_weighted']:.4g}")
            with torch.no_grad():  # the same student states and projectors, other definitions
                _, s_hidden, _ = bundle(batch["input_ids"].to(torch.long), mask)
                rms, std = [], []
                for s, j in loss.hidden_pairs:
                    p, t = bundle.projectors[str(s)](s_hidden[s].float()), hidden[:, j].float()
                    rms.append(losses._masked_mean((rms_normed(p) - rms_normed(t)).pow(2).mean(-1), mask))
                    mu, sd = t[real].mean(0), t[real].std(0).clamp_min(1e-6)
                    std.append(losses._masked_mean((p - (t - mu) / sd).pow(2).mean(-1), mask))
                print(f"hidden_rms_mse_step0: {torch.stack(rms).mean():.4g}")
                print(f"hidden_std_mse_step0: {torch.stack(std).mean():.4g}")
        print(f"hidden_{kind}_step0: {parts['hidden']:.4g}")
        print(f"hidden_{kind}_weighted_step0 (gamma_hidden {cfg.loss.gamma_hidden:g}): {parts['hidden_weighted']:.4g}")


if __name__ == "__main__":
    main()
