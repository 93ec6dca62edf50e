"""Trial results -> one row per (run, trial, epoch): loading, run identity, merging, filtering.

A run is one sweep's output folder (``config.json``, ``teacher.json``, ``run.json``, ``tune/``).
Its run id keys every row, so analysing the same run twice, or several runs together, never
duplicates rows; rows of finished trials already in ``results_summary.csv`` are kept when their
trial folders are gone (a resumed sweep), and are replaced when the trial reports again.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

ACC_PREFIX = "validation_accuracy_"
METRICS = ["epoch", "train_loss", "task_loss", "kd_loss", "align_hidden_loss", "align_attn_loss",
           "validation_loss", "val_acc", "tokens_per_s"]
DISTILL_ORDER = ["sft", "seq_kd", "black_box", "hidden_state", "attention", "combined"]
SUMMARY_FILE = "results_summary.csv"
RUN_FILE = "run.json"
FAILED_FILE = "failed_trials.json"  # written by the sweep: trials that exhausted sweep.max_failures
ROW_KEY = ["run_id", "trial_name", "epoch"]
CONFIG_PREFIX = "cfg."


@dataclass
class Run:
    """One sweep's results plus what the run folder says about how they were made."""

    run_id: str
    folder: Path
    started_at: str
    rows: pd.DataFrame
    config: dict = field(default_factory=dict)
    teacher: dict = field(default_factory=dict)
    failed: list = field(default_factory=list)  # [{"trial": name, "error": text}] from failed_trials.json
    timings: dict = field(default_factory=dict)  # wall seconds per stage (timings.json, written by the sweep)

    @property
    def expected_trials(self) -> int | None:
        sweep = self.config.get("sweep") or {}
        if sweep.get("distill_types") and sweep.get("seeds"):
            return len(sweep["distill_types"]) * len(sweep["seeds"])
        return None


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def write_csv_atomic(df: pd.DataFrame, path: Path) -> None:
    """Temp file in the same folder + rename: a reader never sees half a CSV."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)


def write_text_atomic(text: str, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=path.suffix, dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def run_id_for(config: dict, fallback: str) -> str:
    """``<sweep name>-<8 hex of the config>``: the same config re-run or resumed keeps its id."""
    if not config:
        return fallback
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{(config.get('sweep') or {}).get('name', fallback)}-{digest}"


TIMINGS_FILE = "timings.json"


def write_timings(run_dir: Path, seconds: dict) -> None:
    """``timings.json``: the sweep's wall seconds per stage (the teacher stage's steps, trials, analysis)."""
    write_text_atomic(json.dumps(seconds, indent=2) + "\n", Path(run_dir) / TIMINGS_FILE)


def write_run_meta(run_dir: Path, config: dict) -> dict:
    """Write ``run.json`` (run id, first start time); kept as is when the same config resumes."""
    run_dir = Path(run_dir)
    run_id = run_id_for(config, run_dir.name)
    old = _read_json(run_dir / RUN_FILE)
    if old.get("run_id") == run_id:
        return old
    meta = {"run_id": run_id, "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    write_text_atomic(json.dumps(meta, indent=2) + "\n", run_dir / RUN_FILE)
    return meta


def _result_rows(path: Path) -> list[dict]:
    rows = []
    for f in sorted(path.rglob("result.json")):
        for line in f.read_text().splitlines():
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line being written right now by a running trial
            if "epoch" not in r:
                continue  # a mid-epoch checkpoint report (training.checkpoint_every_steps): nothing evaluated
            cfg = r.get("config", {})
            row = {"trial_id": r.get("trial_id"), "trial_name": f.parent.name,
                   "distill_type": cfg.get("distill_type"), "seed": cfg.get("seed")}
            row.update({k: r.get(k) for k in METRICS})
            row.update({k: v for k, v in r.items() if k.startswith(ACC_PREFIX)})
            row.update({CONFIG_PREFIX + k: v for k, v in cfg.items() if k not in ("distill_type", "seed")})
            row["wall_time_s"] = r.get("time_total_s")
            rows.append(row)
    return rows


def _run_folder_of(path: Path) -> Path:
    """A Tune experiment folder (``<run>/tune``) belongs to the run folder above it."""
    if not (path / "config.json").is_file() and (path.parent / "config.json").is_file():
        return path.parent
    return path


def load_run(path: Path) -> Run:
    """Read a sweep's output folder or its Tune experiment folder."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such run folder (pass a sweep's output folder, its tune/ "
                                f"folder, or a {SUMMARY_FILE})")
    folder = _run_folder_of(path)
    config, teacher, meta = (_read_json(folder / n) for n in ("config.json", "teacher.json", RUN_FILE))
    run_id = meta.get("run_id") or run_id_for(config, folder.name)
    started = meta.get("started_at", "")
    fresh = pd.DataFrame(_result_rows(path))
    old = _read_summary(folder / SUMMARY_FILE)
    if not old.empty:
        old = old[old["run_id"] == run_id]  # other runs' rows stay in the file (see summary_runs)
    if not fresh.empty:
        fresh.insert(0, "run_id", run_id)
        fresh.insert(1, "run_started_at", started)
    rows = merge_rows(old, fresh)
    if rows.empty:
        raise FileNotFoundError(f"{path}: no trial results (result.json) found yet")
    return Run(run_id, folder, started, rows, config, teacher, _read_json(folder / FAILED_FILE).get("failed", []),
               _read_json(folder / TIMINGS_FILE))


