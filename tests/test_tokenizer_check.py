"""Tokenizer compatibility: a clear refusal naming both models and what remains possible."""
import pytest
from wbvb.config import ConfigError
from wbvb.models.load import check_tokenizers
from wbvb.models.presets import build_tokenizer


@pytest.fixture(scope="module")
def toks():
    return build_tokenizer(300), build_tokenizer(300), build_tokenizer(350)


def test_same_tokenizer_passes_and_sft_needs_none(toks):
    a, same, other = toks
    check_tokenizers(a, same, "teacher-a", "student-a", ["black_box", "combined"])
    check_tokenizers(a, other, "teacher-a", "student-b", ["sft"])  # the teacher is never read


def test_mismatch_names_both_models_and_the_remaining_types(toks):
    a, _, other = toks
    with pytest.raises(ConfigError) as err:
        check_tokenizers(a, other, "org/teacher-7b", "org2/student-1b", ["sft", "black_box", "attention"])
    msg = str(err.value)
    assert "org/teacher-7b" in msg and "org2/student-1b" in msg
    assert "black_box, attention cannot run" in msg and "sft, seq_kd" in msg
    assert "vocabularies differ" in msg
