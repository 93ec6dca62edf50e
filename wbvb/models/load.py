"""Load teacher/student (hub id, local dir, preset, GGUF file or a cut of the teacher) and check
they can be distilled."""
from __future__ import annotations


import torch

from wbvb.config import ConfigError, is_cut
from wbvb.distill_types import DISTILL, TEXT_ONLY_TYPES
from wbvb.models.convert import REAL_PRESETS, ensure_gguf, gguf_file, is_gguf, preset_gguf
from wbvb.models.cut import ensure_cut
from wbvb.models.presets import ensure_preset, is_preset


def resolve_model_paths(cfg) -> dict[str, str]:
    """Map the config's model names to loadable paths/ids (building presets, converting GGUF files
    and cutting a student from the teacher if needed)."""
    out = {}
    preset_paths = None
    for role in ("teacher", "student"):
        name = getattr(cfg.models, role)
        if is_cut(name):  # the teacher resolved first: the student is cut from it
            out[role] = ensure_cut(out["teacher"], name, cfg.cache_dir)
        elif is_preset(name) and name.removeprefix("preset:") in REAL_PRESETS:
            preset = name.removeprefix("preset:")
            out[role] = str(ensure_gguf(preset_gguf(preset, role), cfg.cache_dir, preset))
        elif is_gguf(name):
            out[role] = str(ensure_gguf(gguf_file(name, role), cfg.cache_dir))
        elif is_preset(name):
            if name != "preset:tiny":
                raise ConfigError(f"models.{role}: unknown preset '{name}'; the built-in presets are preset:tiny, "
                                  + ", ".join(f"preset:{p}" for p in REAL_PRESETS))
            preset_paths = preset_paths or ensure_preset(cfg.models.preset, cfg.cache_dir, cfg.tasks)
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


def load_model(path: str, dtype=None):
    """Load a causal LM with the fast attention kernel; ``capture.Capture`` switches only the blocks
    whose attention probabilities are read (a student's mapped blocks, the teacher's stored ones)."""
    from transformers import AutoModelForCausalLM

    kwargs = {"dtype": dtype or torch.float32}
    try:
        return AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as exc:
        raise ConfigError(f"cannot load a causal LM from '{path}': {exc}") from exc


def real_vocab_size(tokenizer) -> int:
    """Token ids the tokenizer can produce; embedding rows past it are padding (e.g. 152,064 rows
    for a 151,936-token vocabulary) and their logits are dropped."""
    return len(tokenizer)


PROBE_TEXT = "The quick brown fox: 12 + 30 = 42.\nAnswer: positive"


def tokenizer_mismatch(teacher_tok, student_tok) -> str:
    """'' when both tokenize identically (same vocab map, same ids for a probe text), else why not."""
    tv, sv = teacher_tok.get_vocab(), student_tok.get_vocab()
    if tv != sv:
        only_t, only_s = len(tv.keys() - sv.keys()), len(sv.keys() - tv.keys())
        moved = sum(1 for k in tv.keys() & sv.keys() if tv[k] != sv[k])
        return (f"vocabularies differ ({len(tv)} vs {len(sv)} tokens; {only_t} only in the teacher's, "
                f"{only_s} only in the student's, {moved} shared tokens with different ids)")
    t_ids, s_ids = teacher_tok(PROBE_TEXT)["input_ids"], student_tok(PROBE_TEXT)["input_ids"]
    if t_ids != s_ids:
        return f"the probe text {PROBE_TEXT!r} tokenizes differently ({t_ids} vs {s_ids})"
    return ""


def check_tokenizers(teacher_tok, student_tok, teacher_name: str, student_name: str, distill_types) -> None:
    """Token-level KD and hidden/attention alignment need one vocabulary and one tokenization."""
    needs_teacher = [t for t in distill_types if not DISTILL[t].text_only]
    if not needs_teacher:
        return
    why = tokenizer_mismatch(teacher_tok, student_tok)
    if why:
        raise ConfigError(
            f"teacher '{teacher_name}' and student '{student_name}' do not share a tokenizer: {why}. "
            f"Token-level KD and hidden/attention alignment compare them position by position, so "
            f"{', '.join(needs_teacher)} cannot run. Distill types that remain possible with these models: "
            f"{', '.join(TEXT_ONLY_TYPES)} (text-level; set sweep.distill_types to those the config offers), "
            "or pick a student of the teacher's family")


def num_blocks(path: str) -> int:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path).num_hidden_layers
    except OSError as exc:
        raise ConfigError(f"cannot read the model config of '{path}': {exc}") from exc



def native_bf16() -> bool:
    """bf16 in hardware (compute capability 8.0+: A100, H100, L4, A10G). ``torch.cuda.is_bf16_supported()``
    also counts emulation, which would pick a slow bf16 on a T4 or V100."""
    return torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 0)


def teacher_dtype(device: torch.device) -> torch.dtype:
    """The teacher's weights and compute: bf16 on a GPU that has it natively, fp16 on an older GPU
    (bf16 is emulated there), fp32 on the CPU. Half the memory of fp32 (a 7B teacher: 14 GB, not 28)
    and tensor-core speed; the top-k log-softmax is still taken in fp32 (``teacher.signals``)."""
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if native_bf16() else torch.float16


def load_teacher(path: str, device: torch.device):
    """The teacher in ``teacher_dtype`` on ``device``, in eval mode; on a GPU, TF32 for what stays fp32."""
    dtype = teacher_dtype(device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        if dtype == torch.float16:
            print("teacher: this GPU has no native bf16 (compute capability < 8.0); the teacher runs in fp16",
                  flush=True)
    return load_model(path, dtype).to(device).eval()


def pick_device(name: str) -> torch.device:
    """training.device / teacher device: auto (CUDA when visible), cpu, cuda or cuda:N."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"training.device is '{name}' but no CUDA device is visible; set training.device=cpu")
    return torch.device(name)
