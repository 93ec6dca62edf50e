"""Helpers for tests that run ``python -m wbvb.sweep`` as a real process and watch its run folder."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def write_config(d: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(d))
    return path


def start_sweep(config: Path, log: Path, *args: str, cwd: Path = ROOT, env: dict | None = None) -> subprocess.Popen:
    """The sweep as a user starts it, in its own session (so a test can kill its whole group).

    ``env``: the environment to start from (default this process's); this checkout goes first on PYTHONPATH.
    """
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen([sys.executable, "-m", "wbvb.sweep", "--config", str(config), *args], cwd=cwd,
                            env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def results(trial_dir: Path) -> list[dict]:
    """The result rows Tune has written for one trial (complete lines only)."""
    f = trial_dir / "result.json"
    rows = []
    if f.is_file():
        for line in f.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return rows


def epochs(trial_dir: Path) -> list[int]:
    return [r["epoch"] for r in results(trial_dir)]


def wait_for(cond, proc: subprocess.Popen, log: Path, timeout: float = 300, what: str = ""):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = cond()
        if value:
            return value
        if proc.poll() is not None:
            raise AssertionError(f"sweep exited ({proc.returncode}) before {what}:\n{log.read_text()[-4000:]}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}:\n{log.read_text()[-4000:]}")


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL whatever is left of a sweep's process group (test cleanup)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False
