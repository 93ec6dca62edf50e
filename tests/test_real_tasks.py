"""Real task loaders: original formats, field mappings, hub (monkeypatched), errors, real files."""
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from wbvb.config import ConfigError, TaskConfig, config_from_dict
from wbvb.tasks import load_examples, task_identity
from wbvb.tasks.files import TaskDataError
from wbvb.tasks.real import DEFAULT_DATA_ROOT, REPO_ROOT

Q = "\nQuestion: Is this sentence positive or negative?\nAnswer:"


def _sst2(d: Path, train_rows, dev_rows):
    d.mkdir(parents=True, exist_ok=True)
    (d / "train.tsv").write_text("sentence\tlabel\n" + "".join(f"{s} \t{l}\n" for s, l in train_rows))
    (d / "dev.tsv").write_text("sentence\tlabel\n" + "".join(f"{s} \t{l}\n" for s, l in dev_rows))
    return d


def _mmlu(d: Path):
    for split, n in (("dev", 3), ("val", 2), ("test", 4)):
        (d / split).mkdir(parents=True, exist_ok=True)
        for subject in ("anatomy", "world_religions"):
            rows = [f'"{subject} {split} q{i}, with a comma?",w,x,"y\ny",z,{"ABCD"[i % 4]}' for i in range(n)]
            if split == "test":
                rows.append(f'"{subject} val q1, with a comma?",w,x,"y\ny",z,B')  # duplicate of a val row
            (d / split / f"{subject}_{split}.csv").write_text("\n".join(rows) + "\n")
    return d


def _gsm8k(d: Path, n_train=5, n_test=2):
    d.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        with open(d / f"{split}.jsonl", "w") as fh:
            for i in range(n):
                fh.write(json.dumps({"question": f"{split} {i}: 2 + {i}?", "answer": f"2 + {i} = {2 + i}\n#### {2 + i:,}"}) + "\n")
    return d


def test_sst2_format_split_and_duplicates(tmp_path):
    d = _sst2(tmp_path / "sst2", [("good", 1), ("bad", 0), ("fine", 1), ("same", 0)], [("same", 0), ("meh", 0)])
    t = TaskConfig(name="sst2", source="local", path=str(d), n_train=0, n_eval=0)
    train, ev = load_examples(t, "train"), load_examples(t, "eval")
    assert [e.prompt for e in ev] == ["same " + Q, "meh " + Q]
    assert ev[0].answer == " negative" and ev[0].label == "negative" and ev[0].choices == [" negative", " positive"]
    assert [e.prompt.split(" \n")[0] for e in train] == ["good", "bad", "fine"]  # 'same' is held out
    assert {e.split for e in train} == {"train"} and {e.split for e in ev} == {"eval"}
    assert train[1].meta["origin"] == f"{d / 'train.tsv'}:3"


def test_seeded_sampling(tmp_path):
    d = _sst2(tmp_path / "sst2", [(f"s{i}", i % 2) for i in range(50)], [("x", 0)])
    pick = lambda seed: [e.id for e in load_examples(
        TaskConfig(name="sst2", source="local", path=str(d), n_train=10, seed=seed), "train")]
    assert pick(1) == pick(1) and pick(1) != pick(2) and len(set(pick(1))) == 10
    with pytest.raises(TaskDataError, match="n_train=60 but the 'train' split has only 50"):
        load_examples(TaskConfig(name="sst2", source="local", path=str(d), n_train=60), "train")


def test_malformed_rows_name_file_and_line(tmp_path):
    d = _sst2(tmp_path / "sst2", [("good", 1), ("bad", 7)], [("x", 0)])
    with pytest.raises(TaskDataError, match=rf"{d / 'train.tsv'}:3: label must be 0 .* got '7'"):
        load_examples(TaskConfig(name="sst2", source="local", path=str(d)), "train")
    (d / "train.tsv").write_text("sentence\tlabel\nok \t1\nno tab here\n")
    with pytest.raises(TaskDataError, match=r"train.tsv:3: expected 2 tab-separated fields"):
        load_examples(TaskConfig(name="sst2", source="local", path=str(d)), "train")
    g = _gsm8k(tmp_path / "gsm8k")
    with open(g / "train.jsonl", "a") as fh:
        fh.write('{"question": "q", "answer": "no final line"}\n{broken\n')
    with pytest.raises(TaskDataError, match=r"train.jsonl:7: not valid JSON"):
        load_examples(TaskConfig(name="gsm8k", source="local", path=str(g)), "train")
    (g / "train.jsonl").write_text((g / "train.jsonl").read_text().replace("{broken\n", ""))
    with pytest.raises(TaskDataError, match=r"train.jsonl:6: answer does not end in '#### <number>'"):
        load_examples(TaskConfig(name="gsm8k", source="local", path=str(g)), "train")
    m = _mmlu(tmp_path / "mmlu")
    (m / "val" / "anatomy_val.csv").write_text('q1,a,b,c,d,A\n"q2\nspans lines",a,b,c,d,A\nq3,a,b,c,A\n')
    with pytest.raises(TaskDataError, match=r"anatomy_val.csv:4: expected 6 comma-separated fields"):
        load_examples(TaskConfig(name="mmlu", source="local", path=str(m), n_eval=0), "eval")
    with pytest.raises(TaskDataError, match=r"no such file"):
        load_examples(TaskConfig(name="gsm8k", source="local", path=str(tmp_path / "nowhere")), "train")


