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
