"""Log-probabilities of continuations after a prompt, the prompt run once and the LM head only where read.

One pass per example feeds prompt + its main continuation (the gold answer, so the validation
loss comes from the same pass); every other continuation's first token is read at the prompt's
last position, and a continuation that leaves the main one after its first token is fed on top of
the prompt's KV cache (the main continuation's cached positions masked out). The base model gives
hidden states; the output head and its log-softmax run only at the positions a score reads, so no
batch × length × vocabulary tensor exists.
"""
from __future__ import annotations

import inspect

import torch


def _cache_keyword(model) -> str:
    """The forward's KV-cache argument: ``cache`` from transformers 5.25 (``past_key_values`` still
    accepted there, with a warning, until 5.40), ``past_key_values`` before."""
    params = inspect.signature(model.base_model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _returned_cache(out):
    return out["cache"] if "cache" in out else out["past_key_values"]


def head_logprobs(model, hidden: torch.Tensor) -> torch.Tensor:
    """log-softmax of the model's own output head at ``hidden`` ([N, d] -> [N, V]), fp32."""
    logits = model.get_output_embeddings()(hidden).float()
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:  # Gemma-2 style soft-capping, as the model's forward applies it
        logits = torch.tanh(logits / cap) * cap
    return torch.log_softmax(logits, -1)


def right_padded(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input ids, attention mask) of token lists padded on the right to the longest."""
    L = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), L), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), L), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s)
        mask[i, :len(s)] = 1
    return ids, mask


def _main_pass(model, prompts, mains, pad_id: int, device, cache: bool):
    """Hidden states of prompt + main[:-1] per row (right-padded), and the KV cache when asked."""
    ids, mask = right_padded([p + m[:-1] for p, m in zip(prompts, mains)], pad_id)
    L = ids.shape[1]
    out = model.base_model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=cache)
    return out.last_hidden_state, (_returned_cache(out) if cache else None), L


def _extra_pass(model, cache, rows, prompts, feeds, L: int, pad_id: int, device) -> torch.Tensor:
    """Hidden states of ``feeds[r]`` fed after prompt ``rows[r]``'s cached positions; only the prompt's
    own positions are attended to (its main continuation and padding are masked out)."""
    cache.batch_select_indices(torch.tensor(rows, device=device))
    n = max(len(f) for f in feeds)
    ids = torch.full((len(rows), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), L + n), dtype=torch.long)
    pos = torch.zeros((len(rows), n), dtype=torch.long)
    for r, (i, f) in enumerate(zip(rows, feeds)):
        ids[r, :len(f)] = torch.tensor(f)
        mask[r, :len(prompts[i])] = 1
        mask[r, L: L + len(f)] = 1
        pos[r] = len(prompts[i]) + torch.arange(n)
    out = model.base_model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device),
                           use_cache=True, **{_cache_keyword(model): cache})
    return out.last_hidden_state


@torch.no_grad()
def continuation_logprobs(model, items, batch_size: int, pad_id: int, device) -> list[list[list[float]]]:
    """``items``: (prompt ids, [continuation ids, ...]); the first continuation is the main one.
    Returns, per item and continuation, the log-probability of each of its tokens."""
    order = sorted(range(len(items)), key=lambda i: -len(items[i][0]) - len(items[i][1][0]))
    out: list = [None] * len(items)
    if any(not p for p, _ in items):
        raise ValueError("a prompt encodes to no tokens, so nothing conditions its continuations; "
                         "set models.add_bos=true or give the example a prompt")
    for start in range(0, len(order), batch_size):
        idx = order[start: start + batch_size]
        prompts = [items[i][0] for i in idx]
        conts = [items[i][1] for i in idx]
        mains = [c[0] for c in conts]
        extra = [(b, j) for b, cs in enumerate(conts) for j, c in enumerate(cs[1:], 1)
                 if len(c) > 1 and not (len(c) <= len(mains[b]) and c[:-1] == mains[b][:len(c) - 1])]
        is_extra = set(extra)
        hidden, cache, L = _main_pass(model, prompts, mains, pad_id, device, cache=bool(extra))
        # positions read from the main pass: each main token's, and the first token of every other one
        where, targets = [], []
        for b, (p, cs) in enumerate(zip(prompts, conts)):
            for j, c in enumerate(cs):
                if (b, j) in is_extra:
                    c = c[:1]
                where += [(b, len(p) - 1 + t) for t in range(len(c))]
                targets += c
        bi, ti = torch.tensor(where, device=device).unbind(-1)
        lp = head_logprobs(model, hidden[bi, ti]).gather(-1, torch.tensor(targets, device=device)[:, None])[:, 0]
        lp = lp.tolist()
        if extra:
            feeds = [conts[b][j][:-1] for b, j in extra]
            h = _extra_pass(model, cache, [b for b, _ in extra], prompts, feeds, L, pad_id, device)
            sel = [(r, t) for r, f in enumerate(feeds) for t in range(len(f))]
            ri, ti = torch.tensor(sel, device=device).unbind(-1)
            tg = torch.tensor([conts[b][j][t + 1] for (b, j) in extra for t in range(len(conts[b][j]) - 1)],
                              device=device)
            lp_extra = head_logprobs(model, h[ri, ti]).gather(-1, tg[:, None])[:, 0].tolist()
        k = e = 0
        for b, cs in enumerate(conts):
            res = []
            for j, c in enumerate(cs):
                if (b, j) in is_extra:
                    res.append(lp[k: k + 1] + lp_extra[e: e + len(c) - 1])
                    k, e = k + 1, e + len(c) - 1
                else:
                    res.append(lp[k: k + len(c)])
                    k += len(c)
            out[idx[b]] = res
    return out
