"""The CUDA code paths checked on CPU: mocked device properties, no GPU needed."""
import json

import pytest
import torch

from wbvb.config import config_from_dict
from wbvb.train.setup import autocast_dtype, deepspeed_config


@pytest.fixture
def gpu(monkeypatch):
    """A CUDA device of a given compute capability whose torch.cuda.is_bf16_supported() says True,
    as it does on a T4 or V100 (bf16 emulated)."""
    def make(capability):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    return make


@pytest.mark.parametrize("capability, dtype", [((7, 5), torch.float16), ((7, 0), torch.float16),
                                               ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)])
def test_auto_precision_picks_bf16_only_where_the_hardware_has_it(gpu, capability, dtype):
    gpu(capability)  # T4 7.5, V100 7.0: fp16 + GradScaler; A100 8.0, H100 9.0: bf16
    assert autocast_dtype("auto", torch.device("cuda")) == dtype
    assert autocast_dtype("auto", torch.device("cpu")) is None


@pytest.mark.parametrize("capability, bf16", [((7, 5), False), ((8, 0), True)])
def test_deepspeed_auto_precision_follows_the_hardware(gpu, tmp_path, capability, bf16):
    gpu(capability)
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"bf16": {"enabled": "auto"}, "fp16": {"enabled": "auto"}}))
    cfg = deepspeed_config(str(path), config_from_dict({}).training, 1e-3, "sft")
    assert (cfg["bf16"]["enabled"], cfg["fp16"]["enabled"]) == (bf16, not bf16)


@pytest.mark.parametrize("gpus, cap", [(0.33, 0.33), (0.5, 0.5), (1.0, None), (2.0, None), (0.0, None)])
def test_a_packed_trial_is_capped_at_its_share_of_the_card(monkeypatch, gpus, cap):
    from wbvb.train.setup import cap_gpu_memory

    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, device=None: calls.append((f, device)))
    assert cap_gpu_memory(gpus) == cap
    assert calls == ([(cap, 0)] if cap else [])


@pytest.mark.parametrize("capability, dtype", [((7, 5), torch.float16), ((8, 0), torch.bfloat16)])
def test_the_teacher_runs_in_half_precision_on_a_gpu_and_says_so_in_its_fingerprint(gpu, tiny_cfg, capability,
                                                                                    dtype):
    from wbvb.models.load import load_tokenizer, resolve_model_paths, teacher_dtype
    from wbvb.teacher.generate import fingerprint_inputs

    tiny_cfg.training.device = "auto"  # the GPU when one is visible
    paths = resolve_model_paths(tiny_cfg)
    tok = load_tokenizer(paths["teacher"])
    on_cpu = fingerprint_inputs(tiny_cfg, paths["teacher"], tok)
    assert teacher_dtype(torch.device("cpu")) == torch.float32 and "compute_dtype" not in on_cpu
    gpu(capability)  # T4: fp16 (bf16 would be emulated); A100: bf16
    assert teacher_dtype(torch.device("cuda")) == dtype
    on_gpu = fingerprint_inputs(tiny_cfg, paths["teacher"], tok)
    assert on_gpu == {**on_cpu, "compute_dtype": str(dtype).removeprefix("torch.")}


def test_half_precision_teacher_signals_keep_the_store_bound(tiny_cfg):
    """bf16 weights and compute, fp32 log-softmax: the top-k log-probs agree with the same bf16
    logits' fp32 log-softmax to the store's 1e-3 relative bound (the rounding is the store's, not the
    softmax's)."""
    from wbvb.teacher.signals import topk_logprobs

    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(12, 600, generator=g) * 4).to(torch.bfloat16)  # [N, V]: rows at real positions
    vals, ids = topk_logprobs(logits, 8, 600)
    ref = torch.log_softmax(logits.double(), dim=-1).gather(-1, ids)
    assert vals.dtype == torch.float32
    assert torch.allclose(vals.double(), ref, rtol=1e-3, atol=1e-6)
    dense = torch.log_softmax(logits.double(), dim=-1)
    assert torch.equal(ref, dense.topk(8, dim=-1).values)  # the k largest (ties may swap equal ids)
