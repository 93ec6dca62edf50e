"""Wall time of the built-in quickstart, cold (empty caches) and warm (presets + teacher data reused).

python benchmarks/quickstart_wall.py   -> prints `name: value` lines; the target is cold <= 600 s on 2 cores.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(env: dict) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "wbvb.sweep"], env=env, capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parent.parent)
    if out.returncode != 0:
        sys.exit(f"quickstart failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return time.perf_counter() - t0, out.stdout


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="wbvb-bench-") as tmp:
        env = {**os.environ, "WBVB_CACHE": f"{tmp}/cache", "WBVB_OFFLINE_DATA_PATH": f"{tmp}/teacher",
               "WBVB_OUTPUT_PATH": f"{tmp}/results"}
        cold, _ = run(env)
        print(f"quickstart_cold_wall_s: {cold:.1f}")
        warm, out = run({**env, "WBVB_OUTPUT_PATH": f"{tmp}/results2"})
        print(f"quickstart_warm_wall_s: {warm:.1f}")
        print(f"teacher_data_reused: {int('teacher data: reusing' in out)}")
        print(f"cpu_cores: {os.cpu_count()}")


if __name__ == "__main__":
    main()
