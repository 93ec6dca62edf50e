"""Shared fixtures: a tiny experiment config whose presets and teacher data live in temp dirs."""
from __future__ import annotations

import copy
import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TINY = {
    "models": {"teacher": "preset:tiny", "student": "preset:tiny", "teacher_finetune_epochs": 0,
               "preset": {"vocab_size": 400, "teacher_layers": 2, "teacher_hidden": 32, "teacher_heads": 4,
                          "student_layers": 1, "student_hidden": 16, "student_heads": 2,
                          "max_position_embeddings": 128}},
    "tasks": [{"name": "sentiment", "n_train": 24, "n_eval": 6},
              {"name": "multiple_choice", "n_train": 24, "n_eval": 6},
              {"name": "arithmetic", "n_train": 24, "n_eval": 6}],
    "teacher_data": {"top_k": 4, "hidden_stride": 2, "attention_stride": 2, "shard_rows": 32, "batch_size": 16,
                     "verify_rows": 4},
    "training": {"epochs": 1, "batch_size": 8, "max_length": 96, "eval_batch_size": 32, "max_new_tokens": 12,
                 "device": "cpu"},
    "sweep": {"name": "tiny", "distill_types": ["sft", "seq_kd", "black_box", "hidden_state", "attention", "combined"],
              "seeds": [0], "cpus_per_trial": 0.5, "data_cpus": 0.25, "headroom_cpus": 0.5,
              "stall_timeout_s": 120},
}


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("wbvb-cache")


@pytest.fixture
def tiny_dict(cache_dir, tmp_path):
    d = copy.deepcopy(TINY)
    d["models"]["cache_dir"] = str(cache_dir)
    d["teacher_data"]["path"] = str(tmp_path / "teacher")
    d["output"] = {"dir": str(tmp_path / "results")}
    return d


@pytest.fixture(scope="session")
def shared_teacher_dir(tmp_path_factory):
    """One teacher store for the sweep tests that only need *a* store: generated once, reused by fingerprint."""
    return tmp_path_factory.mktemp("shared-teacher")


@pytest.fixture
def tiny_cfg(tiny_dict):
    from wbvb.config import config_from_dict

    return config_from_dict(tiny_dict)


@pytest.fixture
def s3_bucket(monkeypatch):
    """A real S3 API on loopback (moto's server), reached through the standard AWS env variables.

    Code under test sees a plain ``s3://wbvb-test/...`` URI, exactly as on a cloud; pyarrow, Ray Data and
    Tune pick the endpoint up from ``AWS_ENDPOINT_URL``. Ray workers started after this fixture inherit it.
    """
    import socket

    boto3 = pytest.importorskip("boto3", reason="the S3 tests need boto3 and moto[server] (pip install -e .[dev])")
    server = pytest.importorskip("moto.server", reason="the S3 tests need moto[server] (pip install -e .[dev])")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    srv.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"]).create_bucket(Bucket="wbvb-test")
    try:
        yield "s3://wbvb-test"
    finally:
        srv.stop()
