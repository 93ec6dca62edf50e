"""The trainer's loss on one hand-built batch: what each distill type captures, logs and trains."""
import pytest
import torch

from wbvb.config import ConfigError, config_from_dict
from wbvb.models.load import load_tokenizer
from wbvb.models.presets import ensure_preset
from wbvb.store.schema import TeacherDims
from wbvb.train.student import PROJECTORS_FILE
from wbvb.train.trainer import Trainer

DIMS = TeacherDims(hidden_size=32, hidden_stride=2, attention_stride=2, hidden_layers=(0, 1),
                   attention_layers=(1,), num_layers=2, heads=4)


def _batch(n_hidden_layers=2, n_attn_layers=1, B=2, L=10, k=4, vocab=400):
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(B, L, dtype=torch.long)
    mask[1, 7:] = 0
    answer = torch.zeros(B, L, dtype=torch.bool)
    answer[0, 6:] = True
    answer[1, 4:7] = True
    n = (L + 1) // 2
    return {"input_ids": torch.randint(0, vocab, (B, L), generator=g), "attention_mask": mask, "answer_mask": answer,
            "topk_ids": torch.randint(0, vocab, (B, L, k), generator=g).to(torch.int16),
            "topk_logprobs": torch.log_softmax(torch.randn(B, L, k + 1, generator=g), -1)[..., :k].half(),
            "hidden": torch.randn(B, n_hidden_layers, n, 32, generator=g).half(),
            "attention": torch.softmax(torch.randn(B, n_attn_layers, 4, n, n, generator=g), -1).half(),
            "example_ids": ["a", "b"]}


def _trainer(tiny_dict, distill_type, **loss):
    tiny_dict["loss"] = loss
    cfg = config_from_dict(tiny_dict)
    paths = ensure_preset(cfg.models.preset, cfg.cache_dir)
    tok = load_tokenizer(str(paths["student"]))
    t = Trainer(cfg, distill_type, 0, str(paths["student"]), tok, DIMS)
    t._setup_optimisation(1)
    return t


def test_black_box_captures_nothing_and_logs_weighted_parts(tiny_dict):
    t = _trainer(tiny_dict, "black_box")
    assert t.bundle.capture is None and t.bundle.projectors is None
    loss, parts = t._loss(_batch())
    assert set(parts) == {"task", "kd", "task_weighted", "kd_weighted"}
    assert parts["kd_weighted"].item() == pytest.approx(0.5 * parts["kd"].item())
    assert loss.item() == pytest.approx(parts["task"].item() + 0.5 * parts["kd"].item(), rel=1e-6)


def test_combined_gradient_reaches_projector_and_student_only(tiny_dict):
    t = _trainer(tiny_dict, "combined")
    batch = _batch()
    loss, parts = t._loss(batch)
    assert set(parts) >= {"hidden", "attention", "hidden_weighted", "attention_weighted"}
    assert parts["attention_weighted"].item() == pytest.approx(0.1 * parts["attention"].item())
    loss.backward()
    assert t.bundle.projectors["0"].weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in t.bundle.student.model.layers[0].parameters())
    assert not any(batch[k].requires_grad for k in ("hidden", "attention", "topk_logprobs"))


def test_balancing_rescales_alignment_terms_to_the_kd_term(tiny_dict):
    t = _trainer(tiny_dict, "combined", balancing="kd_magnitude", hidden_loss="cka", attention_loss="kl")
    assert t.bundle.projectors is None  # CKA needs no projector
    _, parts = t._loss(_batch())
    kd = parts["kd"].item()
    assert parts["hidden_weighted"].item() == pytest.approx(0.1 * kd, rel=1e-5)
    assert parts["attention_weighted"].item() == pytest.approx(0.1 * kd, rel=1e-5)


def test_mapping_to_an_unstored_teacher_layer_is_refused(tiny_dict):
    tiny_dict["alignment"] = {"attention_map": "explicit", "attention_pairs": [[0, 0]]}
    with pytest.raises(ConfigError, match=r"teacher blocks \[0\].*teacher_data.attention_layers stores only \[1\]"):
        _trainer(tiny_dict, "attention")


def test_projectors_are_saved_with_the_student(tiny_dict, tmp_path):
    t = _trainer(tiny_dict, "hidden_state")
    t.save_pretrained(tmp_path / "final")
    state = torch.load(tmp_path / "final" / PROJECTORS_FILE)
    assert state["0.weight"].shape == (32, 16)


def test_embedding_rows_padded_past_the_tokenizer_do_not_change_the_loss(tiny_dict, tmp_path):
    from transformers import AutoModelForCausalLM

    t = _trainer(tiny_dict, "black_box")
    base_loss, _ = t._loss(_batch())
    padded = AutoModelForCausalLM.from_pretrained(t.bundle.student.config._name_or_path or ".")
    real = len(t.tokenizer)
    padded.resize_token_embeddings(real + 16)  # e.g. 151,936 tokens in 152,064 rows
    with torch.no_grad():
        padded.get_output_embeddings().weight[real:] = 50.0  # junk logits past the vocabulary
    padded.save_pretrained(tmp_path / "padded")
    cfg = t.cfg
    t2 = Trainer(cfg, "black_box", 0, str(tmp_path / "padded"), t.tokenizer, DIMS)
    assert t2.vocab == real < t2.bundle.student.config.vocab_size
    loss, _ = t2._loss(_batch())
    assert loss.item() == pytest.approx(base_loss.item(), rel=1e-5)
