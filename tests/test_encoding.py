"""Token boundaries and BOS as lm-evaluation-harness sets them, on a Llama-style tokenizer built here.

The tokenizer is a small BPE with the Metaspace pre-tokenizer (prepend scheme "first", no split
on whitespace, as SentencePiece reads text) and byte fallback, as Llama-2/TinyLlama/Mistral ship;
with it ``" positive"`` encoded alone is ``▁`` + ``positive``, while after ``Answer:`` in running
text the ``▁`` merges into the prompt's last piece.
"""
from __future__ import annotations

import pytest

from wbvb.config import ConfigError, config_from_dict
from wbvb.feed.batches import ExampleSource, encode_example, encode_pair
from wbvb.tasks import Example
from wbvb.teacher.generate import fingerprint_inputs
from wbvb.train.evaluate import _items

CORPUS = ["This movie is great.\nQuestion: Is this sentence positive or negative?\nAnswer: positive",
          "A dull film.\nQuestion: Is this sentence positive or negative?\nAnswer: negative",
          "positive negative positive negative Answer: yes no"] * 20


@pytest.fixture(scope="module")
def llama_tok():
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Sequence([])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([decoders.Metaspace(replacement="▁", prepend_scheme="first"),
                                     decoders.ByteFallback(), decoders.Fuse()])
    bytes_ = [f"<0x{i:02X}>" for i in range(256)]
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"] + bytes_,
                                                        show_progress=False))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="</s>")


EX = Example(id="e", task="sst2", split="train", prompt="This movie is great.\nQuestion: Is this sentence "
             "positive or negative?\nAnswer:", answer=" positive", label="positive",
             choices=[" negative", " positive"])


def test_the_two_encodings_differ_on_this_tokenizer(llama_tok):
    alone = llama_tok(" positive", add_special_tokens=False)["input_ids"]
    whole = llama_tok(EX.prompt + EX.answer, add_special_tokens=False)["input_ids"]
    prompt = llama_tok(EX.prompt, add_special_tokens=False)["input_ids"]
    assert llama_tok.convert_ids_to_tokens(alone) == ["▁", "positive"]
    assert whole[len(prompt):] != alone
    assert whole[:len(prompt)] != prompt  # the space went into the prompt's last piece


@pytest.mark.parametrize("add_bos", ["auto", "true", "false"])
def test_targets_are_the_joint_encodings_split(llama_tok, add_bos):
    whole = llama_tok(EX.prompt + EX.answer, add_special_tokens=False)["input_ids"]
    prompt = llama_tok(EX.prompt, add_special_tokens=False)["input_ids"]
    bos = [] if add_bos == "false" else [llama_tok.bos_token_id]  # this tokenizer's own template adds <s>
    row = encode_example(EX, llama_tok, 128, add_bos)
    assert row["input_ids"].tolist() == bos + prompt + whole[len(prompt):] + [llama_tok.eos_token_id]
    assert row["prompt_len"] == len(bos) + len(prompt)
    # evaluation scores the same pieces: gold + EOS first, then each choice as the joint split gives it
    (p, conts), = _items(llama_tok, [EX], 128, add_bos)
    assert p == bos + prompt
    assert conts[0] == whole[len(prompt):] + [llama_tok.eos_token_id]
    for choice, c in zip(EX.choices, conts[1:]):
        joint = llama_tok(EX.prompt + choice, add_special_tokens=False)["input_ids"]
        assert c == joint[len(prompt):]


def test_trailing_whitespace_of_the_prompt_moves_to_the_answer(llama_tok):
    ctx, cont = encode_pair(llama_tok, "Answer: ", "positive", "false")
    assert ctx == llama_tok("Answer:", add_special_tokens=False)["input_ids"]
    whole = llama_tok("Answer: positive", add_special_tokens=False)["input_ids"]
    assert cont == whole[len(ctx):]


def test_bos_option_is_applied_alike_in_training_store_and_eval(llama_tok):
    """One setting, one prompt: the training source, the teacher store's encoding and the eval items
    start the same way; ``auto`` follows the tokenizer's own template (this one adds <s>)."""
    for add_bos, first in (("true", True), ("false", False), ("auto", True)):
        train = ExampleSource([EX], llama_tok, 128, 1, add_bos).rows[0]
        (p, _), = _items(llama_tok, [EX], 128, add_bos)
        starts = [train["input_ids"][0] == llama_tok.bos_token_id, p[0] == llama_tok.bos_token_id]
        assert starts == [first, first]
        assert train["input_ids"][:train["prompt_len"]].tolist() == p


def test_add_bos_is_validated_and_in_the_store_fingerprint(llama_tok):
    a = config_from_dict({"models": {"add_bos": False}})
    assert a.models.add_bos == "false"  # a YAML boolean reads as its name
    with pytest.raises(ConfigError, match="models.add_bos 'sometimes'"):
        config_from_dict({"models": {"add_bos": "sometimes"}})
    b = config_from_dict({"models": {"add_bos": "true"}})
    fa, fb = (fingerprint_inputs(c, "/nonexistent", llama_tok) for c in (a, b))
    assert fa["add_bos"] == "false" and fb["add_bos"] == "true" and fa != fb
