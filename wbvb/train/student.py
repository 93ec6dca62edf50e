"""The student side of a trial: the model with its projectors and capture, which student block
aligns to which stored teacher block, and the assembly of the weighted loss from one forward pass."""
from __future__ import annotations

import contextlib
from typing import Optional

import torch
from torch import nn

from wbvb.config import ConfigError
from wbvb.distill_types import DISTILL
from wbvb.models.capture import Capture
from wbvb.models.head import HeadAt
from wbvb.store.schema import TeacherDims
from wbvb.train import kd, losses
from wbvb.train.alignment import cut_of, head_map, layer_pairs, missing_layers, stored_index

PROJECTORS_FILE = "hidden_projectors.pt"  # beside the saved student: {student block: Linear state}


class StudentBundle(nn.Module):
    """The student plus its hidden-state projectors (one per mapped student block), trained and
    checkpointed as one module; ``capture`` (when set) collects what the alignment losses read."""

    def __init__(self, student: nn.Module, projectors: Optional[nn.ModuleDict], capture: Optional[Capture] = None):
        super().__init__()
        self.student = student
        self.projectors = projectors
        self.capture = capture
        self.head = HeadAt(student)

    def forward(self, input_ids, attention_mask, positions: Optional[tuple[torch.Tensor, torch.Tensor]] = None):
        """(logits, hidden states by student block, attention probabilities by student block).

        With ``positions`` (row indices, position indices) the logits are [N, V], at those positions
        only (the LM head runs there alone); without, the full [B, T, V]."""
        capture = self.capture if self.capture is not None else contextlib.nullcontext()
        head = self.head.at(*positions) if positions is not None else contextlib.nullcontext()
        with capture, head:
            logits = self.student(input_ids=input_ids, attention_mask=attention_mask).logits
        if self.capture is None:
            return logits, {}, {}
        return logits, dict(self.capture.hidden), dict(self.capture.attentions)


def alignment_pairs(kind: str, cfg, distill_type: str, teacher: TeacherDims, student_layers: int) -> list[tuple[int, int]]:
    """(student block, index on the batch's layer axis) for one alignment signal ("hidden" or
    "attention"), or [] when ``distill_type`` does not align it."""
    if kind not in DISTILL[distill_type].signals:
        return []
    al, stored = cfg.alignment, list(getattr(teacher, f"{kind}_layers"))
    if not teacher.num_layers or not stored:
        raise ConfigError(f"{distill_type} aligns {kind} states but the teacher data names no stored "
                          f"{kind} layers or teacher depth; regenerate it (python -m wbvb.teacher)")
    pairs = layer_pairs(getattr(al, f"{kind}_map"), getattr(al, f"{kind}_pairs"), student_layers,
                        teacher.num_layers, f"alignment.{kind}", cut_of(cfg, teacher.num_layers))
    missing = missing_layers(pairs, stored)
    if missing:
        raise ConfigError(f"alignment.{kind}: teacher blocks {missing} are mapped but teacher_data.{kind}_layers "
                          f"stores only {stored}; add them to teacher_data.{kind}_layers")
    return [(s, stored_index(t, stored)) for s, t in pairs]


class StudentLoss:
    """The weighted loss of one forward pass for one distill type: task, KD on the stored top-k,
    and the alignment of mapped blocks, each computed only when the type reads its signal."""

    def __init__(self, cfg, distill_type: str, teacher: TeacherDims, student_config, vocab: int):
        self.weights, self.teacher, self.vocab = cfg.loss, teacher, vocab
        self.signals = DISTILL[distill_type].signals
        layers = student_config.num_hidden_layers
        self.hidden_pairs = alignment_pairs("hidden", cfg, distill_type, teacher, layers)
        self.attention_pairs = alignment_pairs("attention", cfg, distill_type, teacher, layers)
        self.head_map = None
        if self.attention_pairs:
            al = cfg.alignment
            self.head_map = head_map(al.head_map, al.head_groups, student_config.num_attention_heads, teacher.heads)

    def bundle(self, student: nn.Module) -> StudentBundle:
        """The student with a projector per mapped block (none for CKA, which needs none) and a
        capture of exactly the blocks this loss reads (none for black-box and sft)."""
        projectors = None
        if self.hidden_pairs and self.weights.hidden_loss != "cka":
            projectors = nn.ModuleDict({str(s): nn.Linear(student.config.hidden_size, self.teacher.hidden_size)
                                        for s, _ in self.hidden_pairs})
        capture = None
        if self.hidden_pairs or self.attention_pairs:
            capture = Capture(student, [s for s, _ in self.hidden_pairs], [s for s, _ in self.attention_pairs])
        return StudentBundle(student, projectors, capture)

    def __call__(self, model: nn.Module, projectors: Optional[nn.ModuleDict], batch: dict,
                 device: torch.device) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(weighted total, every part unweighted and as ``<part>_weighted``); ``model`` is the bundle
        or the DeepSpeed engine that wraps it."""
        ids, mask, ans = (batch[k].to(device) for k in ("input_ids", "attention_mask", "answer_mask"))
        w = self.weights
        # the LM head runs only where the task and KD losses read: the positions predicting answer tokens
        logits, hidden, attn = model(ids, mask, losses.answer_positions(ans))
        parts = {"task": losses.task_loss(logits[..., :self.vocab], ids, ans)}
        if "topk" in self.signals and w.beta > 0:
            parts["kd"] = kd.topk_kd_loss(logits, batch["topk_ids"].to(device), batch["topk_logprobs"].to(device),
                                              ans, w.temperature, w.kd_divergence, w.jsd_beta, w.kd_tail_bucket,
                                              self.vocab, w.kd_chunk_positions)
        if self.hidden_pairs:
            teacher_hidden = batch["hidden"].to(device)
            parts["hidden"] = torch.stack([
                losses.hidden_loss(hidden[s], teacher_hidden[:, j], projectors[str(s)] if projectors else None, mask,
                                   self.teacher.hidden_stride, w.hidden_loss) for s, j in self.hidden_pairs]).mean()
        if self.attention_pairs:
            teacher_attn = batch["attention"].to(device)
            rows = batch.get("attention_row_mask")  # present when the store kept answer rows only
            parts["attention"] = torch.stack([
                losses.attention_loss(attn[s], teacher_attn[:, j], mask, self.teacher.attention_stride,
                                      self.head_map, w.attention_loss, rows) for s, j in self.attention_pairs]).mean()
        weighted = losses.weighted_parts(parts, w, w.balancing)
        return sum(weighted.values()), {**parts, **{f"{k}_weighted": v for k, v in weighted.items()}}
