"""GSM8K as released: ``train.jsonl`` / ``test.jsonl`` with ``question`` and ``answer`` ending ``#### N``."""
from __future__ import annotations

from pathlib import Path

from wbvb.tasks.extract import extract_strict, gold_number
from wbvb.tasks import prompts
from wbvb.tasks.family import Family, need
from wbvb.tasks.files import TaskDataError, read_jsonl


def _files(folder: Path, split: str, subjects) -> list[Path]:
    return [folder / f"{split}.jsonl"]


def _read(folder: Path, split: str, subjects) -> list[tuple[dict, str]]:
    return read_jsonl(folder / f"{split}.jsonl")


def normalise(row: dict, origin: str) -> dict:
    answer = str(need(row, "answer", origin))
    if extract_strict(answer) is None:
        raise TaskDataError(f"{origin}: answer does not end in '#### <number>': ...{answer[-60:]!r}")
    return {"question": str(need(row, "question", origin)), "answer": answer}


GSM8K = Family(
    name="gsm8k", splits=("train", "test"), train_split="train", eval_split="test", shot_split="train",
    hub_name="openai/gsm8k", hub_config="main", hub_splits={"train": "train", "test": "test"},
    fields=("question", "answer"), local_files=_files, read_local=_read, normalise=normalise,
    header=lambda rec: "", body=prompts.gsm8k_body, answer=prompts.gsm8k_answer,
    label=lambda rec: gold_number(rec["answer"]), choices=None,
)
