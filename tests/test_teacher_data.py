"""Teacher store: generation, reuse by fingerprint, decode, and loud verification errors."""
import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from wbvb.teacher.prepare import prepare
from wbvb.store.schema import TeacherDataError, decode_row, read_manifest
from wbvb.store.verify import verify


@pytest.fixture
def store(tiny_cfg):
    return prepare(tiny_cfg)


def test_generate_writes_shards_manifest_and_reuses(tiny_cfg, store, capsys):
    m = store.manifest
    assert m["complete"] and m["num_rows"] == 72 and len(m["shards"]) == 3
    assert set(store.scores["teacher_accuracy"]) == {"sentiment", "multiple_choice", "arithmetic"}
    row = pq.read_table(store.data_dir / m["shards"][0]["file"]).slice(0, 1).to_pylist()[0]
    dec = decode_row(row, m)
    n = row["seq_len"]
    assert dec["topk_ids"].shape == (n, 4) and dec["topk_logprobs"].shape == (n, 4)
    assert dec["hidden"].shape == (1, (n + 1) // 2, 32)  # (stored layers, strided positions, dim)
    assert dec["attention"].shape == (1, 4, (n + 1) // 2, (n + 1) // 2)
    assert m["columns"]["hidden"]["layers"] == [1] and m["columns"]["attention"]["layers"] == [1]
    # attention rows of a causal model sum to 1 over the (unstrided) keys: strided rows sum to <= 1
    assert float(dec["attention"].float().sum(-1).max()) <= 1.0 + 1e-2
    mtimes = {p.name: p.stat().st_mtime_ns for p in store.data_dir.glob("*.parquet")}
    capsys.readouterr()
    again = prepare(tiny_cfg)
    assert again.data_dir == store.data_dir
    assert "reusing" in capsys.readouterr().out
    assert mtimes == {p.name: p.stat().st_mtime_ns for p in store.data_dir.glob("*.parquet")}


def test_changed_input_changes_fingerprint(tiny_dict, store):
    from wbvb.config import config_from_dict

    tiny_dict["teacher_data"].update({"top_k": 3, "hidden_layers": [0, -1]})
    other = prepare(config_from_dict(tiny_dict))
    assert other.data_dir != store.data_dir and other.manifest["columns"]["topk_ids"]["k"] == 3
    assert other.manifest["columns"]["hidden"]["layers"] == [0, 1]
    row = pq.read_table(other.data_dir / other.manifest["shards"][0]["file"]).slice(0, 1).to_pylist()[0]
    assert decode_row(row, other.manifest)["hidden"].shape[0] == 2


def _rewrite(path, fn):
    table = pq.read_table(path)
    pq.write_table(fn(table), path)


def test_verify_names_missing_column(store):
    shard = store.data_dir / store.manifest["shards"][1]["file"]
    _rewrite(shard, lambda t: t.drop_columns(["hidden"]))
    with pytest.raises(TeacherDataError, match=rf"{shard.name}.*missing column\(s\) hidden"):
        verify(store.data_dir, sample_rows=100)


def test_verify_names_row_and_column_of_wrong_shape(store):
    shard = store.data_dir / store.manifest["shards"][0]["file"]

    def cut(t):
        col = t.column("topk_logprobs").to_pylist()
        col[5] = col[5][:-2]
        return t.set_column(t.schema.get_field_index("topk_logprobs"), "topk_logprobs", pa.array(col, pa.binary()))

    _rewrite(shard, cut)
    with pytest.raises(TeacherDataError, match=rf"{shard.name} row 5 column topk_logprobs: wrong shape"):
        verify(store.data_dir, sample_rows=100)


def test_verify_names_nan(store):
    shard = store.data_dir / store.manifest["shards"][2]["file"]

    def poison(t):
        col = t.column("hidden").to_pylist()
        arr = np.frombuffer(col[3], dtype=np.float16).copy()
        arr[0] = np.nan
        col[3] = arr.tobytes()
        return t.set_column(t.schema.get_field_index("hidden"), "hidden", pa.array(col, pa.binary()))

    _rewrite(shard, poison)
    with pytest.raises(TeacherDataError, match=rf"{shard.name} row 3 column hidden: contains NaN or Inf"):
        verify(store.data_dir, sample_rows=100)


def test_verify_row_count_and_missing_shard(store):
    m = store.manifest
    first = store.data_dir / m["shards"][0]["file"]
    _rewrite(first, lambda t: t.slice(0, 3))
    with pytest.raises(TeacherDataError, match=rf"{first.name}: 3 rows, the manifest says 32"):
        verify(store.data_dir)
    first.unlink()
    with pytest.raises(TeacherDataError, match="listed in the manifest but missing"):
        verify(store.data_dir)


def test_manifest_problems_are_explained(store, tmp_path):
    with pytest.raises(TeacherDataError, match="no manifest"):
        read_manifest(tmp_path)
    manifest = store.data_dir / "manifest.json"
    data = json.loads(manifest.read_text())
    data["complete"] = False
    manifest.write_text(json.dumps(data))
    with pytest.raises(TeacherDataError, match="incomplete"):
        verify(store.data_dir)


def test_interrupted_generation_resumes(tiny_cfg, store):
    """Drop the last shard and mark the store incomplete: the next run writes only that shard."""
    m = store.manifest
    last = m["shards"][-1]["file"]
    kept = {s["file"]: (store.data_dir / s["file"]).stat().st_mtime_ns for s in m["shards"][:-1]}
    before = pq.read_table(store.data_dir / last)
    (store.data_dir / last).unlink()
    m = {**m, "complete": False, "shards": m["shards"][:-1]}
    (store.data_dir / "manifest.json").write_text(json.dumps(m))
    again = prepare(tiny_cfg)
    assert again.manifest["complete"] and again.manifest["num_rows"] == 72
    assert kept == {f: (store.data_dir / f).stat().st_mtime_ns for f in kept}
    assert pq.read_table(store.data_dir / last).equals(before)


_SLOW_GENERATE = """
import json, sys, time
import wbvb.teacher.generate as g
from wbvb.config import config_from_dict
from wbvb.teacher.prepare import prepare

real = g.teacher_rows
def slow(*a, **k):  # a slower teacher, so the kill lands between shards
    time.sleep(0.4)
    return real(*a, **k)
g.teacher_rows = slow
prepare(config_from_dict(json.loads(sys.argv[1])))
"""


def test_killed_generation_resumes_to_identical_shards(tiny_dict, tmp_path):
    """SIGKILL a real generating process mid-way; the resumed store equals an uninterrupted one byte for byte."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from wbvb.config import config_from_dict

    tiny_dict["teacher_data"].update({"shard_rows": 8, "batch_size": 8})
    killed = json.loads(json.dumps(tiny_dict))
    killed["teacher_data"]["path"] = str(tmp_path / "killed")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_GENERATE, json.dumps(killed)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    listed = []
    while time.time() < deadline and proc.poll() is None:
        manifests = list((tmp_path / "killed").glob("*/manifest.json"))
        if manifests:
            try:
                listed = json.loads(manifests[0].read_text())["shards"]
            except json.JSONDecodeError:
                listed = []
            if len(listed) >= 2:
                proc.send_signal(signal.SIGKILL)
                break
        time.sleep(0.05)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the generation finished or failed before it could be killed"
    store = manifests[0].parent
    partial = read_manifest(store)
    assert not partial["complete"] and 2 <= len(partial["shards"]) < 9
    kept = {s["file"]: (store / s["file"]).stat().st_mtime_ns for s in partial["shards"]}

    resumed = prepare(config_from_dict(killed))
    tiny_dict["teacher_data"]["path"] = str(tmp_path / "straight")
    straight = prepare(config_from_dict(tiny_dict))
    assert resumed.data_dir.name == straight.data_dir.name  # same fingerprint
    assert resumed.manifest["shards"] == straight.manifest["shards"] and len(straight.manifest["shards"]) == 9
    assert kept == {f: (store / f).stat().st_mtime_ns for f in kept}  # finished shards were not rewritten
    for s in straight.manifest["shards"]:
        assert (resumed.data_dir / s["file"]).read_bytes() == (straight.data_dir / s["file"]).read_bytes()
    assert not list(resumed.data_dir.glob(".*.tmp"))


def test_cli_verify_inspect_stats(store, capsys):
    from wbvb.teacher.__main__ import main

    assert main(["verify", str(store.data_dir), "--all"]) == 0
    assert '"rows_checked": 72' in capsys.readouterr().out
    assert main(["inspect", str(store.data_dir), "5"]) == 0
    out = capsys.readouterr().out
    row = pq.read_table(store.data_dir / store.manifest["shards"][0]["file"]).slice(5, 1).to_pylist()[0]
    assert row["example_id"] in out and "answer:" in out
    assert out.count(" <- ") == row["seq_len"] - row["prompt_len"]  # one line per answer token, top-5 each
    assert main(["stats", str(store.data_dir)]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert sum(stats["rows_per_task"].values()) == 72 and stats["rows_per_task"]["sentiment/train"] == 24
    assert stats["tokens"] == sum(pq.read_table(store.data_dir / s["file"]).column("seq_len").to_numpy().sum()
                                  for s in store.manifest["shards"])
    assert all(stats["bytes_per_signal"][s] > 0 for s in ("topk", "hidden", "attention"))
    assert main(["inspect", str(store.data_dir), "72"]) == 2
    assert "rows 0..71" in capsys.readouterr().err


def test_truncated_and_stray_shards_are_named_and_kept(store):
    data = store.data_dir
    first = data / store.manifest["shards"][0]["file"]
    stray = data / "shard-00099.parquet"
    shutil.copy(first, stray)
    with pytest.raises(TeacherDataError, match=rf"{stray.name}: a shard that .*manifest.json does not list"):
        verify(data)
    assert stray.is_file()  # nothing is deleted
    stray.unlink()
    whole = first.read_bytes()
    first.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(TeacherDataError, match=rf"{first.name}: not a readable Parquet file, probably truncated"):
        verify(data)
    assert first.stat().st_size == len(whole) // 2


def test_verify_warns_of_an_unlisted_parquet_file(store, capsys):
    from wbvb.teacher.__main__ import main

    data = store.data_dir
    (data / "seq_kd_answers.parquet").write_bytes(b"")  # the seq_kd answers file is known: no warning
    assert main(["verify", str(data)]) == 0
    assert "warning" not in capsys.readouterr().err
    extra = data / "old-run-part-0.parquet"
    shutil.copy(data / store.manifest["shards"][0]["file"], extra)
    assert main(["verify", str(data)]) == 0  # never read, so not an error
    out = capsys.readouterr()
    assert f"warning: {extra}: a Parquet file that {data / 'manifest.json'} does not list; it is never read" in out.err
    assert json.loads(out.out.rsplit("verify: OK", 1)[0])["unlisted_files"] == [str(extra)]
    assert extra.is_file()  # nothing is deleted


def test_manifest_for_other_inputs_is_refused(tiny_cfg, store):
    manifest = store.data_dir / "manifest.json"
    data = json.loads(manifest.read_text())
    data["fingerprint"] = "0123456789abcdef"
    manifest.write_text(json.dumps(data))
    with pytest.raises(TeacherDataError, match="written for other inputs .*point teacher_data.path"):
        prepare(tiny_cfg)
    assert len(list(store.data_dir.glob("shard-*.parquet"))) == 3


def test_verify_names_unsorted_topk_and_bad_attention(store):
    shard = store.data_dir / store.manifest["shards"][0]["file"]

    def edit(col_name, row, fn):
        def apply(t):
            col = t.column(col_name).to_pylist()
            arr = np.frombuffer(col[row], dtype=np.float16).copy()
            fn(arr)
            col[row] = arr.tobytes()
            return t.set_column(t.schema.get_field_index(col_name), col_name, pa.array(col, pa.large_binary()))
        return apply

    original = pq.read_table(shard)
    _rewrite(shard, edit("topk_logprobs", 2, lambda a: a.__setitem__(slice(0, 2), [-3.0, -1.0])))
    with pytest.raises(TeacherDataError, match=rf"{shard.name} row 2 column topk_logprobs: position 0 not sorted"):
        verify(store.data_dir, sample_rows=None)
    pq.write_table(original, shard)
    _rewrite(shard, edit("attention", 4, lambda a: a.__setitem__(0, 1.5)))
    with pytest.raises(TeacherDataError, match=rf"{shard.name} row 4 column attention: a row sums to"):
        verify(store.data_dir, sample_rows=None)


def test_compact_encodings_generate_verify_and_decode(tiny_dict, store):
    """Every compact code + answer-only attention rows through the real generator, against the float store."""
    from wbvb.config import config_from_dict
    from wbvb.store.codec import decode_batch

    tiny_dict["teacher_data"].update({"logprob_encoding": "gaps8", "hidden_encoding": "int8",
                                      "attention_encoding": "cbrt", "attention_rows": "answer"})
    compact = prepare(config_from_dict(tiny_dict))
    assert compact.data_dir != store.data_dir
    assert compact.manifest["columns"]["hidden"]["dtype"] == "int8"
    assert compact.manifest["columns"]["attention"]["rows"] == "answer"
    assert compact.manifest["columns"]["attention"]["encoding"] == "cbrt"
    assert compact.manifest["columns"]["topk_logprobs"]["encoding"] == "gaps8"
    verify(compact.data_dir, sample_rows=None)
    shard = compact.manifest["shards"][0]["file"]
    a = decode_batch(pq.read_table(compact.data_dir / shard).slice(0, 4), compact.manifest, 0)
    b = decode_batch(pq.read_table(store.data_dir / shard).slice(0, 4), store.manifest, 0)
    rows = a["attention_row_mask"]
    assert rows.any() and not rows.all()
    assert torch.allclose(a["attention"].float()[:, :, :, rows[0]][0], b["attention"].float()[:, :, :, rows[0]][0],
                          atol=2e-3)
    assert torch.equal(a["topk_ids"], b["topk_ids"])
    assert torch.allclose(a["topk_logprobs"], b["topk_logprobs"].float(), atol=0.05)
    assert a["attention"][0, :, :, ~rows[0]].abs().sum() == 0
    assert torch.allclose(a["hidden"], b["hidden"].float(), atol=0.02 * float(b["hidden"].float().abs().max()))
    sizes = [sum((d / s["file"]).stat().st_size for s in m["shards"])
             for d, m in ((compact.data_dir, compact.manifest), (store.data_dir, store.manifest))]
    assert sizes[0] < sizes[1]
