"""Every distill type reads the same uniformly random example order per (seed, epoch).

The store is written the way the teacher writes one (rows in length order, so grouped by task),
across several shards and many small row groups, and read in windows of a few rows, so the order
has to be gathered from all over the store. Uniformity is checked against the definition: the
batch x task table of a uniform shuffle is a table of independent draws without replacement
(chi-square contingency test), and over seeds every permutation of a small set is equally likely.
"""
import itertools
import json

import numpy as np
import pytest
import torch
from scipy import stats

from wbvb.config import TeacherDataConfig
from wbvb.distill_types import DISTILL
from wbvb.feed.batches import ExampleSource
from wbvb.feed.shuffle import epoch_order
from wbvb.store import synthetic, writer
from wbvb.store.codec import encode_signals, layout_of
from wbvb.store.schema import FORMAT_VERSION, MANIFEST
from wbvb.tasks.example import Example
from wbvb.teacher.generate import store_columns

TASKS = {"sst2": 6, "mmlu": 10, "gsm8k": 16}  # task -> sequence length: short to long, as stored
PER_TASK = 64
BATCH = 16


def _examples() -> list[Example]:
    return [Example(id=f"{task}-train-{i}", task=task, split="train", prompt="p" * (n - 3), answer="a", label="a")
            for task, n in TASKS.items() for i in range(PER_TASK)]


def _store(path, shard_rows: int, reverse: bool = False):
    """The examples' rows in length order (grouped by task), ``shard_rows`` a shard, in small row groups."""
    td = TeacherDataConfig(top_k=4, hidden_stride=2, attention_stride=2)
    m = {"format_version": FORMAT_VERSION, "fingerprint": "t", "complete": True, "pad_token_id": 0, "vocab_size": 50,
         "strides": {"hidden": 2, "attention": 2}, "columns": store_columns(td, 50, 8, 2, [0], [0]),
         "shards": [], "num_rows": 0}
    gen = torch.Generator().manual_seed(0)
    rows = []
    for ex in _examples():
        n = TASKS[ex.task]
        r = synthetic.teacher_row(n, 50, 4, 8, 2, 2, 2, gen)
        rows.append({"example_id": ex.id, "task": ex.task, "split": "train", "input_ids": list(range(1, n + 1)),
                     "prompt_len": n - 2, "seq_len": n, "label": "a",
                     **encode_signals(n - 2, r["ids"], r["logp"], r["hidden"], r["attention"], layout_of(m))})
    if reverse:
        rows = rows[::-1]
    path.mkdir(parents=True, exist_ok=True)
    for s, start in enumerate(range(0, len(rows), shard_rows)):
        name = f"shard-{s:05d}.parquet"
        writer.write_shard(path / name, rows[start: start + shard_rows])
        m["shards"].append({"file": name, "rows": len(rows[start: start + shard_rows])})
    m["num_rows"] = len(rows)
    (path / MANIFEST).write_text(json.dumps(m))
    return path, m


class _CharTokenizer:
    bos_token_id, eos_token_id, pad_token_id = 1, 2, 0

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [3 + ord(c) % 40 for c in text]}


@pytest.fixture(scope="module")
def stores(tmp_path_factory, monkeypatch_module):
    monkeypatch_module.setattr(writer, "ROW_GROUP_BYTES", 1500)  # a few rows a group: many groups a shard
    root = tmp_path_factory.mktemp("order")
    return _store(root / "a", shard_rows=40), _store(root / "b", shard_rows=23, reverse=True)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.fixture(scope="module")
def ray_local(monkeypatch_module):
    import ray

    from wbvb.feed import stream

    monkeypatch_module.setattr(stream, "WINDOW_BYTES", 20 * 300)  # windows of about 20 rows: many per epoch
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _ids(batches) -> list[list[str]]:
    return [list(b["example_ids"]) for _, b in batches]


def test_the_store_is_many_small_row_groups_in_length_order(stores):
    import pyarrow.parquet as pq

    (path, m), _ = stores
    f = pq.ParquetFile(path / m["shards"][0]["file"])
    assert f.metadata.num_row_groups >= 4
    first = pq.read_table(path / m["shards"][0]["file"], columns=["task"]).column(0).to_pylist()
    assert set(first) == {"sst2"}  # grouped by task, as the teacher writes in length order


