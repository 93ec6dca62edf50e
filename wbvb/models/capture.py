"""Capture the student's hidden states and attention probabilities of mapped blocks only.

Hidden states: forward hooks on the mapped decoder blocks (the last block's state is taken after
the final norm, as ``output_hidden_states`` reports it and the teacher store keeps it).
Attention: in transformers 5.x a Llama-family attention module picks its kernel from
``self.config._attn_implementation`` on every call, so the mapped blocks get a config copy
naming a registered function that computes eager probabilities (and keeps them) while a capture
is active; every other block keeps the model's fast kernel (sdpa) and returns no probabilities.
The probabilities come from the model family's own eager kernel (its modeling module's
``eager_attention_forward``), so logit soft-capping (Gemma-2) or attention sinks are applied as
the model applies them; a sliding window is applied when the mask is left implicit.
"""
from __future__ import annotations

import copy
import math
import sys

import torch
from torch import nn

PROBS_ATTENTION = "wbvb_probs"


def _additive_mask(mask: torch.Tensor | None, q_len: int, k_len: int, like: torch.Tensor,
                   window: int | None = None) -> torch.Tensor:
    """The kernel's mask (bool keep-mask, additive float, or None for plain causal, within the last
    ``window`` keys when the block has a sliding window) as an additive mask."""
    if mask is None:
        q_pos = torch.arange(k_len - q_len, k_len, device=like.device)[:, None]
        k_pos = torch.arange(k_len, device=like.device)[None, :]
        keep = k_pos <= q_pos
        if window is not None:
            keep &= k_pos > q_pos - window
        mask = keep[None, None]
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=like.dtype, device=like.device).masked_fill(
            ~mask, torch.finfo(like.dtype).min)
    return mask[..., :k_len].to(like.dtype)


def eager_kernel(module):
    """The eager attention function of ``module``'s own modeling file (it applies what that family
    adds to softmax(QK^T): soft-capping, sinks); Llama's for a module whose file has none."""
    kernel = getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)
    if kernel is None:
        from transformers.models.llama.modeling_llama import eager_attention_forward as kernel
    return kernel


def probs_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Eager attention that keeps its probabilities while its block is captured; otherwise the
    kernel the model was loaded with (sdpa, or eager)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    store = getattr(module, "wbvb_capture", None)
    if store is None or not store.active:
        if getattr(module, "wbvb_loaded_kernel", "sdpa") == "eager":  # e.g. Gemma-2: sdpa refuses soft-capping
            return eager_kernel(module)(module, query, key, value, attention_mask, scaling=scaling,
                                        dropout=dropout, **kwargs)
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling,
                                      dropout=dropout, **kwargs)
    scaling = scaling if scaling is not None else 1.0 / math.sqrt(query.size(-1))
    mask = _additive_mask(attention_mask, query.size(2), key.size(2), query, kwargs.get("sliding_window"))
    out, weights = eager_kernel(module)(module, query, key, value, mask, scaling=scaling, dropout=dropout,
                                        **{k: v for k, v in kwargs.items() if k in ("softcap", "s_aux")})
    store.attentions[module.layer_idx] = weights
    return out, None


def _register() -> None:
    from transformers import AttentionInterface

    if PROBS_ATTENTION not in AttentionInterface._global_mapping:
        AttentionInterface.register(PROBS_ATTENTION, probs_attention)


def decoder_parts(model: nn.Module) -> tuple[nn.ModuleList, nn.Module]:
    """The decoder blocks and final norm of a Llama-family causal LM (model.model.layers/norm)."""
    inner = getattr(model, "model", None)
    layers, norm = getattr(inner, "layers", None), getattr(inner, "norm", None)
    if layers is None or norm is None:
        raise ValueError(f"{type(model).__name__}: hidden/attention capture needs a Llama-family causal LM "
                         "(model.model.layers and model.model.norm); use distill types sft or black_box")
    return layers, norm


class Capture:
    """Hooks for the chosen blocks; ``with capture:`` collects one forward pass into
    ``hidden[block]`` and ``attentions[block]`` ([B, H, q, k] probabilities)."""

    def __init__(self, model: nn.Module, hidden_blocks: list[int], attention_blocks: list[int]):
        layers, norm = decoder_parts(model)
        self.hidden: dict[int, torch.Tensor] = {}
        self.attentions: dict[int, torch.Tensor] = {}
        self.active = False
        self._handles = []
        last = len(layers) - 1
        for block in sorted(set(hidden_blocks)):
            source = norm if block == last else layers[block]
            self._handles.append(source.register_forward_hook(self._keeper(block)))
        if attention_blocks:
            _register()
        for block in sorted(set(attention_blocks)):
            attn = layers[block].self_attn
            if attn.config._attn_implementation not in ("sdpa", "eager", PROBS_ATTENTION):
                raise ValueError(f"attention capture supports students loaded with sdpa or eager attention, got "
                                 f"'{attn.config._attn_implementation}'")
            if attn.config._attn_implementation != PROBS_ATTENTION:  # not already captured
                attn.wbvb_loaded_kernel = attn.config._attn_implementation
            attn.config = copy.copy(attn.config)
            attn.config._attn_implementation_internal = PROBS_ATTENTION
            attn.wbvb_capture = self

    def _keeper(self, block: int):
        def hook(_module, _inputs, output):
            if self.active:
                self.hidden[block] = output[0] if isinstance(output, tuple) else output
        return hook

    def __enter__(self):
        self.hidden.clear()
        self.attentions.clear()
        self.active = True
        return self

    def __exit__(self, *exc):
        self.active = False
        return False
