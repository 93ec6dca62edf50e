"""Token-level encoding of examples and padding of rows into torch batches.

Every stage (teacher data, training, seq_kd answers, evaluation) encodes an example the same way,
as lm-evaluation-harness encodes a context/continuation pair (its ``_encode_pair``): trailing
whitespace of the prompt moves onto the answer, prompt + answer are tokenized as one text and the
answer is what follows the prompt's own tokens (``whole[len(prompt_ids):]``). Tokenized alone, a
leading-space answer comes out as other pieces for SentencePiece-style tokenizers than the model
reads in running text. ``models.add_bos`` says whether a BOS token leads (``encode_text``).
"""
from __future__ import annotations

from typing import Iterable, Protocol, Sequence

import numpy as np
import torch

from wbvb.config import DEFAULT_ADD_BOS
from wbvb.feed.shuffle import epoch_order


def encode_text(tokenizer, text: str, add_bos: str = DEFAULT_ADD_BOS) -> list[int]:
    """Token ids of ``text``: ``auto`` as the tokenizer itself encodes it (``tokenizer(text)``, what
    lm-eval's HF backend does unless asked otherwise), ``true`` with one leading BOS, ``false`` with
    no special tokens."""
    if add_bos == "auto":
        return list(tokenizer(text)["input_ids"])
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if add_bos == "true":
        if tokenizer.bos_token_id is None:
            raise ValueError("models.add_bos is true but the tokenizer has no BOS token; set models.add_bos "
                             "to auto or false")
        return [tokenizer.bos_token_id] + ids
    return ids


def encode_pair(tokenizer, context: str, continuation: str, add_bos: str = DEFAULT_ADD_BOS) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) split out of one joint encoding, as lm-eval's ``_encode_pair``."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    ctx = encode_text(tokenizer, context, add_bos)
    return ctx, encode_text(tokenizer, context + continuation, add_bos)[len(ctx):]


def fit_prompt(prompt: list[int], answer_len: int, max_length: int, tokenizer) -> list[int]:
    """The prompt cut from the left so prompt + answer fit ``max_length``; a leading BOS is kept."""
    cut = len(prompt) + answer_len - max_length
    if cut <= 0:
        return prompt
    keep = 1 if prompt and prompt[0] == tokenizer.bos_token_id else 0
    return prompt[:keep] + prompt[keep + cut:]


def encode_example(example, tokenizer, max_length: int, add_bos: str = DEFAULT_ADD_BOS) -> dict:
    """Token ids of prompt+answer+eos and the prompt length; the prompt is cut from the left if too long."""
    p, a = encode_pair(tokenizer, example.prompt, example.answer, add_bos)
    a = a + [tokenizer.eos_token_id]
    if len(a) >= max_length:
        raise ValueError(f"example {example.id}: answer alone is {len(a)} tokens, over "
                         f"training.max_length={max_length}; raise max_length")
    p = fit_prompt(p, len(a), max_length, tokenizer)
    return {"example_id": example.id, "task": example.task, "split": example.split,
            "input_ids": np.asarray(p + a, dtype=np.int32), "prompt_len": len(p), "label": example.label}


def collate(rows: Sequence[dict], pad_id: int) -> dict:
    """Right-pad rows into tensors. Teacher signals present in the rows are padded with zeros."""
    lengths = [len(r["input_ids"]) for r in rows]
    b, L = len(rows), max(lengths)
    input_ids = torch.full((b, L), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((b, L), dtype=torch.long)
    answer_mask = torch.zeros((b, L), dtype=torch.bool)
    for i, r in enumerate(rows):
        n = lengths[i]
        input_ids[i, :n] = torch.as_tensor(np.asarray(r["input_ids"]), dtype=torch.long)
        attention_mask[i, :n] = 1
        answer_mask[i, int(r["prompt_len"]):n] = True
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "answer_mask": answer_mask,
             "example_ids": [r["example_id"] for r in rows]}
    for key in ("topk_ids", "topk_logprobs", "hidden", "attention"):
        if key in rows[0]:
            batch[key] = _pad_stack([r[key] for r in rows], key)
    return batch


def _pad_stack(tensors: Iterable[torch.Tensor], key: str) -> torch.Tensor:
    """Zero-pad the sequence axes: topk (n, k); hidden (layers, n, D); attention (layers, H, n, n)."""
    tensors = list(tensors)
    first = tensors[0]
    if key == "attention":
        n = max(t.shape[-1] for t in tensors)
        out = torch.zeros((len(tensors), *first.shape[:2], n, n), dtype=first.dtype)
        for i, t in enumerate(tensors):
            out[i, ..., : t.shape[-2], : t.shape[-1]] = t
        return out
    axis = 1 if key == "hidden" else 0
    n = max(t.shape[axis] for t in tensors)
    shape = list(first.shape)
    shape[axis] = n
    out = torch.zeros((len(tensors), *shape), dtype=first.dtype)
    for i, t in enumerate(tensors):
        if axis == 1:
            out[i, :, : t.shape[1]] = t
        else:
            out[i, : t.shape[0]] = t
    return out


class BatchSource(Protocol):
    """Batches of epochs [first_epoch, end_epoch) in an order fixed by (seed, epoch), as (epoch, batch);
    ``skip`` micro-batches of the first epoch are left out (a mid-epoch resume). A source whose
    ``runs_ahead`` is true makes its batches ahead in another process; any other gets a reader thread."""

    num_rows: int

    def batches(self, first_epoch: int, end_epoch: int, seed: int, skip: int = 0) -> Iterable[tuple[int, dict]]: ...


def batched(items: Sequence, size: int):
    for i in range(0, len(items), size):
        yield items[i: i + size]


class ExampleSource:
    """In-memory examples as a batch source (``seq_kd`` trials; the teacher's fine-tune), read in
    ``epoch_order``: the order a ``ShardStream`` over the same examples reads."""

    def __init__(self, examples, tokenizer, max_length: int, batch_size: int, add_bos: str = DEFAULT_ADD_BOS):
        self.rows = [encode_example(ex, tokenizer, max_length, add_bos) for ex in examples]
        self.pad_id = tokenizer.pad_token_id
        self.batch_size = batch_size
        self.num_rows = len(self.rows)

    def batches(self, first_epoch: int, end_epoch: int, seed: int, skip: int = 0):
        """(epoch, batch) in ``epoch_order(seed, epoch)``; ``skip`` micro-batches of the first
        epoch are left out without being padded (a mid-epoch resume)."""
        ids = [r["example_id"] for r in self.rows]
        for epoch in range(first_epoch, end_epoch):
            order = epoch_order(ids, seed, epoch)
            if epoch == first_epoch:
                order = order[skip * self.batch_size:]
            for idx in batched(order, self.batch_size):
                yield epoch, collate([self.rows[i] for i in idx], self.pad_id)

    def epoch(self, epoch: int, seed: int):
        for _, batch in self.batches(epoch, epoch + 1, seed):
            yield batch
