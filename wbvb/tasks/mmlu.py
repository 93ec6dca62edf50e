"""MMLU as released: ``{dev,val,test}/<subject>_<split>.csv``, no header, ``question,A,B,C,D,answer``."""
from __future__ import annotations

from pathlib import Path

from wbvb.tasks import prompts
from wbvb.tasks.family import Family, need
from wbvb.tasks.files import TaskDataError, read_csv_no_header

COLUMNS = ["question", "A", "B", "C", "D", "answer"]


def _files(folder: Path, split: str, subjects) -> list[Path]:
    d = folder / split
    if not d.is_dir():
        raise TaskDataError(f"{d}: no such folder (MMLU '{split}' split); set the task's path to the MMLU "
                            "release folder holding dev/, val/ and test/")
    suffix = f"_{split}.csv"
    found = {p.name[: -len(suffix)]: p for p in d.glob(f"*{suffix}")}
    if not found:
        raise TaskDataError(f"{d}: no *{suffix} files")
    missing = [s for s in subjects if s not in found]
    if missing:
        raise TaskDataError(f"{d}: no file for subject(s) {', '.join(missing)}; known: {', '.join(sorted(found))}")
    return [found[s] for s in sorted(subjects or found)]


def _read(folder: Path, split: str, subjects) -> list[tuple[dict, str]]:
    rows = []
    suffix = f"_{split}.csv"
    for path in _files(folder, split, subjects):
        subject = path.name[: -len(suffix)]
        rows += [({**row, "subject": subject}, origin) for row, origin in read_csv_no_header(path, COLUMNS)]
    return rows


def normalise(row: dict, origin: str) -> dict:
    """Accepts the release's A..D columns and letter answers, or the hub's ``choices`` list and 0..3."""
    if "choices" in row and row["choices"] is not None:
        choices = [str(c) for c in row["choices"]]
    else:
        choices = [str(need(row, letter, origin)) for letter in prompts.MC_LETTERS]
    if len(choices) != 4:
        raise TaskDataError(f"{origin}: expected 4 choices, got {len(choices)}")
    answer = str(need(row, "answer", origin)).strip()
    if answer in ("0", "1", "2", "3"):
        answer = prompts.MC_LETTERS[int(answer)]
    if answer not in prompts.MC_LETTERS:
        raise TaskDataError(f"{origin}: answer must be A, B, C or D (or 0-3), got {answer!r}")
    return {"subject": str(need(row, "subject", origin)), "question": str(need(row, "question", origin)),
            "choices": choices, "answer": answer}


MMLU = Family(
    name="mmlu", splits=("dev", "val", "test"), train_split="test", eval_split="val", shot_split="dev",
    hub_name="cais/mmlu", hub_config="all", hub_splits={"dev": "dev", "val": "validation", "test": "test"},
    fields=("subject", "question", "A", "B", "C", "D", "choices", "answer"),
    local_files=_files, read_local=_read, normalise=normalise,
    header=lambda rec: prompts.mmlu_header(rec["subject"]), body=prompts.mmlu_body, answer=prompts.mmlu_answer,
    label=lambda rec: rec["answer"], choices=[f" {L}" for L in prompts.MC_LETTERS],
)
