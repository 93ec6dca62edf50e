"""Load teacher/student (hub id, local dir or preset) and check they can be distilled."""
from __future__ import annotations

from pathlib import Path

from wbvb.config import SIGNALS_BY_TYPE, ConfigError
from wbvb.presets import ensure_preset, is_preset


def resolve_model_paths(cfg) -> dict[str, str]:
    """Map the config's model names to loadable paths/ids (building presets if needed)."""
    out = {}
    preset_paths = None
    for role in ("teacher", "student"):
        name = getattr(cfg.models, role)
        if is_preset(name):
            if name != "preset:tiny":
                raise ConfigError(f"models.{role}: unknown preset '{name}'; the built-in preset is 'preset:tiny'")
            preset_paths = preset_paths or ensure_preset(cfg.models.preset, cfg.cache_dir)
            out[role] = str(preset_paths[role])
        else:
            out[role] = name
    return out


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path)
    except OSError as exc:
        raise ConfigError(f"cannot load a tokenizer from '{path}': {exc}. Give a local dir written by "
                          "save_pretrained or a hub id reachable from this machine.") from exc
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(path: str, need_attentions: bool = False, dtype=None):
    """Load a causal LM; eager attention only where attention maps must be returned."""
    import torch
    from transformers import AutoModelForCausalLM

    kwargs = {"dtype": dtype or torch.float32}
    if need_attentions:
        kwargs["attn_implementation"] = "eager"
    try:
        return AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as exc:
        raise ConfigError(f"cannot load a causal LM from '{path}': {exc}") from exc


def check_tokenizers(teacher_tok, student_tok, teacher_name: str, student_name: str, distill_types) -> None:
    """Token-level KD and alignment need one vocabulary; refuse clearly otherwise."""
    needs_teacher = [t for t in distill_types if SIGNALS_BY_TYPE[t]]
    if not needs_teacher:
        return
    probe = "The quick brown fox: 12 + 30 = 42.\nAnswer: positive"
    same = teacher_tok.get_vocab() == student_tok.get_vocab() and (
        teacher_tok(probe)["input_ids"] == student_tok(probe)["input_ids"])
    if not same:
        raise ConfigError(
            f"teacher '{teacher_name}' and student '{student_name}' do not share a tokenizer, so "
            f"{', '.join(needs_teacher)} (token-level KD / alignment) cannot be computed. "
            "Use a student of the teacher's family, or run only: sft")