def load_results(path: Path) -> pd.DataFrame:
    """One row per (trial, epoch) of the run at ``path``."""
    return load_run(path).rows


def _read_summary(path: Path) -> pd.DataFrame:
    if not path.is_file():
        return pd.DataFrame()
    df = pd.read_csv(path)
    if "run_id" not in df.columns:  # a summary from before run ids: rebuilt from result.json instead
        return pd.DataFrame()
    return df


def load_summary(path: Path) -> list[Run]:
    """Runs from a ``results_summary.csv`` (one or several run ids).

    The folder's config.json and teacher.json describe only the run its run.json names (or the
    only run in the file); older runs in the same file get no metadata rather than the wrong one.
    """
    runs = summary_runs(Path(path))
    if not runs:
        runs = [legacy_summary_run(Path(path))]
    return runs


LEGACY_COLUMNS = ("distill_type", "seed", "epoch")


def legacy_summary_run(path: Path) -> Run:
    """A summary without run ids (the earlier scripts': one row per trial x epoch) read as one run.

    Its trials are named ``<distill_type>-seed<seed>`` as the sweep names them; a (trial, epoch)
    given twice with different values is refused (which row is right cannot be known), an exact
    repeat counts once.
    """
    df = pd.read_csv(path)
    missing = [c for c in LEGACY_COLUMNS if c not in df.columns]
    if missing or not tasks_of(df):
        need = [*missing] + ([] if tasks_of(df) else [f"{ACC_PREFIX}<task>"])
        raise FileNotFoundError(f"{path}: neither a run_id column nor the columns of one run's rows "
                                f"(missing {', '.join(need)}); write a summary with python -m wbvb.analysis RUN")
    df = df.dropna(subset=list(LEGACY_COLUMNS)).copy()  # the index stays the file's row: line = index + 2
    df["seed"], df["epoch"] = df["seed"].astype(int), df["epoch"].astype(int)
    if "trial_name" not in df.columns:
        df["trial_name"] = [f"{d}-seed{s}" for d, s in zip(df["distill_type"], df["seed"])]
    if "val_acc" not in df.columns:
        df["val_acc"] = float("nan")  # the example-weighted mean needs example counts the file does not have
    kept = df[~df.duplicated(keep="first")]
    clash = kept[kept.duplicated(["trial_name", "epoch"], keep=False)]
    if len(clash):
        key = (clash["trial_name"].iloc[0], clash["epoch"].iloc[0])
        lines = [str(i + 2) for i, t, e in zip(clash.index, clash["trial_name"], clash["epoch"]) if (t, e) == key]
        raise ValueError(f"{path}: lines {', '.join(lines)} give {key[0]} epoch {key[1]} with different values; "
                         "keep one of them")
    repeats = len(df) - len(kept)
    df = kept
    folder = path.parent
    config = _read_json(folder / "config.json")
    run_id = _read_json(folder / RUN_FILE).get("run_id") or run_id_for(config, folder.name)
    df.insert(0, "run_id", run_id)
    rows = merge_rows(pd.DataFrame(), df)
    print(f"{path}: no run_id column, read as one run '{run_id}': {rows['trial_name'].nunique()} trials, "
          f"{len(rows)} rows{f' ({repeats} repeated rows counted once)' if repeats else ''}")
    return Run(run_id, folder, "", rows, config, _read_json(folder / "teacher.json"))


