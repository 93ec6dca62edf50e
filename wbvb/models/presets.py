"""Tiny tokenizer and Llama models built locally, for runs that cannot download anything.

They are saved with ``save_pretrained`` and loaded back with ``from_pretrained`` so the rest of
wbvb uses exactly the code path of real hub checkpoints. Built once per preset config and
cached under ``<cache_dir>/presets/<hash>/`` (``cache.build_once``: atomic, one builder at a time).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from wbvb.config import TaskConfig
from wbvb.models.cache import build_once
from wbvb.tasks import TASK_NAMES, load_all, load_examples, task_identity
from wbvb.tasks.quickstart import GENERATOR_VERSION  # the tokenizer is trained on task text

PRESET_FORMAT = 1
SPECIAL_TOKENS = {"pad": "<pad>", "bos": "<s>", "eos": "</s>", "unk": "<unk>"}


def is_preset(name: str) -> bool:
    return name.startswith("preset:")


def _preset_key(preset_cfg, tasks=()) -> str:
    fields = dataclasses.asdict(preset_cfg)
    if preset_cfg.corpus == "quickstart":
        fields.pop("corpus")  # keys of presets built before the option existed stay valid
        corpus = GENERATOR_VERSION
    else:
        corpus = [task_identity(t) for t in tasks]
    blob = json.dumps({"format": PRESET_FORMAT, "tasks": corpus, **fields}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _tasks_corpus(tasks) -> list[str]:
    """Train-split text of the configured tasks (real tasks need their own words in the vocabulary)."""
    return [ex.prompt + ex.answer for ex in load_all(tasks, "train")]


def _corpus() -> list[str]:
    """Text of every quickstart family (fixed seed, both splits) to train the tokenizer on."""
    text = []
    for name in TASK_NAMES:
        for split in ("train", "eval"):
            for ex in load_examples(TaskConfig(name=name, n_train=1500, n_eval=300, seed=12345), split):
                text.append(ex.prompt + ex.answer)
    return text


def build_tokenizer(vocab_size: int, corpus: list[str] | None = None):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus if corpus is not None else _corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=SPECIAL_TOKENS["pad"], bos_token=SPECIAL_TOKENS["bos"],
        eos_token=SPECIAL_TOKENS["eos"], unk_token=SPECIAL_TOKENS["unk"],
    )


def preset_config(tokenizer, layers: int, hidden: int, heads: int, max_pos: int):
    """The LlamaConfig of a preset model (also what a plan reads before the preset is built)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 3,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=max_pos, tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def build_model(tokenizer, layers: int, hidden: int, heads: int, max_pos: int, seed: int):
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(preset_config(tokenizer, layers, hidden, heads, max_pos))


def preset_sizes(preset_cfg) -> dict[str, tuple[int, int, int]]:
    """(layers, hidden, heads) of the preset teacher and student."""
    p = preset_cfg
    return {"teacher": (p.teacher_layers, p.teacher_hidden, p.teacher_heads),
            "student": (p.student_layers, p.student_hidden, p.student_heads)}


def preset_root(preset_cfg, cache_dir: Path, tasks=()) -> Path:
    """The cache folder of this preset (built or not)."""
    return Path(cache_dir) / "presets" / f"tiny-{_preset_key(preset_cfg, tasks)}"


def preset_tokenizer(preset_cfg, tasks=()):
    """The preset's tokenizer, trained afresh (no model built): what a plan tokenizes with."""
    corpus = _tasks_corpus(tasks) if preset_cfg.corpus == "tasks" else None
    return build_tokenizer(preset_cfg.vocab_size, corpus)


def ensure_preset(preset_cfg, cache_dir: Path, tasks=()) -> dict[str, Path]:
    """Return {'tokenizer', 'teacher', 'student'} dirs, building them once if missing.

    With ``preset.corpus: tasks`` the tokenizer is trained on ``tasks``' train text.
    """
    if preset_cfg.corpus == "tasks" and not tasks:
        raise ValueError("models.preset.corpus is 'tasks' but no tasks were given to train the tokenizer on")
    root = preset_root(preset_cfg, cache_dir, tasks)
    paths = {k: root / k for k in ("tokenizer", "teacher", "student")}

    def build(tmp: Path) -> dict:
        p = preset_cfg
        tok = build_tokenizer(p.vocab_size, _tasks_corpus(tasks) if p.corpus == "tasks" else None)
        tok.save_pretrained(tmp / "tokenizer")
        for role, (layers, hidden, heads) in preset_sizes(p).items():
            seed = 1 if role == "teacher" else 2
            model = build_model(tok, layers, hidden, heads, p.max_position_embeddings, seed)
            model.save_pretrained(tmp / role)
            tok.save_pretrained(tmp / role)
        return dataclasses.asdict(p)

    build_once(root, build)
    return paths
