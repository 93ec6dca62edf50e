"""python -m wbvb.analysis RUN_DIR: Tune results -> results_summary.csv and the aggregate table.

Reads every trial's ``result.json`` (one JSON line per epoch report) under the run folder, so it
works on finished, partial and still-running sweeps. The summary is rebuilt from those files
each time and written atomically: re-running never duplicates or loses rows.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path

import pandas as pd

ACC_PREFIX = "validation_accuracy_"
METRICS = ["epoch", "train_loss", "task_loss", "kd_loss", "align_hidden_loss", "align_attn_loss",
           "validation_loss", "val_acc", "tokens_per_s"]
DISTILL_ORDER = ["sft", "seq_kd", "black_box", "hidden_state", "attention", "combined"]


def _result_files(path: Path) -> list[Path]:
    return sorted(path.rglob("result.json"))


def load_results(path: Path) -> pd.DataFrame:
    """One row per (trial, epoch) from the trials' result.json files under ``path``."""
    rows = []
    for f in _result_files(Path(path)):
        for line in f.read_text().splitlines():
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line being written right now by a running trial
            cfg = r.get("config", {})
            row = {"trial_id": r.get("trial_id"), "trial_name": f.parent.name,
                   "distill_type": cfg.get("distill_type"), "seed": cfg.get("seed")}
            row.update({k: r.get(k) for k in METRICS})
            row.update({k: v for k, v in r.items() if k.startswith(ACC_PREFIX)})
            row["wall_time_s"] = r.get("time_total_s")
            rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    return df.sort_values(["distill_type", "seed", "epoch"], key=_distill_sort_key).reset_index(drop=True)


def _distill_sort_key(col: pd.Series) -> pd.Series:
    if col.name == "distill_type":
        return col.map(lambda d: DISTILL_ORDER.index(d) if d in DISTILL_ORDER else len(DISTILL_ORDER))
    return col


def tasks_of(df: pd.DataFrame) -> list[str]:
    return [c[len(ACC_PREFIX):] for c in df.columns if c.startswith(ACC_PREFIX)]


def final_epoch_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Each trial's last reported epoch."""
    return df.loc[df.groupby("trial_name")["epoch"].idxmax()]


def aggregate(df: pd.DataFrame, teacher_accuracy: dict | None = None) -> pd.DataFrame:
    """Per distill type x task: n, mean and std (over seeds) of the final validation accuracy."""
    final = final_epoch_rows(df)
    out = []
    for task in tasks_of(df) + ["val_acc"]:
        col = task if task == "val_acc" else ACC_PREFIX + task
        for dt, g in final.groupby("distill_type", sort=False):
            vals = g[col].dropna()
            out.append({"distill_type": dt, "task": "all" if task == "val_acc" else task, "n": len(vals),
                        "mean": vals.mean(), "std": vals.std(ddof=1) if len(vals) > 1 else float("nan")})
    for task, acc in (teacher_accuracy or {}).items():
        out.append({"distill_type": "teacher", "task": task, "n": 1, "mean": acc, "std": float("nan")})
    agg = pd.DataFrame(out)
    if agg.empty:
        return agg
    return agg.sort_values(["task", "distill_type"], key=_distill_sort_key).reset_index(drop=True)


def format_table(agg: pd.DataFrame) -> str:
    """Rows: distill types (teacher last); columns: tasks; cells: mean ± std (n)."""
    if agg.empty:
        return "(no results yet)"
    tasks = [t for t in agg["task"].unique() if t != "all"] + (["all"] if "all" in set(agg["task"]) else [])
    types = sorted(agg["distill_type"].unique(),
                   key=lambda d: (d == "teacher", DISTILL_ORDER.index(d) if d in DISTILL_ORDER else 99))

    def cell(dt, task):
        r = agg[(agg.distill_type == dt) & (agg.task == task)]
        if r.empty:
            return "-"
        r = r.iloc[0]
        if dt == "teacher":
            return f"{r['mean']:.3f}"
        std = "" if math.isnan(r["std"]) else f" ± {r['std']:.3f}"
        return f"{r['mean']:.3f}{std} (n={int(r['n'])})"

    header = ["distill_type"] + tasks
    body = [[dt] + [cell(dt, t) for t in tasks] for dt in types]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(b) for b in body])


def _write_csv_atomic(df: pd.DataFrame, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".csv", dir=path.parent)
    os.close(fd)
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)


def analyze(run_dir: Path, expected_trials: int | None = None, quiet: bool = False) -> dict:
    """Rebuild results_summary.csv and aggregate.csv in ``run_dir``; print the table."""
    run_dir = Path(run_dir)
    if run_dir.is_file() and run_dir.suffix == ".csv":
        df, run_dir = pd.read_csv(run_dir), run_dir.parent
    else:
        if not run_dir.is_dir():
            raise FileNotFoundError(f"{run_dir}: no such run folder (pass a sweep's output folder)")
        df = load_results(run_dir)
    teacher_file = run_dir / "teacher.json"
    teacher = json.loads(teacher_file.read_text()) if teacher_file.is_file() else {}
    if df.empty:
        raise FileNotFoundError(f"{run_dir}: no trial results (result.json) found yet")
    summary = run_dir / "results_summary.csv"
    _write_csv_atomic(df, summary)
    agg = aggregate(df, teacher.get("teacher_accuracy"))
    _write_csv_atomic(agg, run_dir / "aggregate.csv")
    table = format_table(agg)
    n_trials = df["trial_name"].nunique()
    if not quiet:
        print("\nFinal validation accuracy per distill type and task (mean ± std over seeds):")
        print(table)
        if expected_trials and n_trials < expected_trials:
            print(f"\nnote: {expected_trials - n_trials} of {expected_trials} trials have no results yet")
        print(f"\nwrote {summary} ({len(df)} rows) and {run_dir / 'aggregate.csv'}")
    return {"summary": df, "aggregate": agg, "table": table, "n_trials": n_trials}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m wbvb.analysis", description=__doc__)
    ap.add_argument("run", help="a sweep's output folder (holding tune/ and teacher.json)")
    args = ap.parse_args(argv)
    try:
        analyze(Path(args.run))
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
