"""Scoring as the field scores it: GSM8K answer extraction and log-likelihood choice scoring."""
import re

import pytest

from wbvb.train.evaluate import choice_hits, cut_at_stop, generation_hits, stop_strings
from wbvb.tasks.extract import extract_flexible, extract_strict, gold_number
from wbvb.tasks import Example

# lm-evaluation-harness's gsm8k task, written out: its two filters and its exact-match normalisation
LM_EVAL_STRICT, LM_EVAL_FLEXIBLE = r"#### (\-?[0-9\.\,]+)", r"(-?[$0-9.,]{2,})|(-?[0-9]+)"
LM_EVAL_IGNORE = [",", "\\$", "(?s).*#### ", "\\.$"]


def lm_eval_extract(text, pattern, group_select):
    """RegexFilter(pattern, group_select) then take_first, then regexes_to_ignore and ignore_case."""
    match = re.findall(pattern, text)
    if not match:
        return None  # "[invalid]"
    match = match[group_select]
    if isinstance(match, tuple):
        match = [m for m in match if m]
        if not match:
            return None
        match = match[0]
    match = match.strip()
    for r in LM_EVAL_IGNORE:
        match = re.sub(r, "", match)
    return match.lower()


TRICKY = [  # text, strict, flexible (worked by hand from the two regexes)
    ("3 + 4 = 7.\n#### 7", "7", "7"),
    ("#### $1,234", None, "1234"),  # strict wants a digit right after '#### '
    ("#### -5", "-5", "-5"),
    ("She owes $-3 now.\n#### -3", "-3", "-3"),
    ("Each costs 2.50 dollars, so 5 * 2.5 = 12.5\n#### 12.5", "12.5", "12.5"),
    ("Total: 1,000,000 grains.", None, "1000000"),
    ("no answer at all", None, None),
    ("The answer is 18.", None, "18"),
    ("It is 18.00", None, "18.00"),  # the harness compares strings: 18.00 is not 18
    ("#### 42\nQuestion: what next? 7", "42", "7"),
    ("He pays $ 30, then 4 more.\n####  $2,000.", None, "2000"),
    ("####18", None, "18"),
    ("#### $18", None, "18"),
    ("####  18", None, "18"),
    ("#### 1,234.", "1234", "1234"),
    ("#### 5 then #### 6", "5", "6"),  # strict takes the first match, flexible the last
    ("So 7, and then ... well", None, ".."),  # flexible needs no digit: '...' less one trailing period
    ("costs -$5", None, "-5"),
]


@pytest.mark.parametrize("text,strict,flexible", TRICKY)
def test_gsm8k_extraction_table(text, strict, flexible):
    assert lm_eval_extract(text, LM_EVAL_STRICT, 0) == strict  # the hand-worked table is lm-eval's
    assert lm_eval_extract(text, LM_EVAL_FLEXIBLE, -1) == flexible
    assert extract_strict(text) == strict
    assert extract_flexible(text) == flexible


def test_gold_number_is_the_reference_normalised():
    assert gold_number("3 + 4 = 7\n#### 1,007") == "1007"
    assert gold_number("a #### b\n#### 12") == "12"  # '(?s).*#### ' is greedy: the last '#### '


def test_stop_strings_are_lm_evals_gsm8k_until():
    class Tok:
        eos_token_id = 0

        def decode(self, ids):
            return "<|endoftext|>"

    assert stop_strings(Tok()) == ("Question:", "</s>", "<|im_end|>", "<|endoftext|>")
    assert cut_at_stop(" 7</s> more", stop_strings(Tok())) == " 7"
    assert cut_at_stop(" 7<|im_end|>", stop_strings(Tok())) == " 7"


def test_generation_hits_cut_at_next_question():
    ex = Example(id="g", task="gsm8k", split="eval", prompt="Question: q\nAnswer:", answer=" #### 7", label="7")
    text = cut_at_stop(" 3 + 4 = 7\n#### 7\n\nQuestion: Tom has 9 apples\nAnswer: #### 9")
    assert text == " 3 + 4 = 7\n#### 7\n\n"
    assert generation_hits([ex, ex], [text, "so 7 it is"]) == ([True, False], [True, True])


def test_choice_hits_normalise_by_characters_without_the_joining_space():
    ex = Example(id="x", task="t", split="eval", prompt="p", answer=" yes", label="yes",
                 choices=[" no", " yes"])
    # plain: -2.0 > -2.4 picks ' no'; lm-eval's acc_norm divides by len('no') = 2 and len('yes') = 3:
    # -2/2 = -1.0 < -2.4/3 = -0.8 picks ' yes'
    assert choice_hits([ex], [[-2.0, -2.4]]) == ([False], [True])
    # -3.0/2 = -1.5 < -4.2/3 = -1.4 picks ' yes'; counting the space (3 and 4 characters) would pick
    # ' no': -3.0/3 = -1.0 > -4.2/4 = -1.05
    assert choice_hits([ex], [[-3.0, -4.2]]) == ([False], [True])
