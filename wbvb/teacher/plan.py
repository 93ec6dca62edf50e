"""The teacher stage's plan: its models' shapes, the store's bytes per signal from the task rows'
token lengths, whether a matching store exists, and the stage's FLOPs. Reads configs and
tokenizers only, never weights (``python -m wbvb.teacher generate --plan``; the sweep's plan adds to it)."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from wbvb import storage
from wbvb.config import ConfigError, is_cut
from wbvb.distill_types import DISTILL
from wbvb.feed.batches import encode_example
from wbvb.models import cost
from wbvb.models.convert import REAL_PRESETS, converted_dir, gguf_file, is_gguf, preset_gguf
from wbvb.models.cut import cut_blocks
from wbvb.models.load import load_tokenizer
from wbvb.models.presets import preset_config, preset_root, preset_sizes, preset_tokenizer
from wbvb.store.codec import first_attention_row, strided, tri_count
from wbvb.store.compress import bits_for, cbrt_size, packed_size
from wbvb.store.schema import MANIFEST, read_manifest
from wbvb.tasks import load_all
from wbvb.teacher.finetune import finetuned_dir
from wbvb.teacher.generate import store_dir
from wbvb.train.alignment import resolve_layers

ELEMENT_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4}


@dataclass
class Lengths:
    """Token counts of a split's rows as the stage encodes them: (sequence, prompt) per row."""

    seq: list[int]
    prompt: list[int]
    estimated: bool = False  # from CHARS_PER_TOKEN, no tokenizer was readable

    @property
    def tokens(self) -> int:
        return sum(self.seq)


@dataclass
class Models:
    """What the plan knows of teacher and student without their weights."""

    teacher: cost.ModelShape
    student: cost.ModelShape
    tokenizer: object | None  # the teacher's, or None when unreadable offline
    teacher_path: str  # a preset's cache folder, a local folder or a hub id
    notes: list[str]


def _preset_shapes(cfg, tokenizer) -> dict[str, cost.ModelShape]:
    p = cfg.models.preset
    return {role: cost.shape_of(preset_config(tokenizer, *sizes, p.max_position_embeddings), f"preset:tiny {role}")
            for role, sizes in preset_sizes(p).items()}


def _model_file(name: str, role: str, cache_dir: Path) -> str:
    """What a model name points at: a real preset's or gguf: spec's converted folder once it exists
    (what the store's fingerprint covers), else its GGUF file; otherwise the name (a folder or hub id)."""
    real = name.startswith("preset:") and name.removeprefix("preset:") in REAL_PRESETS
    if not (real or is_gguf(name)):
        return name
    gguf = preset_gguf(name.removeprefix("preset:"), role) if real else gguf_file(name, role)
    folder, _ = converted_dir(gguf, cache_dir, name.removeprefix("preset:") if real else "")
    return str(folder) if (folder / "done.json").is_file() else str(gguf)


def read_models(cfg) -> Models:
    """Shapes and tokenizer of the configured models; presets not yet built get their tokenizer trained.
    A GGUF is read for its config only; a student cut from the teacher has the teacher's shape with
    the cut's depth."""
    notes, shapes, tok, paths = [], {}, None, {}
    presets = [r for r in ("teacher", "student") if getattr(cfg.models, r) == "preset:tiny"]
    if presets:
        root = preset_root(cfg.models.preset, cfg.cache_dir, cfg.tasks)
        if (root / "done.json").is_file():
            tok = load_tokenizer(str(root / "tokenizer"))
        else:
            tok = preset_tokenizer(cfg.models.preset, cfg.tasks)
            notes.append(f"presets not built yet: their tokenizer was trained for this plan ({root} on a real run)")
        pshapes = _preset_shapes(cfg, tok)
        for r in presets:
            shapes[r], paths[r] = pshapes[r], str(root / r)
    for r in ("teacher", "student"):
        if r in shapes:
            continue
        name = getattr(cfg.models, r)
        if is_cut(name):
            t = shapes["teacher"]
            shapes[r] = dataclasses.replace(t, layers=len(cut_blocks(name, t.layers)),
                                            source=f"cut from the teacher ({t.source})")
            paths[r] = paths["teacher"]
            continue
        paths[r] = _model_file(name, r, cfg.cache_dir)
        shapes[r] = cost.read_shape(paths[r])
        if shapes[r].source.startswith("shipped"):
            notes.append(f"models.{r} '{name}': config unreadable offline; using the {shapes[r].source}")
    if tok is None:
        try:
            tok = _tokenizer_of(paths["teacher"])
        except ConfigError:
            tok = None
        if tok is None:
            notes.append(f"the teacher's tokenizer is unreadable offline: token counts estimated at "
                         f"{cost.CHARS_PER_TOKEN:g} characters per token")
    return Models(shapes["teacher"], shapes["student"], tok, paths["teacher"], notes)


