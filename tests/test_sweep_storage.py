"""A sweep whose run folder is an object-store URI (moto's S3 on loopback): results, resume, refusal."""
import json
import shutil

import pandas as pd
import pytest

pytestmark = pytest.mark.e2e


@pytest.fixture
def s3_ray(s3_bucket):
    import ray

    # after s3_bucket: Ray's workers inherit AWS_ENDPOINT_URL and the test credentials
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield s3_bucket
    ray.shutdown()


def _s3_files(prefix: str) -> dict[str, bytes]:
    import pyarrow.fs

    fs, root = pyarrow.fs.FileSystem.from_uri(prefix)
    infos = fs.get_file_info(pyarrow.fs.FileSelector(root, recursive=True, allow_not_found=True))
    out = {}
    for i in infos:
        if i.type == pyarrow.fs.FileType.File:
            with fs.open_input_stream(i.path) as f:
                out[i.path[len(root) + 1:]] = f.read()
    return out


def test_sweep_results_on_s3_then_resume_from_there(tiny_dict, shared_teacher_dir, s3_ray, capsys):
    from wbvb.config import ConfigError, config_from_dict
    from wbvb.sweep.run import run_sweep

    tiny_dict["teacher_data"]["path"] = str(shared_teacher_dir)

    tiny_dict["sweep"]["distill_types"] = ["sft"]
    tiny_dict["training"]["epochs"] = 2
    tiny_dict["output"]["dir"] = f"{s3_ray}/results"
    cfg = config_from_dict(tiny_dict)
    assert cfg.run_uri == "s3://wbvb-test/results/tiny"
    result = run_sweep(cfg)
    assert not result["errors"]

    files = _s3_files(cfg.run_uri)
    rows = [json.loads(x) for x in files["tune/sft-seed0/result.json"].decode().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert any(k.startswith("tune/sft-seed0/checkpoint_") and k.endswith("final_model/config.json") for k in files)
    assert any(k.startswith("tune/sft-seed0/tensorboard/events.out.tfevents.") for k in files), sorted(files)
    for name in ("config.json", "run.json", "teacher.json", "failed_trials.json", "results_summary.csv",
                 "report.md", "aggregate.csv"):
        assert name in files, (name, sorted(files))
    summary = pd.read_csv(cfg.run_dir / "results_summary.csv")  # the driver's mirror holds the same summary
    assert list(summary["epoch"]) == [1, 2] and files["results_summary.csv"] == (
        cfg.run_dir / "results_summary.csv").read_bytes()
    assert "s3://wbvb-test/results/tiny" in capsys.readouterr().out

    # Resume from the URI alone (as on another machine): nothing is missing, so nothing re-runs.
    shutil.rmtree(cfg.run_dir)
    again = run_sweep(cfg)
    assert not again["errors"] and list(again["summary"]["epoch"]) == [1, 2]
    assert "finishing only what is missing" in capsys.readouterr().out
    assert _s3_files(cfg.run_uri)["tune/sft-seed0/result.json"] == files["tune/sft-seed0/result.json"]

    other = cfg.to_dict()
    other["loss"]["alpha"] = 0.5
    with pytest.raises(ConfigError, match=r"s3://wbvb-test/results/tiny holds the results of another config"):
        run_sweep(config_from_dict(other))
