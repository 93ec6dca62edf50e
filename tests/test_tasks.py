from wbvb.config import TaskConfig
from wbvb.tasks.extract import extract_strict
from wbvb.tasks import TASK_NAMES, load_examples


def test_splits_are_disjoint_and_deterministic():
    for name in TASK_NAMES:
        cfg = TaskConfig(name=name, n_train=300, n_eval=100, seed=3)
        train, ev = load_examples(cfg, "train"), load_examples(cfg, "eval")
        assert len(train) == 300 and len(ev) == 100
        assert not {e.prompt for e in train} & {e.prompt for e in ev}
        assert [e.prompt for e in load_examples(cfg, "eval")] == [e.prompt for e in ev]


def test_formats():
    s = load_examples(TaskConfig(name="sentiment", n_train=5), "train")[0]
    assert s.prompt.endswith("\nQuestion: Is this sentence positive or negative?\nAnswer:")
    assert s.answer in (" positive", " negative") and s.answer.strip() == s.label
    m = load_examples(TaskConfig(name="multiple_choice", n_train=5), "train")[0]
    assert m.prompt.endswith("\nAnswer:") and m.answer in (" A", " B", " C", " D") and m.choices
    a = load_examples(TaskConfig(name="arithmetic", n_train=5), "train")[0]
    assert a.prompt.startswith("Question: ") and a.choices is None
    assert extract_strict(a.answer) == a.label


def test_sentiment_negation_and_but_rules():
    exs = load_examples(TaskConfig(name="sentiment", n_train=400), "train")
    for e in exs:
        sentence = e.prompt.split(" .\n")[0]
        last = sentence.split(" but ")[-1]
        positive_word = any(w in last.split() for w in
                            ["great", "wonderful", "brilliant", "charming", "moving", "superb", "delightful",
                             "funny", "clever", "beautiful", "gripping", "fresh"])
        negated = " not " in f" {last} "
        if " and " not in last:
            assert (positive_word != negated) == (e.label == "positive"), e.prompt


def test_extract_strict():
    assert extract_strict("3 + 4 = 7.\n#### 7") == "7"
    assert extract_strict("#### 1,234") == "1234"
    assert extract_strict("#### $1,234") is None  # lm-eval's strict regex wants a digit or '-' after '#### '
    assert extract_strict("#### -5") == "-5"
    assert extract_strict("no answer") is None
