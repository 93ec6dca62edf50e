"""Scoring as the field scores it: GSM8K answer extraction and log-likelihood choice scoring."""
import pytest
import torch

from wbvb.train.evaluate import choice_hits, choice_loglikelihoods, cut_at_stop, generation_hits
from wbvb.tasks.extract import extract_flexible, extract_strict
from wbvb.tasks import Example

TRICKY = [  # text, strict, flexible
    ("3 + 4 = 7.\n#### 7", "7", "7"),
    ("#### $1,234", "1234", "1234"),
    ("#### -5", "-5", "-5"),
    ("She owes $-3 now.\n#### -3", "-3", "-3"),
    ("Each costs 2.50 dollars, so 5 * 2.5 = 12.5\n#### 12.5", "12.5", "12.5"),
    ("Total: 1,000,000 grains.", None, "1000000"),
    ("no answer at all", None, None),
    ("The answer is 18.", None, "18"),
    ("It is 18.00", None, "18.00"),  # the harness compares strings: 18.00 is not 18
    ("#### 42\nQuestion: what next? 7", "42", "7"),
    ("He pays $ 30, then 4 more.\n####  $2,000.", "2000", "2000"),
]


@pytest.mark.parametrize("text,strict,flexible", TRICKY)
def test_gsm8k_extraction_table(text, strict, flexible):
    assert extract_strict(text) == strict
    assert extract_flexible(text) == flexible


def test_generation_hits_cut_at_next_question():
    ex = Example(id="g", task="gsm8k", split="eval", prompt="Question: q\nAnswer:", answer=" #### 7", label="7")
    text = cut_at_stop(" 3 + 4 = 7\n#### 7\n\nQuestion: Tom has 9 apples\nAnswer: #### 9")
    assert text == " 3 + 4 = 7\n#### 7\n\n"
    assert generation_hits([ex, ex], [text, "so 7 it is"]) == ([True, False], [True, True])


class CharTokenizer:
    """One token per character of 'abcdefgh '; 0 pad, 1 bos, 2 eos."""

    alphabet = "abcdefgh "
    pad_token_id, bos_token_id, eos_token_id = 0, 1, 2

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [3 + self.alphabet.index(c) for c in text]}


class TableModel(torch.nn.Module):
    """Next-token logits that depend only on the current token: ``table[token]``."""

    def __init__(self, table):
        super().__init__()
        self.table = table

    def forward(self, input_ids, attention_mask=None):
        return type("Out", (), {"logits": self.table[input_ids]})()


def test_choice_scoring_on_a_model_whose_logits_the_test_sets():
    tok = CharTokenizer()
    V = 3 + len(tok.alphabet)
    a, b, c, space = (3 + tok.alphabet.index(x) for x in "abc ")
    table = torch.zeros(V, V)  # uniform over V tokens unless set: log p = -log V
    # After ' ' the model says 'a' with p=0.5 and 'b' with p=0.25 (the rest shares 0.25).
    row = torch.full((V,), 0.25 / (V - 2))
    row[a], row[b] = 0.5, 0.25
    table[space] = row.log()
    # After 'b' it is certain of 'c': choice ' bc' costs log(0.25) + log(1) in total.
    table[b] = torch.full((V,), -1e4)
    table[b, c] = 0.0
    ex = Example(id="x", task="t", split="eval", prompt="h", answer=" a", label="bc",
                 choices=[" a", " bc"])
    # prompt 'h' then ' ': uniform (same for both choices), so the scores differ by the table's rows.
    (scores,) = choice_loglikelihoods(TableModel(table), tok, [ex], batch_size=2, device="cpu")
    uniform = -torch.log(torch.tensor(float(V))).item()
    assert scores[0] == pytest.approx(uniform + torch.log(torch.tensor(0.5)).item(), abs=1e-5)
    assert scores[1] == pytest.approx(uniform + torch.log(torch.tensor(0.25)).item(), abs=1e-4)
    plain, norm = choice_hits([ex], [scores])
    assert plain == [False]  # ' a' has the higher summed log-likelihood
    # per character (V=12): ' a' (-2.485-0.693)/2 = -1.589 < ' bc' (-2.485-1.386)/3 = -1.290
    assert norm == [True]


def test_choice_hits_normalise_by_characters():
    ex = Example(id="x", task="t", split="eval", prompt="p", answer=" yes", label="yes",
                 choices=[" no", " yes"])
    # plain: -2.0 > -2.4 picks ' no'; per character: -2/3 = -0.667 < -2.4/4 = -0.6 picks ' yes'
    assert choice_hits([ex], [[-2.0, -2.4]]) == ([False], [True])
