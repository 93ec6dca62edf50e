"""Layer and head mappings between a student and a teacher of different depth and width.

A layer mapping is a list of (student block, teacher block) pairs with non-negative indices.
A head mapping is a pair of averaging matrices (groups x student heads, groups x teacher heads):
both attention maps are reduced to the same groups before they are compared, which covers
"teacher heads averaged per student head", the reverse, and any explicit grouping.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from wbvb.config import ConfigError, is_cut
from wbvb.distill_types import signals_of
from wbvb.models.cut import cut_blocks
from wbvb.models.load import num_blocks


def resolve_block(index: int, num_layers: int, what: str) -> int:
    """A config block index (negative counts from the end) as a non-negative one."""
    j = index + num_layers if index < 0 else index
    if not 0 <= j < num_layers:
        raise ConfigError(f"{what}: block {index} does not exist in a {num_layers}-block model")
    return j


def resolve_layers(layers: list[int], num_layers: int, what: str) -> list[int]:
    """Config layer indices (teacher_data.hidden_layers, ...) -> sorted unique block indices."""
    return sorted({resolve_block(i, num_layers, f"teacher_data.{what}") for i in layers})


def layer_pairs(mode: str, pairs: list[list[int]], student_layers: int, teacher_layers: int,
                what: str = "alignment", cut: list[int] | None = None) -> list[tuple[int, int]]:
    """(student block, teacher block) pairs for ``last``, ``uniform``, ``explicit`` or
    ``from_teacher`` mappings.

    uniform: student block i <-> teacher block max(round((i+1) * L_t / L_s), 1) - 1, the teacher
    block whose output depth is nearest the student block's, so the last blocks meet and the others
    spread evenly over the teacher's depth. A student more than twice as deep has early blocks
    nearest the embeddings (round gives 0); they take teacher block 0, the nearest block.
    from_teacher: student block i <-> ``cut[i]``, the teacher block it was cut from.
    """
    if mode == "from_teacher":
        if cut is None or len(cut) != student_layers:
            raise ConfigError(f"{what}_map=from_teacher needs a student cut from the teacher (models.student: "
                              f"{{from_teacher: ...}}) with one block per student block; this student has "
                              f"{student_layers} blocks and the cut {cut}")
        return list(enumerate(cut))
    if mode == "last":
        return [(student_layers - 1, teacher_layers - 1)]
    if mode == "uniform":
        # floor(x + 0.5): Python's round() rounds halves to even, which would skew the spacing
        return [(i, max(int((i + 1) * teacher_layers / student_layers + 0.5), 1) - 1) for i in range(student_layers)]
    if mode == "explicit":
        out = [(resolve_block(s, student_layers, f"{what}_pairs (student)"),
                resolve_block(t, teacher_layers, f"{what}_pairs (teacher)")) for s, t in pairs]
        if len({s for s, _ in out}) != len(out):
            raise ConfigError(f"{what}_pairs: each student block may appear once, got {pairs}")
        return out
    raise ConfigError(f"{what}_map '{mode}': choose last | uniform | explicit")


def stored_index(teacher_block: int, stored: list[int]) -> int:
    """Position of a teacher block on the batch's layer axis (the store keeps sorted blocks)."""
    return stored.index(teacher_block)


def missing_layers(pairs: list[tuple[int, int]], stored: list[int]) -> list[int]:
    return sorted({t for _, t in pairs if t not in stored})


@dataclass
class HeadMap:
    """Averaging matrices that bring student and teacher heads to the same groups."""

    student: torch.Tensor  # [groups, student heads]
    teacher: torch.Tensor  # [groups, teacher heads]

    def apply(self, student_attn: torch.Tensor, teacher_attn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _average(self.student, student_attn), _average(self.teacher, teacher_attn)


def _average(groups: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
    if groups.size(0) == groups.size(1) and torch.equal(groups, torch.eye(groups.size(0))):
        return attn  # one head per group: nothing to average
    return torch.einsum("gh,bhqk->bgqk", groups.to(attn), attn)


def _group_matrix(groups: list[list[int]], heads: int) -> torch.Tensor:
    m = torch.zeros(len(groups), heads)
    for g, members in enumerate(groups):
        m[g, members] = 1.0 / len(members)
    return m


def head_map(mode: str, groups: list[list[int]], student_heads: int, teacher_heads: int) -> HeadMap:
    """grouped: average the larger side's heads in equal consecutive groups; explicit: groups[h] are
    the teacher heads averaged for student head h. Query heads count (GQA shares keys, not maps)."""
    if mode == "explicit":
        if len(groups) != student_heads:
            raise ConfigError(f"alignment.head_groups has {len(groups)} groups but the student has {student_heads} "
                              "attention heads; give one list of teacher heads per student head")
        bad = [h for g in groups for h in g if not 0 <= h < teacher_heads]
        if bad:
            raise ConfigError(f"alignment.head_groups: teacher head {bad[0]} does not exist "
                              f"(the teacher has {teacher_heads} heads)")
        return HeadMap(torch.eye(student_heads), _group_matrix(groups, teacher_heads))
    if teacher_heads % student_heads == 0:
        g = teacher_heads // student_heads
        return HeadMap(torch.eye(student_heads),
                       _group_matrix([list(range(h * g, (h + 1) * g)) for h in range(student_heads)], teacher_heads))
    if student_heads % teacher_heads == 0:
        g = student_heads // teacher_heads
        return HeadMap(_group_matrix([list(range(h * g, (h + 1) * g)) for h in range(teacher_heads)], student_heads),
                       torch.eye(teacher_heads))
    raise ConfigError(f"alignment.head_map=grouped needs one head count to divide the other (student "
                      f"{student_heads}, teacher {teacher_heads}); set alignment.head_map=explicit with head_groups")


def cut_of(cfg, teacher_layers: int) -> list[int] | None:
    """The teacher blocks a cut student was made of, or None when the student is not a cut."""
    return cut_blocks(cfg.models.student, teacher_layers) if is_cut(cfg.models.student) else None


def check_stored_layers(cfg, student_layers: int, teacher_layers: int) -> None:
    """At sweep start: every mapped teacher block must be among the blocks the store keeps."""
    al, td = cfg.alignment, cfg.teacher_data
    signals = signals_of(cfg.sweep.distill_types)
    for kind, key in (("hidden", "hidden_layers"), ("attention", "attention_layers")):
        if kind not in signals:
            continue
        pairs = layer_pairs(getattr(al, f"{kind}_map"), getattr(al, f"{kind}_pairs"), student_layers,
                            teacher_layers, f"alignment.{kind}", cut_of(cfg, teacher_layers))
        stored = resolve_layers(getattr(td, key), teacher_layers, key)
        missing = missing_layers(pairs, stored)
        if missing:
            needed = sorted({t for _, t in pairs})
            raise ConfigError(
                f"alignment.{kind}_map={getattr(al, f'{kind}_map')} maps student blocks to teacher blocks {needed}, "
                f"but teacher_data.{key} stores only {stored} (missing {missing}); set teacher_data.{key}={needed}")


def check_alignment_layers(cfg, teacher_path: str, student_path: str) -> None:
    """Before any teacher data is made: the blocks the alignment maps must be ones the store keeps."""
    check_stored_layers(cfg, num_blocks(student_path), num_blocks(teacher_path))