def summary_runs(path: Path) -> list[Run]:
    df = _read_summary(path)
    if df.empty:
        return []
    folder = path.parent
    config, teacher = _read_json(folder / "config.json"), _read_json(folder / "teacher.json")
    current = _read_json(folder / RUN_FILE).get("run_id") or run_id_for(config, folder.name)
    groups = list(df.groupby("run_id", sort=False))
    runs = []
    for rid, g in groups:
        own = rid == current or len(groups) == 1
        started = g["run_started_at"].dropna() if "run_started_at" in g else pd.Series(dtype=str)
        runs.append(Run(rid, folder, str(started.iloc[0]) if len(started) else "", g.reset_index(drop=True),
                        config if own else {}, teacher if own else {},
                        _read_json(folder / FAILED_FILE).get("failed", []) if own else []))
    return runs


def merge_rows(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """Union keyed by (run, trial, epoch); a newer report of the same key wins."""
    frames = [f for f in (old, new) if not f.empty]
    if not frames:
        return pd.DataFrame()
    df = pd.concat(frames, ignore_index=True)
    df = df.drop_duplicates(ROW_KEY, keep="last")
    return sort_rows(df)


def sort_rows(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(["run_id", "distill_type", "seed", "epoch"], key=distill_sort_key).reset_index(drop=True)


def distill_sort_key(col: pd.Series) -> pd.Series:
    if col.name == "distill_type":
        return col.map(distill_rank)
    return col


def distill_rank(d: str) -> int:
    return DISTILL_ORDER.index(d) if d in DISTILL_ORDER else len(DISTILL_ORDER)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = json.dumps(v) if isinstance(v, list) else v
    return out


def combine(runs: list[Run]) -> pd.DataFrame:
    """All runs' rows, plus one ``cfg.<key>`` column per config value that differs between runs."""
    flat = {r.run_id: _flatten(r.config) for r in runs}
    keys = sorted({k for f in flat.values() for k in f})
    varying = [k for k in keys if len({str(f.get(k)) for f in flat.values()}) > 1
               and not k.startswith(("sweep.distill_types", "sweep.seeds"))]
    frames = []
    for r in runs:
        df = r.rows.copy()
        for k in varying:
            df[CONFIG_PREFIX + k] = flat[r.run_id].get(k)
        frames.append(df)
    return merge_rows(pd.DataFrame(), pd.concat(frames, ignore_index=True))


def filter_runs(runs: list[Run], run_ids: list[str] | None, since: str | None) -> list[Run]:
    """Keep the runs named by ``--run`` (id or prefix) and started at or after ``--since``.

    A run whose start is unknown (no run.json) never passes ``--since``: it cannot be shown to be new.
    """
    kept = runs
    if run_ids:
        kept = [r for r in kept if any(r.run_id == q or r.run_id.startswith(q) for q in run_ids)]
    if since:
        cutoff = parse_time(since)
        kept = [r for r in kept if r.started_at and parse_time(r.started_at) >= cutoff]
    if not kept:
        known = ", ".join(f"{r.run_id} ({r.started_at or 'start unknown'})" for r in runs)
        raise FileNotFoundError(f"no run matches --run {run_ids or '-'} --since {since or '-'}; runs here: {known}")
    return kept


def parse_time(text: str) -> datetime:
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--since {text!r}: expected an ISO date or time, e.g. 2026-11-27 or 2026-11-27T06:00") from None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


# Scoring variants reported beside a task's main accuracy (they are columns, not tasks).
VARIANT_PREFIXES = ("norm_", "flexible_")


def tasks_of(df: pd.DataFrame) -> list[str]:
    """Task names from the main accuracy columns (``validation_accuracy_<task>``)."""
    return [c[len(ACC_PREFIX):] for c in df.columns
            if c.startswith(ACC_PREFIX) and not c[len(ACC_PREFIX):].startswith(VARIANT_PREFIXES)]