def test_mmlu_format_subjects_duplicates_and_five_shot(tmp_path):
    m = _mmlu(tmp_path / "mmlu")
    t = TaskConfig(name="mmlu", source="local", path=str(m), n_train=0, n_eval=0, subjects=["anatomy"])
    train, ev = load_examples(t, "train"), load_examples(t, "eval")
    assert len(ev) == 2 and len(train) == 4  # test: 4 + 1 duplicate of a val row, dropped
    assert ev[1].prompt == ("The following are multiple choice questions (with answers) about anatomy.\n\n"
                            "anatomy val q1, with a comma?\nA. w\nB. x\nC. y\ny\nD. z\nAnswer:")
    assert ev[1].answer == " B" and ev[1].label == "B" and ev[1].choices == [" A", " B", " C", " D"]
    wr = TaskConfig(name="mmlu", source="local", path=str(m), n_eval=0, eval_shots=2, subjects=["world_religions"])
    p = load_examples(wr, "eval")[0].prompt
    assert p.startswith("The following are multiple choice questions (with answers) about world religions.\n\n"
                        "world_religions dev q0, with a comma?\nA. w\nB. x\nC. y\ny\nD. z\nAnswer: A\n\n"
                        "world_religions dev q1")
    assert p.count("Answer:") == 3 and p.endswith("world_religions val q0, with a comma?\nA. w\nB. x\nC. y\ny\nD. z\nAnswer:")


def test_gsm8k_format_label_and_shots_from_train(tmp_path):
    g = _gsm8k(tmp_path / "gsm8k", n_train=5, n_test=2)
    t = TaskConfig(name="gsm8k", source="local", path=str(g), n_train=0, n_eval=0, eval_shots=2)
    train, ev = load_examples(t, "train"), load_examples(t, "eval")
    assert ev[0].prompt == ("Question: train 0: 2 + 0?\nAnswer: 2 + 0 = 2\n#### 2\n\n"
                            "Question: train 1: 2 + 1?\nAnswer: 2 + 1 = 3\n#### 3\n\n"
                            "Question: test 0: 2 + 0?\nAnswer:")
    assert ev[0].answer == " 2 + 0 = 2\n#### 2" and ev[0].label == "2" and ev[0].choices is None
    assert [e.prompt for e in train] == [f"Question: train {i}: 2 + {i}?\nAnswer:" for i in (2, 3, 4)]  # exemplars held out


def test_generic_jsonl_and_parquet_with_field_mapping(tmp_path):
    (tmp_path / "j").mkdir()
    rows = [{"text": f"t{i}", "y": i % 2} for i in range(4)]
    for split in ("train", "test"):
        (tmp_path / "j" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:3 if split == "train" else 1]))
        pq.write_table(pa.Table.from_pylist(rows[1:]), tmp_path / "j" / f"{split}.parquet")
    t = TaskConfig(name="reviews", family="sst2", source="jsonl", path=str(tmp_path / "j"), n_train=0, n_eval=0,
                   eval_split="test", fields={"sentence": "text", "label": "y"})
    assert [e.prompt for e in load_examples(t, "train")] == ["t1" + Q, "t2" + Q]
    assert load_examples(t, "eval")[0].task == "reviews"
    t.source = "parquet"
    t.eval_split = "train"
    t.train_split = "test"
    with pytest.raises(TaskDataError, match="n_train=5"):
        load_examples(TaskConfig(**{**t.__dict__, "n_train": 5}), "train")
    del t.fields["label"]
    with pytest.raises(TaskDataError, match=r"train.parquet:row 1: missing or empty field 'label'"):
        load_examples(t, "eval")


