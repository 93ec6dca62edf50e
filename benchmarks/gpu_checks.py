"""The CUDA checks that wait for a GPU: two packed trials, a kill -9 mid-epoch, --resume.

Runs the tiny quickstart chain on the GPU (trials of sft and black_box packed at
``gpus_per_trial: 0.5``, mid-epoch checkpoints every 2 optimizer steps), once uninterrupted and once
killed (SIGKILL to the driver's whole process group) right after a trial's first mid-epoch
checkpoint, then finished with ``--resume``; the two runs' final metrics must be identical. Also
prints the device facts the precision choices rest on. Prints ``name: value`` lines; exit status
1 when a check fails.

    python benchmarks/gpu_checks.py [--out /tmp/wbvb-gpu-checks]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = ["training.device=cuda", "training.epochs=2", "training.checkpoint_every_steps=2",
            "sweep.gpus_per_trial=0.5", "sweep.distill_types=[sft,black_box]", "sweep.seeds=[0]",
            "sweep.reuse_actors=false"]
TIMING = ("tokens_per_s", "data_wait_s", "time_", "timestamp", "pid", "node_id", "date", "hostname", "trial_id")


def sweep(out: Path, name: str, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WBVB_OFFLINE_DATA_PATH": str(out / "teacher")}
    args = [sys.executable, "-m", "wbvb.sweep", "--output", str(out / "results"), "--set", f"sweep.name={name}"]
    for s in SETTINGS:
        args += ["--set", s]
    return subprocess.Popen(args + list(extra), cwd=ROOT, env=env, start_new_session=True,
                            stdout=(out / f"{name}.log").open("a"), stderr=subprocess.STDOUT)


def final_rows(run: Path) -> dict:
    rows = {}
    for f in sorted((run / "tune").glob("*/result.json")):
        last = [json.loads(line) for line in f.read_text().splitlines() if line.strip()][-1]
        rows[f.parent.name] = {k: v for k, v in last.items() if not k.startswith(TIMING)
                               and not isinstance(v, dict)}
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/wbvb-gpu-checks")
    out = Path(ap.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    cap = torch.cuda.get_device_capability()
    print(f"device: {torch.cuda.get_device_name()}")
    print(f"compute_capability: {cap[0]}.{cap[1]}")
    print(f"bf16_native: {cap >= (8, 0)}")
    print(f"bf16_supported_with_emulation: {torch.cuda.is_bf16_supported()}")

    t0 = time.perf_counter()
    full = sweep(out, "full")
    rc_full = full.wait()
    print(f"uninterrupted_rc: {rc_full}")
    print(f"uninterrupted_wall_s: {time.perf_counter() - t0:.1f}")

    killed = sweep(out, "killed")
    run = out / "results" / "killed"
    deadline = time.time() + 600
    while time.time() < deadline and killed.poll() is None:  # the first mid-epoch report
        if any("epoch" not in json.loads(line) for f in (run / "tune").glob("*/result.json")
               for line in f.read_text().splitlines() if line.strip()):
            break
        time.sleep(0.2)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    print(f"killed_mid_epoch: {killed.returncode == -signal.SIGKILL}")
    t0 = time.perf_counter()
    rc_resumed = sweep(out, "killed", "--resume").wait()
    print(f"resumed_rc: {rc_resumed}")
    print(f"resumed_wall_s: {time.perf_counter() - t0:.1f}")
    a, b = final_rows(out / "results" / "full"), final_rows(run)
    same = a == b and len(a) == 2
    print(f"final_metrics_identical: {same}")
    if not same:
        for trial in sorted(set(a) | set(b)):
            diff = {k: (a.get(trial, {}).get(k), b.get(trial, {}).get(k))
                    for k in set(a.get(trial, {})) | set(b.get(trial, {}))
                    if a.get(trial, {}).get(k) != b.get(trial, {}).get(k)}
            print(f"diff_{trial}: {diff}")
    return 0 if rc_full == 0 and rc_resumed == 0 and same else 1


if __name__ == "__main__":
    sys.exit(main())
