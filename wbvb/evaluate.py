"""Per-task accuracy with each task's own protocol.

Choice tasks (sentiment, multiple choice) are scored by the log-likelihood of each choice
continuation after the prompt (argmax wins); generation tasks (arithmetic) by greedy decoding
and exact match of the number after ``####``. Teacher-forced first-token matching is not used:
it is not an accuracy anyone can compare.
"""
from __future__ import annotations

import re
from collections import defaultdict

import torch

from wbvb.batches import batched, collate, encode_example, prompt_ids
from wbvb.losses import task_loss

_ANSWER_RE = re.compile(r"####\s*\$?(-?[\d,]*\.?\d+)")


def extract_answer(text: str) -> str | None:
    """The number after '####' (commas and '$' ignored), or None."""
    m = _ANSWER_RE.search(text)
    return m.group(1).replace(",", "") if m else None


@torch.no_grad()
def _choice_predictions(model, tokenizer, examples, batch_size: int, device) -> list[bool]:
    pairs = []  # (example index, choice index, ids, prompt_len)
    for i, ex in enumerate(examples):
        p = prompt_ids(tokenizer, ex.prompt)
        for j, choice in enumerate(ex.choices):
            c = tokenizer(choice, add_special_tokens=False)["input_ids"]
            pairs.append((i, j, p + c, len(p)))
    scores = defaultdict(dict)
    for chunk in batched(pairs, batch_size):
        rows = [{"example_id": "", "input_ids": ids, "prompt_len": pl} for _, _, ids, pl in chunk]
        b = collate(rows, tokenizer.pad_token_id)
        logits = model(input_ids=b["input_ids"].to(device), attention_mask=b["attention_mask"].to(device)).logits
        logp = torch.log_softmax(logits[:, :-1].float(), -1)
        tok_lp = logp.gather(-1, b["input_ids"][:, 1:].to(device).unsqueeze(-1)).squeeze(-1)
        ll = (tok_lp * b["answer_mask"][:, 1:].to(device)).sum(-1)
        for (i, j, _, _), v in zip(chunk, ll.tolist()):
            scores[i][j] = v
    out = []
    for i, ex in enumerate(examples):
        best = max(scores[i], key=scores[i].get)
        out.append(ex.choices[best].strip() == ex.label)
    return out


@torch.no_grad()
def _generation_predictions(model, tokenizer, examples, batch_size: int, max_new_tokens: int, device) -> list[bool]:
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
                             max_new_tokens=max_new_tokens, pad_token_id=pad,
                             eos_token_id=tokenizer.eos_token_id)
        texts = tokenizer.batch_decode(gen[:, n:], skip_special_tokens=True)
        for ex, text in zip(chunk, texts):
            text = text.split("\nQuestion:")[0]
            out.append(extract_answer(text) == ex.label)
    return out


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
    """{'accuracy': {task: acc}, 'n': {task: n}, 'val_acc': example-weighted mean, 'validation_loss'}."""
    was_training = model.training
    model.eval()
    by_task = defaultdict(list)
    for ex in examples:
        by_task[ex.task].append(ex)
    acc, n = {}, {}
    for task, exs in by_task.items():
        if exs[0].scoring == "choice":
            hits = _choice_predictions(model, tokenizer, exs, batch_size, device)
        else:
            hits = _generation_predictions(model, tokenizer, exs, batch_size, max_new_tokens, device)
        acc[task] = sum(hits) / len(hits)
        n[task] = len(hits)
    total = sum(n.values())
    result = {"accuracy": acc, "n": n,
              "val_acc": sum(acc[t] * n[t] for t in acc) / max(total, 1),
              "validation_loss": validation_loss(model, tokenizer, examples, batch_size, max_length, device)}
    model.train(was_training)
    return result
