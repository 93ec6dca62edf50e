"""Teacher data on object storage: generate, resume, reuse, verify/inspect/stats and Ray Data streaming
against a real S3 API (moto's server on loopback; ``s3_bucket`` in conftest). ``gs://`` and other pyarrow
filesystem URIs take the same code path (``wbvb.storage``)."""
import json

import pyarrow.fs as pafs
import pytest

from wbvb import storage
from wbvb.store.schema import TeacherDataError


def test_locations_local_and_uri(tmp_path):
    assert storage.location(str(tmp_path / "a" / "..")) == tmp_path
    assert storage.location(f"file://{tmp_path}") == tmp_path
    assert storage.location("s3://bucket/dir/") == "s3://bucket/dir"
    assert storage.join("gs://bucket/dir", "fp", "manifest.json") == "gs://bucket/dir/fp/manifest.json"
    assert storage.join(tmp_path, "x") == tmp_path / "x" and storage.name("s3://b/d/shard-00001.parquet") == \
        "shard-00001.parquet"
    with pytest.raises(storage.StorageError, match=r"nosuch://x/y: cannot open this location.*check the URI"):
        storage.is_file("nosuch://x/y")


def test_missing_bucket_is_named(s3_bucket):
    with pytest.raises(storage.StorageError, match=r"s3://wbvb-no-such-bucket/t/manifest.json: .*bucket exists"):
        storage.write_bytes_atomic("s3://wbvb-no-such-bucket/t/manifest.json", b"{}")
    with pytest.raises(TeacherDataError, match=r"s3://wbvb-test/nothing/manifest.json: no manifest"):
        from wbvb.store.schema import read_manifest

        read_manifest(f"{s3_bucket}/nothing")


@pytest.fixture
def ray_2cpu(s3_bucket):  # after s3_bucket: Ray's workers inherit the S3 endpoint and credentials
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _mtimes(d: str) -> dict:
    fs, path = storage.filesystem(d)
    return {i.base_name: i.mtime_ns for i in fs.get_file_info(pafs.FileSelector(path)) if i.type == pafs.FileType.File}


def test_teacher_store_on_s3_end_to_end(tiny_dict, s3_bucket, ray_2cpu, capsys):
    from wbvb.config import config_from_dict
    from wbvb.distill_types import DISTILL
    from wbvb.feed.stream import ShardStream
    from wbvb.teacher.prepare import prepare
    from wbvb.teacher.__main__ import main
    from wbvb.store.schema import read_manifest

    tiny_dict["teacher_data"]["path"] = f"{s3_bucket}/teacher/"
    cfg = config_from_dict(tiny_dict)
    prep = prepare(cfg)
    d = prep.data_dir
    assert isinstance(d, str) and d.startswith("s3://wbvb-test/teacher/") and prep.manifest["complete"]
    names = storage.listdir(d)
    assert names == ["manifest.json", "seq_kd_answers.json", "seq_kd_answers.parquet", "shard-00000.parquet",
                     "shard-00001.parquet", "shard-00002.parquet"]  # no temporary objects left

    # an interrupted run: the last shard never uploaded, the manifest not yet complete
    last = f"{d}/shard-00002.parquet"
    whole = storage.read_bytes(last)
    m = read_manifest(d)
    storage.write_bytes_atomic(f"{d}/manifest.json", json.dumps(
        {**m, "complete": False, "shards": m["shards"][:2], "num_rows": 64}).encode())
    fs, path = storage.filesystem(last)
    fs.delete_file(path)
    before = _mtimes(d)
    capsys.readouterr()
    again = prepare(cfg)
    assert "teacher data: reusing" not in capsys.readouterr().out and again.manifest["complete"]
    assert storage.read_bytes(last) == whole  # the resumed shard equals the uninterrupted one
    after = _mtimes(d)
    assert {f: after[f] for f in ("shard-00000.parquet", "shard-00001.parquet")} == \
        {f: before[f] for f in ("shard-00000.parquet", "shard-00001.parquet")}  # finished shards not rewritten
    assert prepare(cfg).data_dir == d and "teacher data: reusing" in capsys.readouterr().out  # by fingerprint

    assert main(["verify", d, "--all"]) == 0 and '"rows_checked": 72' in capsys.readouterr().out
    assert main(["stats", d]) == 0 and json.loads(capsys.readouterr().out)["rows"] == 72
    assert main(["inspect", d, "3"]) == 0 and "answer:" in capsys.readouterr().out

    stream = ShardStream(d, again.manifest, DISTILL["combined"].signals, 8)
    batch = next(iter(stream.epoch(0, seed=0)))
    assert batch["input_ids"].shape[0] == 8 and {"topk_ids", "hidden", "attention"} <= set(batch)
    black = ShardStream(d, again.manifest, DISTILL["black_box"].signals, 8)
    assert not {"hidden", "attention"} & set(black.dataset().schema().names)


def test_truncated_remote_shard_is_named_and_kept(tiny_dict, s3_bucket):
    from wbvb.config import config_from_dict
    from wbvb.teacher.prepare import prepare
    from wbvb.store.verify import verify

    tiny_dict["teacher_data"]["path"] = f"{s3_bucket}/teacher"
    prep = prepare(config_from_dict(tiny_dict))
    shard = f"{prep.data_dir}/shard-00001.parquet"
    whole = storage.read_bytes(shard)
    storage.write_bytes_atomic(shard, whole[: len(whole) // 2])
    with pytest.raises(TeacherDataError, match=r"s3://wbvb-test/teacher/.*/shard-00001.parquet: not a readable"):
        verify(prep.data_dir)
    assert storage.size(shard) == len(whole) // 2  # nothing valid (or not) is deleted