def test_batches_mix_tasks_as_a_uniform_shuffle(stores, ray_local):
    """Batch x task counts of a uniform shuffle: consecutive draws without replacement, whose
    contingency table has no batch-task association (scipy's chi-square test of independence)."""
    from wbvb.feed.stream import ShardStream

    (path, m), _ = stores
    stream = ShardStream(path, m, DISTILL["black_box"].signals, BATCH)
    for epoch, seed in [(0, 0), (1, 0), (0, 7)]:
        batches = _ids(stream.local_batches(epoch, epoch + 1, seed))
        table = np.array([[sum(i.startswith(t) for i in b) for t in TASKS] for b in batches])
        assert table.shape == (len(TASKS) * PER_TASK // BATCH, len(TASKS)) and (table.sum(0) == PER_TASK).all()
        p = stats.chi2_contingency(table, correction=False).pvalue
        assert p > 0.01, (epoch, seed, table.tolist())


def test_the_order_is_the_same_for_every_distill_type_and_storage_and_differs_by_seed_and_epoch(stores, ray_local):
    """sft, black_box, hidden_state (shards) and seq_kd (in-memory examples) at one seed read the very
    same batches; so does a store holding the rows in other shards and the opposite order."""
    from wbvb.feed.stream import ShardStream

    (a, ma), (b, mb) = stores
    memory = ExampleSource(_examples(), _CharTokenizer(), 32, BATCH)
    assert DISTILL["seq_kd"].reads_answers and not DISTILL["black_box"].reads_answers
    for seed in (0, 3):
        ref = _ids(memory.batches(0, 2, seed))
        assert [len(x) for x in ref] == [BATCH] * (2 * len(TASKS) * PER_TASK // BATCH)
        for kind in ("sft", "black_box", "hidden_state"):
            assert _ids(ShardStream(a, ma, DISTILL[kind].signals, BATCH).local_batches(0, 2, seed)) == ref, kind
        assert _ids(ShardStream(b, mb, DISTILL["black_box"].signals, BATCH).local_batches(0, 2, seed)) == ref
        resumed = _ids(ShardStream(a, ma, DISTILL["black_box"].signals, BATCH).local_batches(0, 2, seed, skip=5))
        assert resumed == ref[5:] == _ids(memory.batches(0, 2, seed, skip=5))
    per_epoch = len(ref) // 2
    assert ref[:per_epoch] != ref[per_epoch:]  # epochs differ
    assert _ids(memory.batches(0, 1, 0)) != _ids(memory.batches(0, 1, 3))  # seeds differ
    assert sorted(sum(ref[:per_epoch], [])) == sorted(ex.id for ex in _examples())  # each example once


def test_rows_come_out_whole_and_in_order(stores, ray_local):
    """The gathered rows are the rows stored under their ids (not just their ids)."""
    import pyarrow.parquet as pq

    from wbvb.feed.stream import ShardStream

    (a, ma), _ = stores
    batch = next(iter(ShardStream(a, ma, DISTILL["black_box"].signals, BATCH).local_batches(0, 1, 5)))[1]
    stored = {r["example_id"]: r for s in ma["shards"] for r in pq.read_table(a / s["file"]).to_pylist()}
    for i, ex in enumerate(batch["example_ids"]):
        n = stored[ex]["seq_len"]
        assert batch["input_ids"][i, :n].tolist() == stored[ex]["input_ids"]
        assert int(batch["answer_mask"][i].sum()) == n - stored[ex]["prompt_len"]


def test_epoch_order_is_a_uniform_permutation_of_the_sorted_ids():
    """Over 2400 seeds, each of the 24 orders of 4 ids comes up equally often (chi-square goodness of
    fit); the order depends on the ids, not on the sequence they are given in."""
    ids = ["d", "b", "a", "c"]
    counts = {p: 0 for p in itertools.permutations(sorted(ids))}
    for seed in range(2400):
        counts[tuple(ids[i] for i in epoch_order(ids, seed, 0))] += 1
    assert stats.chisquare(list(counts.values())).pvalue > 0.001
    assert [ids[i] for i in epoch_order(ids, 5, 1)] == [sorted(ids)[i] for i in epoch_order(sorted(ids), 5, 1)]
    with pytest.raises(ValueError, match="'b' occurs more than once"):
        epoch_order(["a", "b", "b"], 0, 0)


def test_row_groups_hold_at_most_the_byte_limit_or_one_row():
    assert writer.row_group_sizes([50, 50, 50, 10], limit=100) == [2, 2]
    assert writer.row_group_sizes([150, 10, 95], limit=100) == [1, 1, 1]
    assert writer.row_group_sizes([], limit=100) == []


def test_a_window_gathers_exactly_the_rows_asked_for_in_that_order(stores):
    """``_read_window`` straight (no Ray): rows from several shards and row groups, out of storage order."""
    import pyarrow.parquet as pq

    from wbvb.feed.shard_source import _read_window, index_shards
    from wbvb.store.schema import columns_for, shard_paths

    (path, m), _ = stores
    paths = [str(p) for p in shard_paths(path, m)]
    index = index_shards(paths, [s["rows"] for s in m["shards"]], columns_for(("topk",)))
    assert index.example_ids.tolist() == [r for p in paths for r in pq.read_table(p).column("example_id").to_pylist()]
    want = np.array([150, 3, 77, 4, 191, 40, 2])  # row numbers across the shards
    blocks = list(_read_window(dict(enumerate(paths)), dict(enumerate(index.group_starts)), index.shard[want],
                               index.row[want], columns_for(("topk",)), None, read_rows=3, block_rows=4))
    assert [b.num_rows for b in blocks] == [4, 3]
    assert sum((b.column("example_id").to_pylist() for b in blocks), []) == index.example_ids[want].tolist()


def test_a_shard_that_disagrees_with_its_manifest_is_named(stores):
    from wbvb.feed.shard_source import index_shards
    from wbvb.store.schema import TeacherDataError, shard_paths

    (path, m), _ = stores
    rows = [s["rows"] for s in m["shards"]]
    rows[1] += 1
    with pytest.raises(TeacherDataError, match=r"shard-00001.parquet: holds 40 rows, its manifest entry says 41"):
        index_shards([str(p) for p in shard_paths(path, m)], rows, ["example_id"])


def test_a_rewritten_shard_is_not_read_with_its_old_footer(tmp_path):
    from wbvb.feed.shard_source import open_shard

    path = tmp_path / "s.parquet"
    pa_rows = [{"example_id": f"x{i}", "task": "t", "split": "train", "input_ids": [1, 2], "prompt_len": 1,
                "seq_len": 2, "label": ""} for i in range(5)]
    writer.write_shard(path, pa_rows)
    assert open_shard(str(path)).metadata.num_rows == 5
    writer.write_shard(path, pa_rows[:3])
    assert open_shard(str(path)).read(columns=["example_id"]).column(0).to_pylist() == ["x0", "x1", "x2"]
