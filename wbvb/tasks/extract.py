"""Numbers out of generated text, as lm-evaluation-harness's ``gsm8k`` task scores them.

strict-match: the first match of ``#### (\-?[0-9\.\,]+)`` (one space after ``####``, no ``$``);
flexible-extract: the last match of ``(-?[$0-9.,]{2,})|(-?[0-9]+)`` (which need not hold a digit).
Both the extracted text and the gold answer then go through the task's ``regexes_to_ignore``
(commas, ``$``, everything up to ``#### ``, one trailing period) and lower-casing, and compare as
strings (``18.00`` is not ``18``). None stands for the harness's ``[invalid]``: no match.
"""
from __future__ import annotations

import re

STRICT_RE = re.compile(r"#### (\-?[0-9\.\,]+)")
FLEXIBLE_RE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
IGNORE = (",", r"\$", r"(?s).*#### ", r"\.$")


def normalize_number(text: str) -> str:
    """The harness's exact-match normalisation: each ignored regex removed in turn, then lower case."""
    for pattern in IGNORE:
        text = re.sub(pattern, "", text)
    return text.lower()


def extract_strict(text: str) -> str | None:
    """The number after '#### ', normalised, or None when there is none."""
    found = STRICT_RE.findall(text)
    return normalize_number(found[0].strip()) if found else None


def extract_flexible(text: str) -> str | None:
    """The last number-like span in the text, normalised, or None."""
    found = FLEXIBLE_RE.findall(text)
    if not found:
        return None
    span = next((g for g in found[-1] if g), None)
    return normalize_number(span.strip()) if span else None


def gold_number(answer: str) -> str:
    """The gold answer as the harness compares it: the whole reference solution normalised."""
    return normalize_number(answer)
