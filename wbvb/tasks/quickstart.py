"""Procedurally generated stand-ins for SST-2, MMLU and GSM8K, for runs with no downloads.

Each family is seeded and split by a hash of the prompt (1 in 5 prompts belong to 'eval'), so
train and eval never share a prompt. They are easy enough for a tiny model to learn in minutes
and hard enough (negation and "but" clauses, a majority over word categories, two-step arithmetic) that a
bigger, longer-trained teacher does measurably better than a small student.
"""
from __future__ import annotations

import hashlib
import random

from typing import Callable

from wbvb.tasks.example import Example

# The TaskConfig keys a generated task reads; the rest are for real tasks (config refuses them here).
QUICKSTART_TASK_KEYS = ("name", "source", "n_train", "n_eval", "seed", "n_select")
GENERATORS: dict[str, Callable[[int, int, str], list[Example]]] = {}
GENERATOR_VERSION = 4  # bump when any generator's output changes: it is part of every fingerprint
SENTIMENT_QUESTION = "\nQuestion: Is this sentence positive or negative?\nAnswer:"
MC_LETTERS = ("A", "B", "C", "D")



def register(name: str):
    def deco(fn):
        GENERATORS[name] = fn
        return fn
    return deco

def _split_of(prompt: str) -> str:
    return "eval" if int(hashlib.md5(prompt.encode()).hexdigest(), 16) % 5 == 0 else "train"


def _collect(task: str, n: int, seed: int, split: str, make) -> list[Example]:
    """Draw candidates from a seeded RNG until ``n`` unique prompts of ``split`` are found."""
    rng = random.Random(f"{task}:{seed}")
    out: list[Example] = []
    seen: set[str] = set()
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 200 * n + 10_000:
            raise ValueError(f"task {task}: cannot draw {n} unique {split} examples; lower n_{split}")
        prompt, answer, label, choices = make(rng)
        if prompt in seen or _split_of(prompt) != split:
            continue
        seen.add(prompt)
        out.append(Example(id=f"{task}-{split}-{len(out):06d}", task=task, split=split,
                           prompt=prompt, answer=answer, label=label, choices=choices))
    return out


# ---- sentiment (SST-2-like) --------------------------------------------------------------
SUBJECTS = ["the movie", "the film", "the plot", "the acting", "the story", "the music",
            "the ending", "the script", "the cast", "the show", "the dialogue", "the pacing"]
POSITIVE = ["great", "wonderful", "brilliant", "charming", "moving", "superb", "delightful",
            "funny", "clever", "beautiful", "gripping", "fresh"]
NEGATIVE = ["dull", "awful", "boring", "clumsy", "tedious", "weak", "bland", "messy",
            "painful", "silly", "stale", "forced"]
ADVERBS = ["", "very ", "truly ", "quite ", "rather ", "so "]


def _clause(rng: random.Random) -> tuple[str, bool]:
    positive = rng.random() < 0.5
    adj = rng.choice(POSITIVE if positive else NEGATIVE)
    negated = rng.random() < 0.3
    text = f"{rng.choice(SUBJECTS)} was {'not ' if negated else ''}{rng.choice(ADVERBS)}{adj}"
    return text, positive != negated


def _sentiment(rng: random.Random):
    first, pol = _clause(rng)
    r = rng.random()
    if r < 0.4:
        sentence = first
    elif r < 0.7:
        second, pol = _clause(rng)  # "but": the second clause decides
        sentence = f"{first} but {second}"
    else:
        second, pol2 = _clause(rng)
        while pol2 != pol:
            second, pol2 = _clause(rng)
        sentence = f"{first} and {second}"
    label = "positive" if pol else "negative"
    return sentence + " ." + SENTIMENT_QUESTION, f" {label}", label, [" negative", " positive"]


@register("sentiment")
def sentiment(n: int, seed: int, split: str) -> list[Example]:
    return _collect("sentiment", n, seed, split, _sentiment)


# ---- multiple choice (MMLU-like) ---------------------------------------------------------

CATEGORIES = {
    "animals": ["dog", "cat", "horse", "lion", "tiger", "sheep", "goat", "mouse", "bear", "wolf"],
    "colors": ["red", "blue", "green", "yellow", "purple", "orange", "pink", "brown", "black", "white"],
    "fruits": ["apple", "banana", "cherry", "grape", "lemon", "mango", "peach", "pear", "plum", "melon"],
    "tools": ["hammer", "saw", "drill", "wrench", "shovel", "rake", "chisel", "ladder", "axe", "knife"],
    "countries": ["france", "spain", "italy", "japan", "china", "india", "brazil", "egypt", "kenya", "peru"],
}
OPTIONS = ("animals", "colors", "fruits", "tools")  # fixed order, as in many MMLU items


def _multiple_choice(rng: random.Random):
    """Which category do most of three words belong to? Word knowledge plus a majority vote."""
    category = rng.choice(OPTIONS)
    pair = rng.sample(CATEGORIES[category], 2)
    odd = rng.choice(CATEGORIES[rng.choice([c for c in sorted(CATEGORIES) if c != category])])
    words = [*pair, odd]
    rng.shuffle(words)
    letter = MC_LETTERS[OPTIONS.index(category)]
    lines = "\n".join(f"{L}. {o}" for L, o in zip(MC_LETTERS, OPTIONS))
    prompt = ("The following are multiple choice questions (with answers) about word categories.\n\n"
              f"Most of these words belong to which category: {', '.join(words)}?\n{lines}\nAnswer:")
    return prompt, f" {letter}", letter, [f" {L}" for L in MC_LETTERS]


@register("multiple_choice")
def multiple_choice(n: int, seed: int, split: str) -> list[Example]:
    return _collect("multiple_choice", n, seed, split, _multiple_choice)


# ---- arithmetic word problems (GSM8K-like) -----------------------------------------------
NAMES = ["Sam", "Ana", "Tom", "Mia", "Leo", "Zoe", "Max", "Eva"]
ITEMS = ["apples", "books", "coins", "pens", "cards", "shells", "stamps", "marbles"]


def _arithmetic(rng: random.Random):
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    a, b = rng.randint(2, 9), rng.randint(1, 9)
    s1 = a + b
    c = rng.randint(1, s1 - 1)
    s2 = s1 - c
    question = (f"{name} has {a} {item}. {name} gets {b} more. Then {name} gives away {c}. "
                f"How many {item} does {name} have now?")
    answer = f" {a} + {b} = {s1}. {s1} - {c} = {s2}.\n#### {s2}"
    return f"Question: {question}\nAnswer:", answer, str(s2), None


@register("arithmetic")
def arithmetic(n: int, seed: int, split: str) -> list[Example]:
    return _collect("arithmetic", n, seed, split, _arithmetic)


TASK_NAMES = tuple(GENERATORS)


def generate(task_cfg, split: str) -> list[Example]:
    """A generated task's examples of one split ('train' or 'eval'), deterministic in its seed."""
    if task_cfg.name not in GENERATORS:
        raise ValueError(f"unknown task '{task_cfg.name}'; known: {', '.join(TASK_NAMES)}")
    n = task_cfg.n_train if split == "train" else task_cfg.n_eval
    return GENERATORS[task_cfg.name](n, task_cfg.seed, split)
