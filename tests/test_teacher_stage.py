"""The teacher stage as a Ray task on a cluster node (here: a local Ray whose node carries the resource)."""
import json
import os

import pytest
import yaml

pytestmark = pytest.mark.e2e


@pytest.fixture
def ray_teacher_node():
    import ray

    ray.init(address="local", num_cpus=2, resources={"teacher_node": 1}, include_dashboard=False,
             log_to_driver=False)
    yield
    ray.shutdown()


def test_generate_as_a_ray_task_then_found_by_fingerprint(tiny_dict, tmp_path, ray_teacher_node, capsys):
    from wbvb.config import config_from_dict
    from wbvb.teacher.__main__ import main
    from wbvb.teacher.cluster import prepare_on_cluster

    tiny_dict["sweep"]["distill_types"] = ["black_box"]
    tiny_dict["teacher_data"].update({"cpus": 1, "custom_resources": {"teacher_node": 1}})
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(tiny_dict))
    # `ray job submit ... -- python -m wbvb.teacher generate --config X --address auto` (Ray already joined here)
    assert main(["generate", "--config", str(path), "--address", "auto"]) == 0
    out = capsys.readouterr().out
    assert "as a Ray task (1 CPU, 0 GPU, {'teacher_node': 1.0})" in out
    made = json.loads(out[out.index("{\n"):])
    assert (tmp_path / "teacher" / os.path.basename(made["dir"]) / "manifest.json").is_file()

    # The sweep's own teacher stage on the cluster finds that store by fingerprint, in a task, not here.
    prep, where = prepare_on_cluster(config_from_dict(tiny_dict))
    assert str(prep.data_dir) == made["dir"] and where["pid"] != os.getpid()
    assert prep.manifest["num_rows"] == made["rows"]


def test_cluster_teacher_stage_needs_a_shared_path(tiny_dict):
    from wbvb.config import ConfigError, config_from_dict
    from wbvb.teacher.cluster import prepare_on_cluster

    tiny_dict["teacher_data"]["path"] = "wbvb_data/teacher"
    with pytest.raises(ConfigError, match="relative.*every node sees"):
        prepare_on_cluster(config_from_dict(tiny_dict))


def test_local_teacher_stage_runs_in_a_process_that_exits(tiny_dict, monkeypatch):
    """Locally too the teacher stage is a Ray task in a worker of its own (max_calls=1), so the
    driver never builds the teacher (nor keeps its GPU memory) and the worker is gone afterwards."""
    import ray
    import transformers

    from wbvb.config import config_from_dict
    from wbvb.teacher.cluster import prepare_locally

    built = []
    real_init = transformers.PreTrainedModel.__init__
    monkeypatch.setattr(transformers.PreTrainedModel, "__init__",
                        lambda self, *a, **k: built.append(type(self).__name__) or real_init(self, *a, **k))
    tiny_dict["sweep"]["distill_types"] = ["black_box"]
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        prep, where = prepare_locally(config_from_dict(tiny_dict))
        assert where["pid"] != os.getpid() and prep.manifest["num_rows"] > 0
        assert built == []  # no model was built in this process
        import time
        deadline = time.time() + 60
        while time.time() < deadline:  # the worker exits after its one call
            try:
                os.kill(where["pid"], 0)
            except ProcessLookupError:
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"teacher worker {where['pid']} still alive after its task")
    finally:
        ray.shutdown()
