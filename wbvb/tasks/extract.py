"""Numbers out of generated text, as GSM8K is scored in lm-evaluation-harness.

strict: the number after ``####``; flexible: the last number anywhere in the text. Both drop
``$`` and thousands commas and a trailing period, then compare as strings (``18.00`` is not
``18``, exactly as the harness scores it).
"""
from __future__ import annotations

import re

_NUMBER = r"-?\$?\s?-?[\d,]*\.?\d+"
_STRICT_RE = re.compile(r"####\s*(" + _NUMBER + ")")
_ANY_RE = re.compile(_NUMBER)


def normalize_number(text: str) -> str:
    text = text.replace(",", "").replace("$", "").replace(" ", "").rstrip(".")
    if text.startswith("--"):
        text = text[2:]
    return text


def extract_strict(text: str) -> str | None:
    """The number after '####', or None when there is none."""
    m = _STRICT_RE.search(text)
    return normalize_number(m.group(1)) if m else None


def extract_flexible(text: str) -> str | None:
    """The last number in the text (with or without '####'), or None."""
    found = _ANY_RE.findall(text)
    return normalize_number(found[-1]) if found else None
