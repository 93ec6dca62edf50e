"""Real tasks (SST-2, MMLU, GSM8K) from original files, generic JSONL/Parquet or the hub.

Train on the family's train side, evaluate on held-out data; a train row whose question also
appears in the eval split (or is a k-shot exemplar) is dropped, so no example is in both.
Sampling is seeded by (task name, seed, split); ``n_* = 0`` takes the whole split.
"""
from __future__ import annotations

import dataclasses
import random
from pathlib import Path

from wbvb.tasks import prompts
from wbvb.tasks.example import Example
from wbvb.tasks.family import Family
from wbvb.tasks.files import TaskDataError, files_identity, read_jsonl, read_parquet
from wbvb.tasks.gsm8k import GSM8K
from wbvb.tasks.hub import load_split
from wbvb.tasks.mmlu import MMLU
from wbvb.tasks.sst2 import SST2

FAMILIES: dict[str, Family] = {f.name: f for f in (SST2, MMLU, GSM8K)}
SOURCES = ("quickstart", "local", "hub", "jsonl", "parquet")
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_ROOT = "../shared/data"  # relative to the repo root: CI keeps ../shared beside the clone
LOADER_VERSION = 1  # bump when the records or formats change: part of every fingerprint


def family_of(t) -> Family:
    return FAMILIES[t.family or t.name]


def data_folder(t) -> Path:
    """The task's folder: ``path`` (a relative one is relative to the working directory, where the
    user ran the command: the sweep makes it absolute before its trials start), by default
    ``../shared/data/<family>`` from the repo root (where CI keeps the data beside the clone)."""
    if t.path:
        return Path(t.path).expanduser().resolve()
    return (REPO_ROOT / DEFAULT_DATA_ROOT / family_of(t).name).resolve()


def split_names(t) -> tuple[str, str]:
    fam = family_of(t)
    return t.train_split or fam.train_split, t.eval_split or fam.eval_split


def _raw_rows(t, split: str) -> list[tuple[dict, str]]:
    fam = family_of(t)
    if t.source == "local":
        return fam.read_local(data_folder(t), split, t.subjects)
    if t.source == "hub":

        name = t.hub_name or fam.hub_name
        config = t.hub_config if (t.hub_config or t.hub_name) else fam.hub_config
        return load_split(name, config, fam.hub_splits.get(split, split))
    reader = read_jsonl if t.source == "jsonl" else read_parquet
    rows = reader(data_folder(t) / f"{split}.{t.source}")
    if t.fields:  # {canonical field: file column}
        rows = [({**row, **{k: row.get(col) for k, col in t.fields.items()}}, o) for row, o in rows]
    return rows


def records(t, split: str) -> list[tuple[dict, str]]:
    """(record, origin) of one split, in file order, subject-filtered."""
    fam = family_of(t)
    out = [(fam.normalise(row, origin), origin) for row, origin in _raw_rows(t, split)]
    if t.subjects:
        out = [(r, o) for r, o in out if r.get("subject") in t.subjects]
    if not out:
        raise TaskDataError(f"task {t.name}: split '{split}' has no rows"
                            + (f" for subjects {t.subjects}" if t.subjects else ""))
    return out


def _shot_key(fam: Family, rec: dict) -> str:
    return rec["subject"] if fam.name == "mmlu" else ""


def _shot_pools(t, k: int) -> dict[str, list[dict]]:
    """k-shot exemplars: the first k rows of the shot split (MMLU: per subject, as the release does)."""
    fam = family_of(t)
    pools: dict[str, list[dict]] = {}
    for rec, _ in records(t, fam.shot_split) if k else []:
        pool = pools.setdefault(_shot_key(fam, rec), [])
        if len(pool) < k:
            pool.append(rec)
    return pools


def _exemplars(t, k: int):
    """record -> its k-shot exemplars (none when k is 0)."""
    fam, pools = family_of(t), _shot_pools(t, k)
    return lambda rec: pools.get(_shot_key(fam, rec), [])


def _example(t, fam: Family, rec: dict, origin: str, role: str, split: str, idx: int, shots: list) -> Example:
    prompt = prompts.with_shots(fam.header(rec), [(fam.body(s), fam.answer(s)) for s in shots], fam.body(rec))
    return Example(id=f"{t.name}-{split}-{idx:06d}", task=t.name, split=role, prompt=prompt,
                   answer=fam.answer(rec), label=fam.label(rec),
                   choices=list(fam.choices) if fam.choices else None, meta={"origin": origin})


