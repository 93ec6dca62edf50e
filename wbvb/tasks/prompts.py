"""The one prompt/target format per real task, shared by teacher data, training and evaluation.

The formats are lm-evaluation-harness's (and the MMLU release's), so accuracies compare with
published numbers:

- SST-2: ``{sentence}\\nQuestion: Is this sentence positive or negative?\\nAnswer:`` ->
  `` positive`` / `` negative``
- MMLU: ``The following are multiple choice questions (with answers) about {subject}.\\n\\n``
  then ``{question}\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer:`` -> `` A`` .. `` D``
- GSM8K: ``Question: {question}\\nAnswer:`` -> `` {worked solution ending #### N}``

k-shot prompts put solved exemplars (body + answer + blank line) between the header and the
question, as the MMLU release and the harness do.
"""
from __future__ import annotations

SENTIMENT_QUESTION = "\nQuestion: Is this sentence positive or negative?\nAnswer:"
SST2_LABELS = ("negative", "positive")  # GLUE label 0, 1
MC_LETTERS = ("A", "B", "C", "D")
SHOT_SEPARATOR = "\n\n"


def sst2_body(rec: dict) -> str:
    return rec["sentence"] + SENTIMENT_QUESTION


def sst2_answer(rec: dict) -> str:
    return " " + SST2_LABELS[rec["label"]]


def mmlu_header(subject: str) -> str:
    return f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"


def mmlu_body(rec: dict) -> str:
    lines = "".join(f"\n{letter}. {choice}" for letter, choice in zip(MC_LETTERS, rec["choices"]))
    return f"{rec['question'].strip()}{lines}\nAnswer:"


def mmlu_answer(rec: dict) -> str:
    return " " + rec["answer"]


def gsm8k_body(rec: dict) -> str:
    return f"Question: {rec['question']}\nAnswer:"


def gsm8k_answer(rec: dict) -> str:
    return " " + rec["answer"]


def with_shots(header: str, shots: list[tuple[str, str]], body: str) -> str:
    """``header`` + each solved exemplar (body, answer) and a blank line + the question's body."""
    return header + "".join(b + a + SHOT_SEPARATOR for b, a in shots) + body
