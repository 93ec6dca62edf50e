"""A student cut from the teacher: the teacher's config with fewer blocks, initialised from it.

DistilBERT-style: the embeddings, the final norm (and the LM head when untied) and the chosen
blocks are copied from the teacher, block ``blocks[i]`` becoming student block ``i``. The result
is saved to the cache (keyed on the teacher's identity and the blocks) and loaded back through
``from_pretrained`` like any other student.
"""
from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path

from wbvb.config import ConfigError, StudentCut
from wbvb.models.cache import build_once

CUT_FORMAT = 2  # 2: no quantization_config carried over from a GGUF-loaded teacher
_BLOCK_KEY = re.compile(r"^(model\.layers\.)(\d+)(\..+)$")  # Llama-family decoders: model.layers.N.*


def cut_blocks(cut: StudentCut, teacher_blocks: int) -> list[int]:
    """The teacher blocks the student keeps: ``blocks`` as given (checked against the teacher's
    depth), or ``every: k``: blocks 0, k, 2k, ... below the teacher's depth (DistilBERT's rule)."""
    spec = cut.from_teacher
    blocks = list(spec.blocks) if spec.blocks else list(range(0, teacher_blocks, spec.every))
    bad = [b for b in blocks if not 0 <= b < teacher_blocks]
    if bad:
        raise ConfigError(f"models.student.from_teacher.blocks: block {bad[0]} does not exist in the "
                          f"{teacher_blocks}-block teacher; choose blocks 0..{teacher_blocks - 1}")
    return blocks


def teacher_identity(path: str) -> dict:
    """What keys a cut: a local folder by its config and weight files (name, size, mtime), a hub id by name."""
    folder = Path(path)
    if not folder.is_dir():
        return {"hub_id": path}
    files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".json"))
    return {"path": str(folder.resolve()),
            "files": [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]}


def cut_key(teacher_path: str, blocks: list[int]) -> str:
    blob = json.dumps({"format": CUT_FORMAT, "teacher": teacher_identity(teacher_path), "blocks": blocks},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cut_config(teacher_config, blocks: list[int]):
    """The teacher's config with only ``blocks`` (per-block lists such as ``layer_types`` cut alike)."""
    config = copy.deepcopy(teacher_config)
    n = teacher_config.num_hidden_layers
    for key, value in vars(teacher_config).items():
        if isinstance(value, list) and len(value) == n and key != "architectures":
            setattr(config, key, [value[b] for b in blocks])
    config.num_hidden_layers = len(blocks)
    if hasattr(config, "quantization_config"):  # the cut's weights are plain tensors, whatever the teacher's
        del config.quantization_config
    return config


def cut_state_dict(teacher_state: dict, blocks: list[int]) -> dict:
    """Student keys -> teacher tensors: block ``blocks[i]``'s weights as block ``i``, all else as is."""
    new_index = {b: i for i, b in enumerate(blocks)}
    out = {}
    for key, value in teacher_state.items():
        m = _BLOCK_KEY.match(key)
        if m is None:
            out[key] = value
        elif int(m.group(2)) in new_index:
            out[f"{m.group(1)}{new_index[int(m.group(2))]}{m.group(3)}"] = value
    return out


def ensure_cut(teacher_path: str, cut: StudentCut, cache_dir: Path) -> str:
    """The ``from_pretrained`` folder of the student cut from ``teacher_path`` (built once)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    teacher_config = AutoConfig.from_pretrained(teacher_path)
    blocks = cut_blocks(cut, teacher_config.num_hidden_layers)
    root = Path(cache_dir) / "students" / f"cut-{cut_key(teacher_path, blocks)}"

    def build(tmp: Path) -> dict:
        teacher = AutoModelForCausalLM.from_pretrained(teacher_path, dtype=torch.float32)
        state = teacher.state_dict()
        if not any(_BLOCK_KEY.match(k) for k in state):
            raise ConfigError(f"models.student.from_teacher: the teacher '{teacher_path}' ({type(teacher).__name__}) "
                              "has no model.layers.N blocks to cut (a Llama-family decoder is needed); give "
                              "models.student as a model name instead")
        student = AutoModelForCausalLM.from_config(cut_config(teacher.config, blocks), dtype=torch.float32)
        student.load_state_dict(cut_state_dict(state, blocks), strict=True)
        student.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(teacher_path).save_pretrained(tmp)
        return {"teacher": teacher_identity(teacher_path), "blocks": blocks, "format": CUT_FORMAT}

    return str(build_once(root, build))
