"""Per-task accuracy with each task's own protocol, as lm-evaluation-harness scores it.

Choice tasks (SST-2, MMLU and their quickstart stand-ins) are scored by the log-likelihood of
each choice continuation after the prompt (argmax wins), prompt and choice encoded together and
split as the harness does (``feed.batches.encode_pair``); the length-normalised variant divides by
the choice's length in characters without the space that joins it to the prompt (the harness's
``acc_norm``: ``len(choice)`` of its ``doc_to_choice``). Generation tasks (GSM8K, arithmetic) are
scored by batched greedy decoding with a KV cache, stopped at the harness's GSM8K ``until``
strings (``Question:``, ``</s>``, ``<|im_end|>``) and the EOS token, and the harness's regexes
(``tasks.extract``). The validation loss is the gold answer's token cross-entropy, read from the
same pass that scores the choices (``train.scoring``). Teacher-forced first-token matching is not
used: it is not an accuracy anyone can compare.
"""
from __future__ import annotations

from collections import defaultdict

import torch

from wbvb.config import DEFAULT_ADD_BOS
from wbvb.feed.batches import batched, encode_pair, encode_text, fit_prompt
from wbvb.tasks.extract import extract_flexible, extract_strict
from wbvb.train.scoring import continuation_logprobs

STOP_STRINGS = ("Question:", "</s>", "<|im_end|>")  # lm-eval's gsm8k ``until`` (it adds the EOS text too)
TARGET_DELIMITER = " "  # what joins prompt and choice; lm-eval's acc_norm does not count it


def _items(tokenizer, examples, max_length: int, add_bos: str) -> list[tuple[list[int], list[list[int]]]]:
    """Per example: the prompt ids and the continuations to score, the gold answer + EOS first, then
    each choice; the prompt is cut from the left as ``encode_example`` cuts it."""
    items = []
    for ex in examples:
        p, gold = encode_pair(tokenizer, ex.prompt, ex.answer, add_bos)
        gold = gold + [tokenizer.eos_token_id]
        p_cut = fit_prompt(p, len(gold), max_length, tokenizer)
        choices = [encode_pair(tokenizer, ex.prompt, c, add_bos)[1] for c in ex.choices or []]
        items.append((p_cut, [gold] + choices))
    return items


def score_examples(model, tokenizer, examples, batch_size: int, max_length: int, device,
                   add_bos: str = DEFAULT_ADD_BOS) -> tuple[list[list[float]], float, int]:
    """(choice log-likelihoods per example, summed gold-answer NLL, gold tokens) from one pass."""
    lps = continuation_logprobs(model, _items(tokenizer, examples, max_length, add_bos), batch_size,
                                tokenizer.pad_token_id, device)
    scores = [[sum(c) for c in lp[1:]] for lp in lps]
    return scores, -sum(sum(lp[0]) for lp in lps), sum(len(lp[0]) for lp in lps)


def choice_loglikelihoods(model, tokenizer, examples, batch_size: int, device, max_length: int = 1 << 30,
                          add_bos: str = DEFAULT_ADD_BOS) -> list[list[float]]:
    """Summed log-probability of each choice continuation given the prompt, per example."""
    return score_examples(model, tokenizer, examples, batch_size, max_length, device, add_bos)[0]


def choice_hits(examples, scores: list[list[float]]) -> tuple[list[bool], list[bool]]:
    """(plain, length-normalised) correctness per example; ties go to the first choice."""
    plain, norm = [], []
    for ex, s in zip(examples, scores):
        normed = [v / max(len(c.removeprefix(TARGET_DELIMITER)), 1) for v, c in zip(s, ex.choices)]
        plain.append(ex.choices[s.index(max(s))].strip() == ex.label)
        norm.append(ex.choices[normed.index(max(normed))].strip() == ex.label)
    return plain, norm


def stop_strings(tokenizer) -> tuple[str, ...]:
    """The stop strings plus the EOS token's text, as lm-eval's ``handle_stop_sequences`` adds it."""
    eos = tokenizer.decode([tokenizer.eos_token_id]) if tokenizer.eos_token_id is not None else ""
    return STOP_STRINGS + ((eos,) if eos and eos not in STOP_STRINGS else ())


def cut_at_stop(text: str, stops: tuple[str, ...] = STOP_STRINGS) -> str:
    for stop in stops:
        text = text.split(stop)[0]
    return text


