"""Teacher store: generation, reuse by fingerprint, decode, and loud verification errors."""
import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from wbvb.teacher import prepare
from wbvb.teacher.schema import TeacherDataError, decode_row, read_manifest
from wbvb.teacher.verify import verify


@pytest.fixture
def store(tiny_cfg):
    return prepare(tiny_cfg)


def test_generate_writes_shards_manifest_and_reuses(tiny_cfg, store, capsys):
    m = store.manifest
    assert m["complete"] and m["num_rows"] == 72 and len(m["shards"]) == 3
    assert set(m["teacher_accuracy"]) == {"sentiment", "multiple_choice", "arithmetic"}
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
