"""ShardStream's epoch order: every row once, reproducible per (seed, epoch), shuffled across shards."""
import json

import numpy as np
import pytest
import torch

from wbvb.config import TeacherDataConfig
from wbvb.store import synthetic
from wbvb.store.codec import encode_signals, layout_of
from wbvb.teacher.generate import store_columns
from wbvb.store.schema import FORMAT_VERSION, MANIFEST, TeacherDataError
from wbvb.store.writer import write_shard


def _store(tmp_path, **teacher_data):
    td = TeacherDataConfig(top_k=4, hidden_stride=2, attention_stride=2, **teacher_data)
    m = {"format_version": FORMAT_VERSION, "fingerprint": "t", "complete": True, "pad_token_id": 0, "vocab_size": 50,
         "strides": {"hidden": 2, "attention": 2}, "columns": store_columns(td, 50, 8, 2, [0], [0]),
         "shards": [], "num_rows": 0}
    gen = torch.Generator().manual_seed(0)
    for s in range(6):
        rows = []
        for i in range(5):
            r = synthetic.teacher_row(10, 50, 4, 8, 2, 2, 2, gen)
            rows.append({"example_id": f"s{s}-{i}", "task": "t", "split": "train", "input_ids": list(range(1, 11)),
                         "prompt_len": 4, "seq_len": 10, "label": "",
                         **encode_signals(4, r["ids"], r["logp"], r["hidden"], r["attention"], layout_of(m))})
        write_shard(tmp_path / f"shard-{s:05d}.parquet", rows)
        m["shards"].append({"file": f"shard-{s:05d}.parquet", "rows": 5})
    m["num_rows"] = 30
    (tmp_path / MANIFEST).write_text(json.dumps(m))
    return tmp_path, m


@pytest.fixture
def small_store(tmp_path):
    return _store(tmp_path)


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_epochs_read_every_row_once_in_a_seeded_order(small_store, ray_local):
    from wbvb.feed.stream import ShardStream

    stream = ShardStream(*small_store, ["topk"], batch_size=4)
    epoch0 = [b["example_ids"] for b in stream.epoch(0, seed=0)]
    assert [len(b) for b in epoch0] == [4] * 7 + [2]
    ids = [i for b in epoch0 for i in b]
    assert sorted(ids) == sorted(f"s{s}-{i}" for s in range(6) for i in range(5))
    assert epoch0 == [b["example_ids"] for b in stream.epoch(0, seed=0)]  # reproducible
    assert epoch0 != [b["example_ids"] for b in stream.epoch(1, seed=0)]  # reshuffled per epoch
    shards_seen = list(dict.fromkeys(i.split("-")[0] for i in ids))
    assert shards_seen != sorted(shards_seen)  # shards are not read in storage order


def test_the_task_makes_the_batches_this_process_would(tmp_path, ray_local):
    """The batches a trial takes from the batch-making task are the in-process pipeline's, bit for
    bit (bfloat16 included), in the same order, with a mid-epoch resume's skip."""
    from wbvb.feed.stream import ShardStream

    stream = ShardStream(*_store(tmp_path, dtype="bfloat16"), ["topk", "hidden", "attention"], batch_size=4)
    here = list(stream.local_batches(0, 2, seed=3, skip=2))
    assert [e for e, _ in here] == [0] * 6 + [1] * 8
    assert here[0][1]["hidden"].dtype == torch.bfloat16
    asked_late = list(stream.batches(0, 2, seed=3, skip=2))
    stream.start(0, 2, 3, 2)  # a fresh trial: the batches are made before the trial asks for them
    asked_at_start = list(stream.batches(0, 2, seed=3, skip=2))
    stream.start(0, 1, 3, 0)  # started on epochs the trial then does not ask for: the right ones are made
    asked_otherwise = list(stream.batches(0, 2, seed=3, skip=2))
    for made in (asked_late, asked_at_start, asked_otherwise):
        assert [e for e, _ in made] == [e for e, _ in here]
        for (_, a), (_, b) in zip(made, here):
            assert a.keys() == b.keys()
            for key in a:
                assert a[key] == b[key] if key == "example_ids" else torch.equal(a[key], b[key]), key


