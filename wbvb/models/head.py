"""The LM head at chosen positions only: logits [N, V] for N (row, position) pairs of a batch.

A loss reads the logits at the answer positions only, and a store at each row's real positions;
the full [B, T, V] logits of a padded batch (16 x 772 x 49,152 floats for SmolLM2) cost more than
the rest of a small model's forward. A forward pre-hook on the model's output embeddings
(``get_output_embeddings()``: ``lm_head``, tied or not) gathers the final hidden states at the
chosen positions before the head multiplies them, so the model's own forward still runs
everything around the head: the decoder, the final norm, and what the family applies to the
logits afterwards (Gemma-2's soft-capping, Cohere's ``logit_scale``, Granite's ``logits_scaling``:
all element-wise, so they hold for [N, V] as for [B, T, V]). Module hooks are also what capture
and DeepSpeed ZeRO-3 (which gathers the head's weights in its own pre-hook) rely on, so both keep
working.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn


class HeadAt:
    """``with head.at(b_idx, t_idx): model(...).logits`` is [N, V]: the logits at
    ``(b_idx[i], t_idx[i])`` in that order; outside the block the model is unchanged."""

    def __init__(self, model: nn.Module):
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if head is None:
            raise ValueError(f"{type(model).__name__} has no output embeddings (get_output_embeddings() is None): "
                             "logits at chosen positions need a causal LM with an LM head")
        self.positions: Optional[tuple[torch.Tensor, torch.Tensor]] = None
        self._handle = head.register_forward_pre_hook(self._gather)

    def _gather(self, _module, args):
        if self.positions is None:
            return None
        hidden = args[0]
        if hidden.dim() != 3:
            raise ValueError(f"the LM head got hidden states of shape {tuple(hidden.shape)}, expected [B, T, D]")
        b_idx, t_idx = self.positions
        return (hidden[b_idx, t_idx], *args[1:])

    def at(self, b_idx: torch.Tensor, t_idx: torch.Tensor) -> "HeadAt":
        self.positions = (b_idx, t_idx)
        return self

    def __enter__(self) -> "HeadAt":
        return self

    def __exit__(self, *exc) -> bool:
        self.positions = None
        return False

    def remove(self) -> None:
        self._handle.remove()
