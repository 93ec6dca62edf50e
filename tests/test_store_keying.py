"""The teacher store is keyed on the train rows it holds; the teacher's eval scores on the eval rows.

Changing only ``n_eval`` reuses every shard and re-scores the teacher; changing ``n_train``
rebuilds the store. A task's train identity stays equal exactly when its train examples do."""
import dataclasses
import json
from pathlib import Path

import pytest

from wbvb.config import TaskConfig, config_from_dict
from wbvb.tasks import load_examples, task_identity, task_train_identity
from wbvb.teacher.prepare import prepare
from wbvb.teacher.scores import EVAL_DIR


def _sst2(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "train.tsv").write_text("sentence\tlabel\n" + "".join(f"train {i} \t{i % 2}\n" for i in range(12)))
    (d / "dev.tsv").write_text("sentence\tlabel\n" + "".join(f"dev {i} \t{i % 2}\n" for i in range(6)))
    return d


def _mmlu(d: Path) -> Path:
    for split, n in (("dev", 3), ("val", 4), ("test", 6)):
        (d / split).mkdir(parents=True, exist_ok=True)
        rows = [f"anatomy {split} q{i}?,w,x,y,z,{'ABCD'[i % 4]}" for i in range(n)]
        (d / split / f"anatomy_{split}.csv").write_text("\n".join(rows) + "\n")
    return d


def _train(t):
    return [(e.id, e.prompt, e.answer) for e in load_examples(t, "train")]


@pytest.mark.parametrize("family", ["sst2", "mmlu"])
def test_train_identity_is_equal_exactly_when_the_train_examples_are(tmp_path, family):
    folder = (_sst2 if family == "sst2" else _mmlu)(tmp_path / family)
    base = TaskConfig(name=family, source="local", path=str(folder), n_train=4, n_eval=2)
    variants = [dataclasses.replace(base, n_eval=3), dataclasses.replace(base, eval_shots=2),
                dataclasses.replace(base, train_shots=1), dataclasses.replace(base, n_train=5),
                dataclasses.replace(base, seed=1)]
    for v in variants:
        same_rows = _train(v) == _train(base)
        assert (task_train_identity(v) == task_train_identity(base)) == same_rows, v
        if v.n_eval != base.n_eval or v.eval_shots != base.eval_shots:
            assert task_identity(v) != task_identity(base)  # the eval rows (and scores) do change
    # SST-2 draws its exemplars from train, so eval shots are held out of it; MMLU's come from dev
    assert (_train(dataclasses.replace(base, eval_shots=2)) == _train(base)) == (family == "mmlu")


def test_quickstart_train_identity_ignores_n_eval_only():
    t = TaskConfig(name="sentiment", n_train=10, n_eval=4)
    assert task_train_identity(dataclasses.replace(t, n_eval=7)) == task_train_identity(t)
    assert task_train_identity(dataclasses.replace(t, n_train=11)) != task_train_identity(t)
    assert [e.prompt for e in load_examples(dataclasses.replace(t, n_eval=7), "train")] == \
        [e.prompt for e in load_examples(t, "train")]


def test_changing_n_eval_reuses_the_shards_and_rescores_the_teacher(tiny_dict, capsys):
    first = prepare(config_from_dict(tiny_dict))
    shards = {p.name: p.stat().st_mtime_ns for p in Path(first.data_dir).glob("*.parquet")}
    assert first.scores["n"] == {"sentiment": 6, "multiple_choice": 6, "arithmetic": 6}
    capsys.readouterr()

    tiny_dict["tasks"][0]["n_eval"] = 9
    second = prepare(config_from_dict(tiny_dict))
    out = capsys.readouterr().out
    assert second.data_dir == first.data_dir and "teacher data: reusing" in out
    assert {p.name: p.stat().st_mtime_ns for p in Path(second.data_dir).glob("*.parquet")} == shards
    assert second.scores["n"] == {"sentiment": 9, "multiple_choice": 6, "arithmetic": 6}  # scored on 9 rows
    assert "teacher eval: reusing" not in out
    files = sorted((Path(first.data_dir) / EVAL_DIR).glob("*.json"))
    assert len(files) == 2 and {json.loads(f.read_text())["n"]["sentiment"] for f in files} == {6, 9}

    capsys.readouterr()
    again = prepare(config_from_dict(tiny_dict))
    assert "teacher eval: reusing" in capsys.readouterr().out and again.scores == second.scores

    tiny_dict["tasks"][0]["n_train"] = 25
    third = prepare(config_from_dict(tiny_dict))
    assert third.data_dir != first.data_dir and third.manifest["num_rows"] == first.manifest["num_rows"] + 1
