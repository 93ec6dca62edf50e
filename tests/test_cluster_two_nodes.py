"""A real two-node Ray cluster on loopback: trials of one sweep land on both nodes."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_start(*args) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--block", "--disable-usage-stats", *args]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}  # a loopback-only test cluster: no token needed
    return subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env)


def _stop(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=20)
            return
        except (ProcessLookupError, subprocess.TimeoutExpired):
            continue


@pytest.fixture
def two_node_cluster(monkeypatch):
    import ray

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    port = _free_port()
    address = f"127.0.0.1:{port}"
    head = _ray_start("--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
                      '--resources={"node_a": 1}', "--include-dashboard=false")
    worker = None
    try:
        deadline = time.time() + 60
        while True:  # wait for the head, then add the second node
            try:
                ray.init(address=address, log_to_driver=False)
                break
            except Exception:  # noqa: BLE001 - not up yet
                if time.time() > deadline:
                    raise
                time.sleep(1)
        worker = _ray_start(f"--address={address}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
                            '--resources={"node_b": 1}')
        while "node_b" not in ray.cluster_resources():
            assert time.time() < deadline + 60, "second node never joined"
            time.sleep(1)
        yield address
    finally:
        ray.shutdown()
        for p in (worker, head):
            if p is not None:
                _stop(p)


def test_sweep_trials_land_on_both_nodes(tiny_dict, two_node_cluster):
    from wbvb.config import config_from_dict
    from wbvb.sweep.run import run_sweep

    tiny_dict["sweep"].update({
        "distill_types": ["sft", "black_box"], "address": two_node_cluster, "max_concurrent_trials": 2,
        "resources_by_type": {"sft": {"custom": {"node_a": 0.5}}, "black_box": {"custom": {"node_b": 0.5}}}})
    cfg = config_from_dict(tiny_dict)
    result = run_sweep(cfg)
    assert not result["errors"]
    nodes = {}
    for name in ("sft-seed0", "black_box-seed0"):
        line = (cfg.run_dir / "tune" / name / "result.json").read_text().splitlines()[-1]
        nodes[name] = json.loads(line)["node_id"]
    assert len(set(nodes.values())) == 2, nodes