def test_the_task_is_cancelled_when_the_stream_closes_early_and_ends_by_itself_otherwise(small_store, ray_local):
    from ray.exceptions import TaskCancelledError

    from wbvb.feed.stream import ShardStream

    stream = ShardStream(*small_store, ["topk"], batch_size=4)
    stream.start(0, 3, 0)  # as a fresh trial does before loading its models
    refs = stream._made[1]
    batches = stream.batches(0, 3, seed=0)
    next(batches)  # 24 batches to make, at most 2 groups ahead: the task is still running
    batches.close()  # a trial that stops early
    with pytest.raises(TaskCancelledError):
        ray_local.get(refs.completed(), timeout=60)
    stream.start(0, 1, 0)
    refs = stream._made[1]
    assert len(list(stream.batches(0, 1, seed=0))) == 8
    ray_local.get(refs.completed(), timeout=60)  # read to its end: the task ended by itself, not cancelled


def test_the_task_dies_with_its_trial(ray_local):
    """A trial's process that dies (Tune stops it, it crashes) takes its batch-making task along."""
    import os
    import time

    from wbvb.feed.batch_maker import remote_batches, request

    class Stream:  # endless batches that say which process made them
        def local_arrays(self, *args):
            while True:
                yield 0, {"pid": np.array([os.getpid()])}

    @ray_local.remote(num_cpus=0)
    class Trial:
        def first_batch_pid(self):
            self.batches = remote_batches(request(Stream(), 0, 1, 0))
            return int(next(self.batches)[1]["pid"][0])

    trial = Trial.remote()
    pid = ray_local.get(trial.first_batch_pid.remote(), timeout=60)
    ray_local.kill(trial)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    pytest.fail(f"the batch-making worker {pid} outlived its trial by 60 s")


def test_an_error_while_making_batches_reaches_the_trial_as_itself(small_store, ray_local):
    from wbvb.feed.stream import ShardStream

    data_dir, m = small_store
    m = {**m, "num_rows": 31}  # the manifest promises a row the shards do not hold
    with pytest.raises(TeacherDataError, match="the manifest says 31 rows, its shards hold 30"):
        list(ShardStream(data_dir, m, ["topk"], batch_size=4).batches(0, 1, seed=0))


def test_decoded_arrays_become_tensors_sharing_their_memory():
    from wbvb.store.codec import BFLOAT16, as_tensors

    hidden = torch.tensor([[1.5, -2.25]], dtype=torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    hidden.flags.writeable = False  # as out of Ray's object store
    arrays = {"hidden": hidden, "input_ids": np.array([[3, 4]]), "example_ids": ["a"], BFLOAT16: ["hidden"]}
    batch = as_tensors(arrays)
    assert set(batch) == {"hidden", "input_ids", "example_ids"} and batch["example_ids"] == ["a"]
    assert batch["hidden"].dtype == torch.bfloat16 and batch["hidden"].tolist() == [[1.5, -2.25]]
    assert batch["hidden"].data_ptr() == hidden.ctypes.data  # no copy


def test_the_batch_maker_groups_small_batches_and_sends_large_ones_alone():
    from wbvb.feed.batch_maker import make_groups

    class Stream:  # batches of 1, 1, 1, 1, 1, 1, 1, 5, 1, 1 KiB (int8 arrays), 5 an epoch
        def local_arrays(self, *args):
            for i, kib in enumerate([1] * 7 + [5, 1, 1]):
                yield i // 5, {"x": np.zeros(kib << 10, np.int8), "example_ids": [i]}

    groups = list(make_groups(Stream(), 0, 2, 0, 0, group_bytes=3 << 10))
    # 1 batch first, then up to twice the bytes of the group before, up to 3 KiB; 5 KiB goes alone
    assert [[b["example_ids"][0] for _, b in g] for g in groups] == [[0], [1, 2], [3, 4, 5], [6], [7], [8, 9]]
    assert [e for g in groups for e, _ in g] == [0] * 5 + [1] * 5


def test_the_batch_making_task_never_imports_torch():
    """A pooled worker new to it is ready in about a second instead of two: torch's import is most
    of that."""
    import subprocess
    import sys

    code = ("import sys, wbvb.feed.batch_maker, wbvb.feed.stream, wbvb.feed.shard_source, wbvb.store.codec; "
            "print('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
