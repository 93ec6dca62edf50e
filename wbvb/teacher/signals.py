"""The teacher's forward for the store: top-k log-probs, and only the configured layers' states.

A Llama-family teacher runs its fast attention kernel (sdpa) in every block; ``capture.Capture``
keeps the hidden states of the configured blocks and computes eager attention probabilities only
in the configured attention blocks. Returning every block's [B, H, S, S] map
(``output_attentions``) would force eager attention everywhere, which is most of a 32-layer
teacher's extra cost. Other architectures fall back to eager attention in every block and
``output_hidden_states``/``output_attentions``.

The LM head runs only at each row's real (unpadded) positions (``models.head.HeadAt``): a padded
batch never makes [B, S, vocab] logits, only [real positions, vocab]. Top-k and the log-probs
read those rows; the log-probs come from ``log_softmax``'s fused kernel on chunks of positions
that stay in cache, gathered at the top-k ids. ``logsumexp`` over the whole logits (an amax pass,
then a temporary of the same size) plus top-k cost about a third of a small teacher's forward.
"""
from __future__ import annotations

import torch

from wbvb.models.capture import Capture, decoder_parts
from wbvb.models.head import HeadAt

CHUNK_ELEMENTS = 1 << 19  # logits per log-softmax chunk: 2 MiB of float32, one core's L2 on the reference machine


def real_positions(lengths: list[int], device) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, position) of each row's first ``lengths[i]`` positions, row-major."""
    n = torch.tensor(lengths, device=device)
    rows = torch.repeat_interleave(torch.arange(len(lengths), device=device), n)
    starts = torch.repeat_interleave(torch.cumsum(n, 0) - n, n)
    return rows, torch.arange(int(n.sum()), device=device) - starts


def topk_logprobs(logits: torch.Tensor, k: int, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, V] logits -> (log-probs [N, k] float32, ids [N, k]) over the first ``vocab`` entries."""
    vals = torch.empty(logits.size(0), k, dtype=torch.float32, device=logits.device)
    ids = torch.empty(logits.size(0), k, dtype=torch.long, device=logits.device)
    chunk = max(1, CHUNK_ELEMENTS // vocab)
    for start in range(0, logits.size(0), chunk):  # log_softmax's fused kernel, on a chunk still in cache
        x = logits[start:start + chunk, :vocab].float()
        j = x.topk(k, dim=-1).indices
        vals[start:start + chunk] = torch.log_softmax(x, dim=-1).gather(-1, j)
        ids[start:start + chunk] = j
    return vals, ids


class TeacherSignals:
    """Runs the teacher over a padded batch; returns top-k log-probs/ids and the chosen blocks'
    hidden states [B, layers, S, D] and attention maps [B, layers, H, S, S], strided, on the CPU."""

    def __init__(self, model, hidden_layers: list[int], attention_layers: list[int]):
        self.model, self.hidden_layers, self.attention_layers = model, hidden_layers, attention_layers
        self.head = HeadAt(model)
        try:
            decoder_parts(model)
        except ValueError:
            self.capture = None
            model.set_attn_implementation("eager")
        else:
            self.capture = Capture(model, hidden_layers, attention_layers)

    @torch.no_grad()
    def __call__(self, input_ids, attention_mask, lengths: list[int], k: int, vocab: int,
                 hidden_stride: int, attention_stride: int):
        rows, pos = real_positions(lengths, input_ids.device)
        with self.head.at(rows, pos):
            out, hidden, attentions = self._forward(input_ids, attention_mask)
        row_vals, row_ids = topk_logprobs(out.logits, k, vocab)
        b, t = input_ids.shape
        vals = torch.zeros(b, t, k, dtype=torch.float32, device=row_vals.device)
        ids = torch.zeros(b, t, k, dtype=torch.long, device=row_ids.device)
        vals[rows, pos], ids[rows, pos] = row_vals, row_ids
        hs, s = hidden_stride, attention_stride
        h = torch.stack([hidden[i][:, ::hs] for i in self.hidden_layers], 1).float().cpu()
        a = torch.stack([attentions[i][:, :, ::s, ::s] for i in self.attention_layers], 1).float().cpu()
        return vals.cpu(), ids.cpu(), h, a

    def _forward(self, input_ids, attention_mask):
        """(model output, hidden states by block, attention maps by block) of one forward."""
        if self.capture is None:
            out = self.model(input_ids=input_ids, attention_mask=attention_mask,
                             output_hidden_states=True, output_attentions=True)
            # hidden_states[0] is the embedding output; block i's output is hidden_states[i + 1]
            hidden = {i: out.hidden_states[i + 1] for i in self.hidden_layers}
            attentions = {i: out.attentions[i] for i in self.attention_layers}
        else:
            with self.capture:
                out = self.model(input_ids=input_ids, attention_mask=attention_mask)
            hidden, attentions = dict(self.capture.hidden), dict(self.capture.attentions)
            self.capture.hidden.clear()
            self.capture.attentions.clear()
        return out, hidden, attentions