class _StopAtText:
    """Per-sequence stopping criterion: done once the new text, special tokens written out (as
    lm-eval's stop criterion decodes it), holds a stop string."""

    def __init__(self, tokenizer, prompt_len: int, stops: tuple[str, ...]):
        self.tokenizer, self.prompt_len, self.stops = tokenizer, prompt_len, stops

    def __call__(self, input_ids, scores, **kwargs):
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_len:], skip_special_tokens=False)
        return torch.tensor([any(s in t for s in self.stops) for t in texts], device=input_ids.device)


@torch.no_grad()
def generate_answers(model, tokenizer, examples, batch_size: int, max_new_tokens: int, device,
                     add_bos: str = DEFAULT_ADD_BOS) -> list[str]:
    """Greedy continuations of each prompt (left-padded batches, KV cache), cut at the stop strings."""
    from transformers import StoppingCriteriaList

    out = []
    pad = tokenizer.pad_token_id
    stops = stop_strings(tokenizer)
    for chunk in batched(examples, batch_size):
        prompts = [encode_text(tokenizer, ex.prompt, add_bos) for ex in chunk]
        n = max(len(p) for p in prompts)
        ids = torch.full((len(chunk), n), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), n), dtype=torch.long)
        for i, p in enumerate(prompts):  # left padding for batched generation
            ids[i, n - len(p):] = torch.tensor(p)
            mask[i, n - len(p):] = 1
        gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                             max_new_tokens=max_new_tokens, pad_token_id=pad, use_cache=True,
                             eos_token_id=tokenizer.eos_token_id,
                             stopping_criteria=StoppingCriteriaList([_StopAtText(tokenizer, n, stops)]))
        out += [cut_at_stop(t, stops) for t in tokenizer.batch_decode(gen[:, n:], skip_special_tokens=True)]
    return out


def generation_hits(examples, texts: list[str]) -> tuple[list[bool], list[bool]]:
    """(strict, flexible) exact match of each generated text against the gold number."""
    strict = [extract_strict(t) == ex.label for ex, t in zip(examples, texts)]
    flexible = [extract_flexible(t) == ex.label for ex, t in zip(examples, texts)]
    return strict, flexible


def evaluate(model, tokenizer, examples, batch_size: int = 64, max_new_tokens: int = 24,
             max_length: int = 128, device="cpu", add_bos: str = DEFAULT_ADD_BOS) -> dict:
    """{'accuracy': {task: acc}, 'accuracy_norm' (choice tasks), 'accuracy_flexible' (generation
    tasks), 'n': {task: n}, 'val_acc': example-weighted mean of 'accuracy', 'validation_loss'}."""
    was_training = model.training
    model.eval()
    by_task = defaultdict(list)
    for ex in examples:
        by_task[ex.task].append(ex)
    acc, acc_norm, acc_flexible, n = {}, {}, {}, {}
    nll, tokens = 0.0, 0
    for task, exs in by_task.items():
        scores, task_nll, task_tokens = score_examples(model, tokenizer, exs, batch_size, max_length, device, add_bos)
        nll, tokens = nll + task_nll, tokens + task_tokens
        if exs[0].scoring == "choice":
            hits, norm = choice_hits(exs, scores)
            acc_norm[task] = sum(norm) / len(norm)
        else:
            texts = generate_answers(model, tokenizer, exs, batch_size, max_new_tokens, device, add_bos)
            hits, flexible = generation_hits(exs, texts)
            acc_flexible[task] = sum(flexible) / len(flexible)
        acc[task] = sum(hits) / len(hits)
        n[task] = len(hits)
    total = sum(n.values())
    result = {"accuracy": acc, "accuracy_norm": acc_norm, "accuracy_flexible": acc_flexible, "n": n,
              "val_acc": sum(acc[t] * n[t] for t in acc) / max(total, 1),
              "validation_loss": nll / max(tokens, 1)}
    model.train(was_training)
    return result


def accuracy_metrics(ev: dict) -> dict:
    """The per-task metric columns of one evaluation (names as ../shared/DESIGN.md, "Trial metrics", lists them)."""
    return {**{f"validation_accuracy_{t}": a for t, a in ev["accuracy"].items()},
            **{f"validation_accuracy_norm_{t}": a for t, a in ev["accuracy_norm"].items()},
            **{f"validation_accuracy_flexible_{t}": a for t, a in ev["accuracy_flexible"].items()}}
