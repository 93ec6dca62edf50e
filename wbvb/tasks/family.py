"""What a real task family is: its files and hub names, how a raw row becomes a record, its format.

A record is a small dict in the family's canonical fields (SST-2 ``sentence``/``label``; MMLU
``subject``/``question``/``choices``/``answer``; GSM8K ``question``/``answer``), whatever the
source (original files, hub, or generic JSONL/Parquet through a field mapping).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from wbvb.tasks.files import TaskDataError


@dataclass(frozen=True)
class Family:
    name: str
    splits: tuple[str, ...]             # split names as the original release calls them
    train_split: str
    eval_split: str
    shot_split: str                      # where k-shot exemplars come from
    hub_name: str
    hub_config: str
    hub_splits: dict                     # local split name -> hub split name
    fields: tuple[str, ...]              # canonical fields a generic file's columns map onto
    local_files: Callable[[Path, str, list[str]], list[Path]]
    read_local: Callable[[Path, str, list[str]], list[tuple[dict, str]]]
    normalise: Callable[[dict, str], dict]
    header: Callable[[dict], str]
    body: Callable[[dict], str]
    answer: Callable[[dict], str]
    label: Callable[[dict], str]
    choices: Optional[list[str]]         # None: scored by generation


def need(row: dict, key: str, origin: str):
    """A required field of a row, or an error naming where the row came from."""
    value = row.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise TaskDataError(f"{origin}: missing or empty field '{key}' (fields present: {', '.join(map(str, row))})")
    return value
