"""Per-task accuracy with each task's own protocol, as lm-evaluation-harness scores it.

Choice tasks (SST-2, MMLU and their quickstart stand-ins) are scored by the log-likelihood of
each choice continuation after the prompt (argmax wins); the length-normalised variant divides
by the continuation's length in characters (the harness's ``acc_norm``: tokenizer-independent,
so teacher and student compare). Generation tasks (GSM8K, arithmetic) are scored by batched
greedy decoding with a KV cache, stopped at the next ``Question:`` or EOS, and exact match of
the number after ``####`` (strict) and of the last number in the text (flexible).
Teacher-forced first-token matching is not used: it is not an accuracy anyone can compare.
"""
from __future__ import annotations

from collections import defaultdict

import torch

from wbvb.feed.batches import batched, collate, encode_example, prompt_ids
from wbvb.tasks.extract import extract_flexible, extract_strict
from wbvb.train.losses import task_loss

STOP_STRINGS = ("Question:",)  # a generation ends where the model starts the next question


@torch.no_grad()
def choice_loglikelihoods(model, tokenizer, examples, batch_size: int, device) -> list[list[float]]:
    """Summed log-probability of each choice continuation given the prompt, per example."""
    pairs = []  # (example index, choice index, ids, prompt_len)
    for i, ex in enumerate(examples):
        p = prompt_ids(tokenizer, ex.prompt)
        for j, choice in enumerate(ex.choices):
            c = tokenizer(choice, add_special_tokens=False)["input_ids"]
            pairs.append((i, j, p + c, len(p)))
    scores = [[0.0] * len(ex.choices) for ex in examples]
    for chunk in batched(pairs, batch_size):
        rows = [{"example_id": "", "input_ids": ids, "prompt_len": pl} for _, _, ids, pl in chunk]
        b = collate(rows, tokenizer.pad_token_id)
        logits = model(input_ids=b["input_ids"].to(device), attention_mask=b["attention_mask"].to(device)).logits
        logp = torch.log_softmax(logits[:, :-1].float(), -1)
        tok_lp = logp.gather(-1, b["input_ids"][:, 1:].to(device).unsqueeze(-1)).squeeze(-1)
        ll = (tok_lp * b["answer_mask"][:, 1:].to(device)).sum(-1)
        for (i, j, _, _), v in zip(chunk, ll.tolist()):
            scores[i][j] = v
    return scores


def choice_hits(examples, scores: list[list[float]]) -> tuple[list[bool], list[bool]]:
    """(plain, length-normalised) correctness per example; ties go to the first choice."""
    plain, norm = [], []
    for ex, s in zip(examples, scores):
        normed = [v / max(len(c), 1) for v, c in zip(s, ex.choices)]
        plain.append(ex.choices[s.index(max(s))].strip() == ex.label)
        norm.append(ex.choices[normed.index(max(normed))].strip() == ex.label)
    return plain, norm


def cut_at_stop(text: str) -> str:
    for stop in STOP_STRINGS:
        text = text.split(stop)[0]
    return text


class _StopAtText:
    """Per-sequence stopping criterion: done once the new text holds a stop string."""

    def __init__(self, tokenizer, prompt_len: int):
        self.tokenizer, self.prompt_len = tokenizer, prompt_len

    def __call__(self, input_ids, scores, **kwargs):
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_len:], skip_special_tokens=True)
        return torch.tensor([any(s in t for s in STOP_STRINGS) for t in texts], device=input_ids.device)


@torch.no_grad()
def generate_answers(model, tokenizer, examples, batch_size: int, max_new_tokens: int, device) -> list[str]:
    """Greedy continuations of each prompt (left-padded batches, KV cache), cut at the stop string."""
    from transformers import StoppingCriteriaList

    out = []
    pad = tokenizer.pad_token_id
    for chunk in batched(examples, batch_size):
        prompts = [prompt_ids(tokenizer, ex.prompt) for ex in chunk]
        n = max(len(p) for p in prompts)
        ids = torch.full((len(chunk), n), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), n), dtype=torch.long)
        for i, p in enumerate(prompts):  # left padding for batched generation
            ids[i, n - len(p):] = torch.tensor(p)
            mask[i, n - len(p):] = 1
        gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                             max_new_tokens=max_new_tokens, pad_token_id=pad, use_cache=True,
                             eos_token_id=tokenizer.eos_token_id,
                             stopping_criteria=StoppingCriteriaList([_StopAtText(tokenizer, n)]))
        out += [cut_at_stop(t) for t in tokenizer.batch_decode(gen[:, n:], skip_special_tokens=True)]
    return out


def generation_hits(examples, texts: list[str]) -> tuple[list[bool], list[bool]]:
    """(strict, flexible) exact match of each generated text against the gold number."""
    strict = [extract_strict(t) == ex.label for ex, t in zip(examples, texts)]
    flexible = [extract_flexible(t) == ex.label for ex, t in zip(examples, texts)]
    return strict, flexible


@torch.no_grad()
def validation_loss(model, tokenizer, examples, batch_size: int, max_length: int, device) -> float:
    """Mean answer-token cross-entropy of the gold answers (token-weighted over all tasks)."""
    total, count = 0.0, 0
    for chunk in batched(examples, batch_size):
        b = collate([encode_example(ex, tokenizer, max_length) for ex in chunk], tokenizer.pad_token_id)
        logits = model(input_ids=b["input_ids"].to(device), attention_mask=b["attention_mask"].to(device)).logits
        n = int(b["answer_mask"][:, 1:].sum())
        total += float(task_loss(logits, b["input_ids"].to(device), b["answer_mask"].to(device))) * n
        count += n
    return total / max(count, 1)


def evaluate(model, tokenizer, examples, batch_size: int = 64, max_new_tokens: int = 24,
             max_length: int = 128, device="cpu") -> dict:
    """{'accuracy': {task: acc}, 'accuracy_norm' (choice tasks), 'accuracy_flexible' (generation
    tasks), 'n': {task: n}, 'val_acc': example-weighted mean of 'accuracy', 'validation_loss'}."""
    was_training = model.training
    model.eval()
    by_task = defaultdict(list)
    for ex in examples:
        by_task[ex.task].append(ex)
    acc, acc_norm, acc_flexible, n = {}, {}, {}, {}
    for task, exs in by_task.items():
        if exs[0].scoring == "choice":
            hits, norm = choice_hits(exs, choice_loglikelihoods(model, tokenizer, exs, batch_size, device))
            acc_norm[task] = sum(norm) / len(norm)
        else:
            texts = generate_answers(model, tokenizer, exs, batch_size, max_new_tokens, device)
            hits, flexible = generation_hits(exs, texts)
            acc_flexible[task] = sum(flexible) / len(flexible)
        acc[task] = sum(hits) / len(hits)
        n[task] = len(hits)
    total = sum(n.values())
    result = {"accuracy": acc, "accuracy_norm": acc_norm, "accuracy_flexible": acc_flexible, "n": n,
              "val_acc": sum(acc[t] * n[t] for t in acc) / max(total, 1),
              "validation_loss": validation_loss(model, tokenizer, examples, batch_size, max_length, device)}
    model.train(was_training)
    return result


def accuracy_metrics(ev: dict) -> dict:
    """The per-task metric columns of one evaluation (names as ../shared/DESIGN.md, "Trial metrics", lists them)."""
    return {**{f"validation_accuracy_{t}": a for t, a in ev["accuracy"].items()},
            **{f"validation_accuracy_norm_{t}": a for t, a in ev["accuracy_norm"].items()},
            **{f"validation_accuracy_flexible_{t}": a for t, a in ev["accuracy_flexible"].items()}}
