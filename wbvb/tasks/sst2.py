"""SST-2 as in GLUE: ``train.tsv`` / ``dev.tsv`` with a ``sentence<TAB>label`` header (label 0/1)."""
from __future__ import annotations

from pathlib import Path

from wbvb.tasks import prompts
from wbvb.tasks.family import Family, need
from wbvb.tasks.files import TaskDataError, read_tsv_with_header


def _files(folder: Path, split: str, subjects) -> list[Path]:
    return [folder / f"{split}.tsv"]


def _read(folder: Path, split: str, subjects) -> list[tuple[dict, str]]:
    return read_tsv_with_header(folder / f"{split}.tsv")


def normalise(row: dict, origin: str) -> dict:
    label = str(need(row, "label", origin)).strip()
    if label not in ("0", "1"):
        raise TaskDataError(f"{origin}: label must be 0 (negative) or 1 (positive), got {label!r}")
    return {"sentence": str(need(row, "sentence", origin)), "label": int(label)}


SST2 = Family(
    name="sst2", splits=("train", "dev"), train_split="train", eval_split="dev", shot_split="train",
    hub_name="glue", hub_config="sst2", hub_splits={"train": "train", "dev": "validation"},
    fields=("sentence", "label"), local_files=_files, read_local=_read, normalise=normalise,
    header=lambda rec: "", body=prompts.sst2_body, answer=prompts.sst2_answer,
    label=lambda rec: prompts.SST2_LABELS[rec["label"]], choices=[f" {w}" for w in prompts.SST2_LABELS],
)
