"""The prompt-once scoring path against a plain full-sequence log-likelihood computed densely here.

Reference: for each (prompt, continuation) run the whole model on prompt + continuation alone (no
batch, no padding, no cache), log-softmax over the full vocabulary at every position, and sum the
continuation tokens' log-probabilities. The validation loss reference is the mean cross-entropy of
every gold answer + EOS token, computed the same way.
"""
from __future__ import annotations

import pytest
import torch

from wbvb.tasks import Example
from wbvb.train.evaluate import _items, choice_loglikelihoods, evaluate


class WordTok:
    """Whitespace-word tokenizer with a leading-space marker, so choices can be several tokens."""

    pad_token_id, bos_token_id, eos_token_id = 0, 1, 2

    def __init__(self, words):
        self.vocab = {w: i + 3 for i, w in enumerate(words)}

    def __call__(self, text, add_special_tokens=True):
        ids = [self.vocab[w] for w in text.replace(" ", " _").split()]
        return {"input_ids": ([self.bos_token_id] if add_special_tokens else []) + ids}

    def decode(self, ids):
        return ""


WORDS = [p + w for p in ("", "_") for w in "a b c d e f g h Answer:".split()]


@pytest.fixture(scope="module")
def model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(WORDS) + 3, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0)
    return LlamaForCausalLM(cfg).eval()


def examples():
    # prompts of several lengths; choices of 1-3 tokens, some sharing the gold's first tokens, some not
    return [
        Example(id="0", task="t", split="eval", prompt="a b Answer:", answer=" a", label="a",
                choices=[" a", " b c", " a b", " d e f"]),
        Example(id="1", task="t", split="eval", prompt="c d e f g h a Answer:", answer=" b c", label="b c",
                choices=[" a", " b c", " b", " b d", " g h a"]),
        Example(id="2", task="t", split="eval", prompt="h Answer:", answer=" e f", label="e f",
                choices=[" e f", " f e"]),
    ]


def dense_logprob(model, ids: list[int], start: int) -> torch.Tensor:
    """Log-probabilities of ids[start:] under the full forward of ids alone, fp64 log-softmax."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    logp = torch.log_softmax(logits, -1)
    return logp[torch.arange(start - 1, len(ids) - 1), torch.tensor(ids[start:])]


@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_choice_scores_equal_the_dense_full_sequence_loglikelihood(model, batch_size):
    tok = WordTok(WORDS)
    exs = examples()
    got = choice_loglikelihoods(model, tok, exs, batch_size, "cpu", add_bos="true")
    for ex, scores in zip(exs, got):
        prompt = [1] + tok(ex.prompt, add_special_tokens=False)["input_ids"]
        for choice, s in zip(ex.choices, scores):
            cont = tok(choice, add_special_tokens=False)["input_ids"]
            ref = float(dense_logprob(model, prompt + cont, len(prompt)).sum())
            assert s == pytest.approx(ref, abs=1e-5), (ex.id, choice)


def test_validation_loss_from_the_same_pass_equals_the_separate_computation(model):
    tok = WordTok(WORDS)
    exs = examples()
    nll, n = 0.0, 0
    for ex in exs:
        prompt = [1] + tok(ex.prompt, add_special_tokens=False)["input_ids"]
        gold = tok(ex.answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        lp = dense_logprob(model, prompt + gold, len(prompt))
        nll, n = nll - float(lp.sum()), n + len(gold)
    ev = evaluate(model, tok, exs, batch_size=2, max_length=64, add_bos="true")
    assert ev["validation_loss"] == pytest.approx(nll / n, abs=1e-5)


def test_the_prompt_is_cut_as_training_cuts_it(model):
    tok = WordTok(WORDS)
    (p, conts), = _items(tok, examples()[1:2], 6, "true")
    assert p == [1, tok.vocab["_a"], tok.vocab["_Answer:"]]  # BOS kept, cut from the left: 3 + gold 3 = 6
    assert conts[0] == [tok.vocab["_b"], tok.vocab["_c"], 2]