def test_hub_source_with_a_monkeypatched_loader(monkeypatch):
    import wbvb.tasks.hub as hub

    calls = []

    def fake(name, config, split):
        calls.append((name, config, split))
        return [{"question": f"{split} q", "subject": "anatomy", "choices": ["w", "x", "y", "z"], "answer": 2}]

    monkeypatch.setattr(hub, "_load_dataset", fake)
    ev = load_examples(TaskConfig(name="mmlu", source="hub", n_eval=0), "eval")
    assert ev[0].label == "C" and "validation q\nA. w" in ev[0].prompt
    assert calls == [("cais/mmlu", "all", "validation")]
    load_examples(TaskConfig(name="mmlu", source="hub", hub_name="me/mmlu-copy", n_eval=0), "eval")
    assert calls[-1] == ("me/mmlu-copy", "", "validation")

    def offline(name, config, split):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(hub, "_load_dataset", offline)
    with pytest.raises(TaskDataError, match=r"hub glue/sst2\[validation\]: cannot load .*offline\? use source: local"):
        load_examples(TaskConfig(name="sst2", source="hub"), "eval")


def test_hub_without_datasets_library_says_how_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_datasets(name, *args, **kwargs):
        if name == "datasets":
            raise ImportError("No module named 'datasets'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    with pytest.raises(TaskDataError, match=r"pip install 'wbvb\[hub\]'"):
        load_examples(TaskConfig(name="gsm8k", source="hub"), "eval")


def test_identity_follows_file_content(tmp_path):
    d = _sst2(tmp_path / "sst2", [("good", 1)], [("bad", 0)])
    t = TaskConfig(name="sst2", source="local", path=str(d))
    before = task_identity(t)
    (d / "dev.tsv").write_text("sentence\tlabel\nworse \t0\n")
    assert task_identity(t) != before
    assert task_identity(TaskConfig(name="sentiment")) == {"name": "sentiment", "source": "quickstart",
                                                           "n_train": 1000, "n_eval": 200, "seed": 0,
                                                           "generator_version": task_identity(TaskConfig())["generator_version"]}


@pytest.mark.parametrize("task,message", [
    ({"name": "sst2", "source": "web"}, "tasks\\[0\\].source: unknown source 'web'"),
    ({"name": "imdb", "source": "local"}, "tasks\\[0\\].family: 'imdb' is not a real task family"),
    ({"name": "mmlu", "source": "local", "eval_split": "dev", "train_split": "dev"}, "evaluation must be held out"),
    ({"name": "gsm8k", "source": "local", "eval_split": "validation"}, "'validation' is not a gsm8k split"),
    ({"name": "sst2", "source": "local", "subjects": ["anatomy"]}, "only MMLU has subjects"),
    ({"name": "sst2", "source": "local", "fields": {"sentence": "text"}}, "a field mapping is for source jsonl"),
    ({"name": "x", "family": "sst2", "source": "jsonl", "path": "d", "fields": {"text": "t"}}, "'text' is not a sst2 field"),
    ({"name": "sentiment", "path": "/data"}, "tasks\\[0\\].path: only real tasks"),
    ({"name": "sst2", "source": "local", "n_eval": -1}, "must be >= 0"),
    ({"name": "sst2", "source": "local", "shots": 5}, "unknown config key 'tasks\\[0\\].shots'"),
])
def test_task_config_errors(task, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"tasks": [task]})


REAL = (REPO_ROOT / DEFAULT_DATA_ROOT).resolve()


@pytest.mark.skipif(not REAL.is_dir(), reason=f"real task files not found at {REAL} (../shared/data beside the repo)")
def test_real_files_counts_and_no_example_in_both_splits():
    expected = {"sst2": (67349, 872), "mmlu": (14042 - 27, 1531), "gsm8k": (7473, 1319)}
    for name, (n_train, n_eval) in expected.items():
        t = TaskConfig(name=name, source="local", n_train=0, n_eval=0)
        train, ev = load_examples(t, "train"), load_examples(t, "eval")
        assert (len(train), len(ev)) == (n_train, n_eval), name
        assert not {e.prompt for e in train} & {e.prompt for e in ev}, name
    sample = load_examples(TaskConfig(name="mmlu", source="local", n_train=1000, seed=0), "train")
    assert len(sample) == 1000 and len({e.id for e in sample}) == 1000


def test_preset_tokenizer_trained_on_the_configured_tasks(tmp_path):
    from wbvb.config import PresetConfig
    from wbvb.models.load import load_tokenizer
    from wbvb.models.presets import ensure_preset

    d = _sst2(tmp_path / "sst2", [(f"the zyxwvut film number {i}", i % 2) for i in range(40)], [("ok", 1)])
    tasks = [TaskConfig(name="sst2", source="local", path=str(d), n_train=0)]
    preset = PresetConfig(vocab_size=320, teacher_layers=1, teacher_hidden=16, teacher_heads=2,
                          student_layers=1, student_hidden=16, student_heads=2, corpus="tasks")
    tok = load_tokenizer(str(ensure_preset(preset, tmp_path / "cache", tasks)["tokenizer"]))
    assert len(tok(" zyxwvut", add_special_tokens=False)["input_ids"]) == 1  # a word only this corpus has
    with pytest.raises(ValueError, match="no tasks were given"):
        ensure_preset(preset, tmp_path / "cache")