def load_real(t, role: str) -> list[Example]:
    """Examples of ``role`` ('train' or 'eval'): seeded sample of the split, never overlapping the other."""
    fam = family_of(t)
    train_split, eval_split = split_names(t)
    split = train_split if role == "train" else eval_split
    pool = list(enumerate(records(t, split)))
    if role == "train":  # drop rows whose question is in the eval split or used as an exemplar
        held_out = {fam.body(r) for r, _ in records(t, eval_split)}
        if fam.shot_split == train_split:
            shots = _shot_pools(t, max(t.train_shots, t.eval_shots))
            held_out |= {fam.body(s) for exemplars in shots.values() for s in exemplars}
        pool = [(i, ro) for i, ro in pool if fam.body(ro[0]) not in held_out]
    n = t.n_train if role == "train" else t.n_eval
    if n > len(pool):
        raise TaskDataError(f"task {t.name}: n_{role}={n} but the '{split}' split has only {len(pool)} usable "
                            f"examples; lower n_{role} (0 takes the whole split)")
    if n:
        rng = random.Random(f"{t.name}:{t.seed}:{split}")
        pool = [pool[j] for j in sorted(rng.sample(range(len(pool)), n))]
    shots_for = _exemplars(t, t.train_shots if role == "train" else t.eval_shots)
    return [_example(t, fam, rec, origin, role, split, i, shots_for(rec)) for i, (rec, origin) in pool]


def identity(t) -> dict:
    """Config plus what was read: file sizes and content hashes (local) or hub names."""
    out = {**dataclasses.asdict(t), "loader_version": LOADER_VERSION}
    fam = family_of(t)
    splits = set(split_names(t)) | ({fam.shot_split} if (t.train_shots or t.eval_shots) else set())
    return _with_sources(t, out, splits)


def train_identity(t) -> dict:
    """What determines the train examples alone: ``identity`` without the eval side's size and shots.

    The eval split still counts (its questions are held out of train), and so do the eval
    exemplars when they come from the train split (SST-2, GSM8K), as they are held out too."""
    fam = family_of(t)
    train_split, _ = split_names(t)
    held_out_shots = max(t.train_shots, t.eval_shots) if fam.shot_split == train_split else t.train_shots
    out = {**{k: v for k, v in dataclasses.asdict(t).items() if k not in ("n_eval", "eval_shots")},
           "held_out_shots": held_out_shots, "loader_version": LOADER_VERSION}
    splits = set(split_names(t)) | ({fam.shot_split} if held_out_shots else set())
    return _with_sources(t, out, splits)


def _with_sources(t, out: dict, splits: set[str]) -> dict:
    """``out`` plus the files read for ``splits`` (sizes and hashes) or the hub names."""
    fam = family_of(t)
    if t.source == "local":
        out["files"] = files_identity(p for s in sorted(splits)
                                      for p in fam.local_files(data_folder(t), s, t.subjects))
    elif t.source in ("jsonl", "parquet"):
        out["files"] = files_identity(data_folder(t) / f"{s}.{t.source}" for s in sorted(splits))
    else:
        out["hub"] = [t.hub_name or fam.hub_name, t.hub_config if (t.hub_config or t.hub_name) else fam.hub_config]
    return out


def validate_task(t, where: str) -> list[str]:
    """Problems of one real-task config, each naming the key (config.validate raises the first)."""
    if (t.family or t.name) not in FAMILIES:
        return [f"{where}.family: '{t.family or t.name}' is not a real task family; choose "
                f"{', '.join(FAMILIES)} (set family when the task's name is something else)"]
    fam = family_of(t)
    errs = []
    train_split, eval_split = split_names(t)
    if t.source in ("local", "hub"):
        for key, s in (("train_split", train_split), ("eval_split", eval_split)):
            if s not in fam.splits:
                errs.append(f"{where}.{key}: '{s}' is not a {fam.name} split; choose {', '.join(fam.splits)}")
    if train_split == eval_split:
        errs.append(f"{where}: train_split and eval_split are both '{train_split}'; evaluation must be held out")
    if t.n_train < 0 or t.n_eval < 0 or t.train_shots < 0 or t.eval_shots < 0:
        errs.append(f"{where}: n_train, n_eval, train_shots and eval_shots must be >= 0 (0 sizes: whole split)")
    if t.subjects and fam.name != "mmlu":
        errs.append(f"{where}.subjects: only MMLU has subjects")
    if t.fields:
        if t.source not in ("jsonl", "parquet"):
            errs.append(f"{where}.fields: a field mapping is for source jsonl or parquet")
        bad = [k for k in t.fields if k not in fam.fields]
        if bad:
            errs.append(f"{where}.fields: '{bad[0]}' is not a {fam.name} field; map onto {', '.join(fam.fields)}")
    if t.source in ("jsonl", "parquet") and not t.path:
        errs.append(f"{where}.path: source {t.source} needs the folder holding <split>.{t.source}")
    if (t.hub_name or t.hub_config) and t.source != "hub":
        errs.append(f"{where}.hub_name/hub_config are for source: hub")
    return errs