def _tokenizer_of(path: str):
    p = Path(path)
    if p.is_dir():
        return load_tokenizer(path)
    if p.is_file() and p.suffix == ".gguf":
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        return tok
    return _cached_tokenizer(path)


def _cached_tokenizer(name: str):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError):
        return None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def lengths(examples, tokenizer, max_length: int) -> Lengths:
    if tokenizer is None:
        seq, prompt = [], []
        for ex in examples:
            p = math.ceil(len(ex.prompt) / cost.CHARS_PER_TOKEN) + 1
            a = math.ceil(len(ex.answer) / cost.CHARS_PER_TOKEN) + 1
            seq.append(min(p + a, max_length))
            prompt.append(seq[-1] - a)
        return Lengths(seq, prompt, estimated=True)
    enc = [encode_example(ex, tokenizer, max_length) for ex in examples]
    return Lengths([len(e["input_ids"]) for e in enc], [e["prompt_len"] for e in enc])


def row_bytes(td, n: int, prompt_len: int, vocab: int, hidden: int, heads: int, hidden_layers: int,
              attention_layers: int) -> dict[str, int]:
    """Raw bytes of one stored row per signal, by the store's encodings (``store.codec``)."""
    k, e = td.top_k, ELEMENT_BYTES[td.dtype]
    out = {"base": 4 * n + 8}
    lp = n * 4 + n * 4 + n * (k - 1) if td.logprob_encoding == "gaps8" else n * k * e
    out["topk"] = packed_size(n * k, bits_for(vocab)) + lp
    nh = strided(n, td.hidden_stride)
    if td.hidden_encoding == "int8":
        m = min(td.hidden_outliers, hidden)
        out["hidden"] = hidden_layers * nh * (hidden + 4 + m * (2 + 4))
    else:
        out["hidden"] = hidden_layers * nh * hidden * e
    na = strided(n, td.attention_stride)
    count = attention_layers * heads * (tri_count(na) - tri_count(first_attention_row(
        prompt_len, td.attention_stride, td.attention_rows)))
    out["attention"] = cbrt_size(count, td.attention_bits) if td.attention_encoding == "cbrt" else count * e
    return out


def store_plan(cfg, models: Models, train: Lengths) -> dict:
    """Bytes per signal and in total, and whether a store for these inputs already exists."""
    td, t = cfg.teacher_data, models.teacher
    hl = len(resolve_layers(td.hidden_layers, t.layers, "hidden_layers"))
    al = len(resolve_layers(td.attention_layers, t.layers, "attention_layers"))
    totals: dict[str, int] = {}
    for n, p in zip(train.seq, train.prompt):
        for sig, b in row_bytes(td, n, p, t.vocab, t.hidden, t.heads, hl, al).items():
            totals[sig] = totals.get(sig, 0) + b
    return {"rows": len(train.seq), "tokens": train.tokens, "estimated_tokens": train.estimated,
            "bytes_per_signal": totals, "bytes": sum(totals.values()), **_existing_store(cfg, models)}


def _existing_store(cfg, models: Models) -> dict:
    if models.tokenizer is None:
        return {"store": None, "store_status": "unknown (the tokenizer, which the fingerprint covers, is unreadable)"}
    teacher = models.teacher_path
    if cfg.models.teacher_finetune_epochs > 0:
        if not Path(teacher).exists():
            return {"store": None, "store_status": "none yet (the teacher is not built yet)"}
        teacher = str(finetuned_dir(cfg, teacher))
        if not (Path(teacher) / "config.json").is_file():
            return {"store": None, "store_status": f"none yet (the teacher is not fine-tuned yet: {teacher})"}
    out_dir, _, fp = store_dir(cfg, teacher, models.tokenizer)
    if not storage.is_file(storage.join(out_dir, MANIFEST)):
        return {"store": str(out_dir), "fingerprint": fp, "store_status": "none yet: would be generated"}
    manifest = read_manifest(out_dir)
    if manifest.get("fingerprint") == fp and manifest.get("complete"):
        return {"store": str(out_dir), "fingerprint": fp, "store_status": "exists: reused (nothing to generate)"}
    return {"store": str(out_dir), "fingerprint": fp,
            "store_status": f"partial: {manifest.get('num_rows', 0)} rows written, the rest would be generated"}


def _scoring_tokens(examples, lens: Lengths, new_tokens: int) -> int:
    """Tokens a model reads to score ``examples``: each choice continuation, or prompt + generation."""
    total = 0
    for ex, n, p in zip(examples, lens.seq, lens.prompt):
        total += len(ex.choices) * n if ex.choices else p + new_tokens
    return total


