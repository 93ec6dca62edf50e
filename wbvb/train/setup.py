"""What a training run sets up before its first step: seeds and RNG states, micro-batch and
accumulation, mixed precision, and the DeepSpeed config filled from wbvb's training config."""
from __future__ import annotations

import json
import random
import socket
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from wbvb.distill_types import DISTILL
from wbvb.models.load import native_bf16


def rng_states() -> dict:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if states.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def micro_batch_size(tr, distill_type: str) -> int:
    """White-box trials carry hidden/attention tensors: they may use a smaller micro-batch."""
    return (tr.whitebox_batch_size or tr.batch_size) if DISTILL[distill_type].white_box else tr.batch_size


def accumulation_steps(tr, distill_type: str) -> int:
    """Micro-batches per optimizer step, so every type reaches the same effective batch."""
    return (tr.effective_batch_size or tr.batch_size) // micro_batch_size(tr, distill_type)


def autocast_dtype(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """None for fp32; bf16 where the GPU has it natively, else fp16 (which needs a GradScaler)."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "auto":
        return torch.bfloat16 if native_bf16() else torch.float16
    return torch.bfloat16 if precision == "bf16" else torch.float16


def cap_gpu_memory(gpus: float) -> Optional[float]:
    """A packed trial (a fraction of a GPU) gets that fraction of the card's memory and no more, so
    one that outgrows its share fails alone (an OutOfMemoryError naming the packing) instead of
    taking its neighbours down; returns the cap, None when the trial has whole GPUs or none."""
    if not 0 < gpus < 1 or not torch.cuda.is_available():
        return None
    torch.cuda.set_per_process_memory_fraction(gpus, 0)
    return gpus


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def deepspeed_config(path: str, tr, lr: float, distill_type: str) -> dict:
    """Read a DeepSpeed JSON and fill its "auto" values from wbvb's training config."""
    cfg = json.loads(Path(path).expanduser().read_text())
    micro, accum = micro_batch_size(tr, distill_type), accumulation_steps(tr, distill_type)
    fill = {"train_micro_batch_size_per_gpu": micro, "gradient_accumulation_steps": accum,
            "train_batch_size": micro * accum, "gradient_clipping": tr.grad_clip}
    for k, v in fill.items():
        if cfg.get(k, "auto") == "auto":
            cfg[k] = v
    params = cfg.get("optimizer", {}).get("params", {})
    for k, v in {"lr": lr, "weight_decay": tr.weight_decay}.items():
        if params.get(k) == "auto":
            params[k] = v
    for section in ("bf16", "fp16"):
        if isinstance(cfg.get(section), dict) and cfg[section].get("enabled") == "auto":
            cfg[section]["enabled"] = torch.cuda.is_available() and (section == "bf16") == native_bf16()
    return cfg