def teacher_flops(cfg, models: Models, train_ex, train: Lengths, eval_ex, evals: Lengths) -> dict[str, float]:
    """FLOPs of the teacher stage per step (fine-tune, signals, seq_kd answers, teacher eval)."""
    t, s, tr = models.teacher, cfg.training.max_length, cfg.training
    out = {}
    if cfg.models.teacher_finetune_epochs > 0:
        out["teacher fine-tune"] = cost.train_flops(t, train.tokens * cfg.models.teacher_finetune_epochs, s)
    out["teacher signals"] = cost.forward_flops(t, train.tokens, s)
    if any(DISTILL[x].reads_answers for x in cfg.sweep.distill_types):
        out["seq_kd answers"] = cost.forward_flops(t, _scoring_tokens(train_ex, train, tr.max_new_tokens), s)
    out["teacher eval"] = cost.forward_flops(t, _scoring_tokens(eval_ex, evals, tr.max_new_tokens), s)
    return out


def eval_flops(shape: cost.ModelShape, cfg, eval_ex, evals: Lengths) -> float:
    return cost.forward_flops(shape, _scoring_tokens(eval_ex, evals, cfg.training.max_new_tokens),
                              cfg.training.max_length)


def teacher_memory(cfg, t: cost.ModelShape, cuda: bool) -> dict:
    """The stage's forward pass: fp32 weights (``load_model``), one batch's logits and captured maps."""
    td, s = cfg.teacher_data, cfg.training.max_length
    b = td.batch_size
    al = len(resolve_layers(td.attention_layers, t.layers, "attention_layers"))
    return {"weights": 4 * t.params, "logits": b * s * t.vocab * 4 * 2,
            "attention maps": al * b * t.heads * s * s * 4 * 2,
            "runtime": int(cost.CUDA_CONTEXT_BYTES if cuda else cost.CPU_PROCESS_BYTES)}


def teacher_plan(cfg, mfu: float, cuda: bool, peak: float) -> tuple[dict, Models, dict]:
    """(the plan's teacher section, the models read, the task rows and lengths for the sweep's plan)."""
    models = read_models(cfg)
    try:
        train_ex, eval_ex = load_all(cfg.tasks, "train"), load_all(cfg.tasks, "eval")
    except (OSError, ImportError, RuntimeError) as exc:
        raise ConfigError(f"the plan reads the task rows and could not: {exc}; for offline use set the tasks' "
                          "source: local (the original files)") from exc
    train = lengths(train_ex, models.tokenizer, cfg.training.max_length)
    evals = lengths(eval_ex, models.tokenizer, cfg.training.max_length)
    flops = teacher_flops(cfg, models, train_ex, train, eval_ex, evals)
    section = {"teacher": models.teacher.to_dict(), "student": models.student.to_dict(), "notes": models.notes,
               "data": store_plan(cfg, models, train), "memory": teacher_memory(cfg, models.teacher, cuda),
               "flops": flops, "seconds": {k: cost.seconds(v, peak, mfu) for k, v in flops.items()}}
    rows = {"train": train_ex, "eval": eval_ex, "train_lengths": train, "eval_lengths": evals}
    return section, models, rows


def _size(b: float) -> str:
    return f"{b / cost.GB:.2f} GB" if abs(b) >= 0.1 * cost.GB else f"{b / 1e6:.1f} MB"


def format_teacher(section: dict) -> list[str]:
    """The teacher stage's lines of a printed plan."""
    t, mem, d = section["teacher"], section["memory"], section["data"]
    L = [f"teacher: {t['params'] / 1e6:,.1f}M parameters ({t['source']}); stage memory {_size(sum(mem.values()))} ("
         + ", ".join(f"{k} {_size(v)}" for k, v in mem.items()) + ")"]
    est = " (estimated from characters)" if d["estimated_tokens"] else ""
    L.append(f"teacher data: {d['rows']} rows, {d['tokens']} tokens{est}, {_size(d['bytes'])}: "
             + ", ".join(f"{k} {_size(v)}" for k, v in d["bytes_per_signal"].items()))
    L.append(f"  store: {d['store_status']}" + (f" at {d['store']}" if d.get("store") else ""))
    return L


def format_stage(section: dict, mfu: float) -> str:
    """``python -m wbvb.teacher generate --plan``: the stage alone, with its FLOPs and time."""
    L = [f"plan: teacher stage (MFU {mfu:g})"] + [f"  note: {n}" for n in section["notes"]] + format_teacher(section)
    for k, v in section["flops"].items():
        L.append(f"  {k:<20} {v:.3g} FLOPs, {section['seconds'][k] / 60:.1f} min")
    return "\n".join(L)
