"""python -m wbvb.analysis RUN [--compare RUN2 ...]: results -> summary CSV, statistics, plots, report.md.

RUN is a sweep's output folder, its Tune experiment folder (``<run>/tune``) or a
``results_summary.csv``. Works on finished, partial and still-running sweeps.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from wbvb.analysis import plots, stats, tables
from wbvb.analysis.report import first_line, write_report
from wbvb.analysis.results import (SUMMARY_FILE, Run, combine, filter_runs, load_run, load_summary, merge_rows,
                                   summary_runs, write_csv_atomic)


def load_sources(sources: list[Path], run_ids: list[str] | None, since: str | None) -> list[Run]:
    """The runs to analyse: each folder's current run, or, with --run/--since, any run seen there."""
    current, earlier = [], []
    for src in map(Path, sources):
        if src.is_file() and src.suffix == ".csv":
            current += load_summary(src)
            continue
        run = load_run(src)
        summary = run.folder / SUMMARY_FILE
        older = [r for r in summary_runs(summary) if r.run_id != run.run_id]
        write_csv_atomic(merge_rows(pd.concat([r.rows for r in older] + [pd.DataFrame()]), run.rows), summary)
        current.append(run)
        earlier += older
    chosen = filter_runs(current + earlier, run_ids, since) if run_ids or since else current
    return list({r.run_id: r for r in chosen}.values())  # the same run named twice counts once


def _out_dir(sources: list[Path], runs: list[Run], out: Path | None) -> Path:
    if out is not None:
        out = Path(out)
    elif len(runs) == 1:
        out = runs[0].folder
    else:
        first = Path(sources[0])
        out = (first.parent if first.is_file() else runs[0].folder.parent) / "compare"
    out.mkdir(parents=True, exist_ok=True)
    return out


def _loss_trials(run: Run) -> dict[str, Path]:
    """The lowest-seed trial of each distill type that has TensorBoard events."""
    tb = run.folder / "tensorboard"
    trials = {}
    for dt, g in run.rows.sort_values("seed").groupby("distill_type", sort=False):
        for name in g["trial_name"].unique():
            if list((tb / name).glob("events.out.tfevents.*")):
                trials[dt] = tb / name
                break
    return dict(sorted(trials.items(), key=lambda kv: stats.distill_rank(kv[0])))


def analyze(run_dir, expected_trials: int | None = None, quiet: bool = False, epoch: str = "final",
            compare: list | None = None, run_ids: list[str] | None = None, since: str | None = None,
            fmt: str = "text", out_dir: Path | None = None, plot: bool = True) -> dict:
    """Write the summary, aggregate.csv, comparisons.csv, the PNGs and report.md; print the tables."""
    sources = [Path(run_dir)] + [Path(p) for p in (compare or [])]
    runs = load_sources(sources, run_ids, since)
    out = _out_dir(sources, runs, out_dir)
    df = combine(runs)
    combined = out / SUMMARY_FILE
    if (len(runs) > 1 or out != runs[0].folder) and combined.resolve() not in {s.resolve() for s in sources}:
        write_csv_atomic(df, combined)
    selected = drop_failed(stats.select_epoch(df, epoch), runs, epoch)
    teacher_by_run = {r.run_id: r.teacher.get("teacher_accuracy", {}) for r in runs}
    agg = stats.aggregate(selected, teacher_by_run=teacher_by_run)
    # one teacher line per plot panel only when every run had the same teacher accuracy
    same = len({tuple(sorted(t.items())) for t in teacher_by_run.values()}) == 1
    teacher_acc = next(iter(teacher_by_run.values())) if same else {}
    comp = stats.compare(selected)
    across = stats.compare_runs(selected, [r.run_id for r in runs])
    write_csv_atomic(agg, out / "aggregate.csv")
    write_csv_atomic(comp, out / "comparisons.csv")
    if not across.empty:
        write_csv_atomic(across, out / "run_comparisons.csv")
    figures = _plot(runs, df, selected, comp, teacher_acc, epoch, out) if plot else []
    missing = {r.run_id: _missing(r, expected_trials if len(runs) == 1 else None) for r in runs}
    report = write_report(out / "report.md", runs, df, selected, agg, comp, figures, epoch, missing, across)
    table = tables.wide_table(agg, fmt)
    if not quiet:
        which = ("Final validation accuracy" if epoch == "final"
                 else f"Validation accuracy at the {stats.epoch_phrase(epoch)}")
        print(f"\n{which} per distill type and task (mean ± std over seeds):")
        print(table)
        print("\nPaired comparisons (Δ accuracy vs baseline by seed; Holm-corrected over each run's family):")
        print(tables.comparison_table(comp, fmt))
        if not across.empty:
            print(f"\nAcross runs (each distill type vs the same type in {runs[0].run_id}, paired by seed; "
                  "Holm-corrected over these comparisons):")
            print(tables.run_comparison_table(across, fmt))
        for rid, (n_missing, n_expected) in missing.items():
            if n_missing:
                print(f"\nnote: {rid}: {n_missing} of {n_expected} trials missing (no results yet)")
        for run in runs:
            for f in run.failed:
                print(f"\nnote: {run.run_id}: trial {f['trial']} failed, its epochs are kept in {SUMMARY_FILE} but "
                      f"left out of the tables: {first_line(f['error'])}")
        print(f"\nwrote {out / 'report.md'}, aggregate.csv, comparisons.csv and {len(figures)} PNGs in {out}")
    return {"summary": df, "aggregate": agg, "comparisons": comp, "run_comparisons": across, "table": table,
            "n_trials": int(df.groupby("run_id")["trial_name"].nunique().sum()),
            "missing_trials": sum(m for m, _ in missing.values()), "run_ids": [r.run_id for r in runs],
            "report": report, "figures": figures, "out_dir": out}


def _plot(runs: list[Run], df: pd.DataFrame, selected: pd.DataFrame, comp: pd.DataFrame, teacher_acc: dict,
          epoch: str, out: Path) -> list[Path]:
    figures = [plots.accuracy_by_type(selected, teacher_acc, stats.epoch_phrase(epoch), out / "accuracy_by_type.png"),
               plots.learning_curves(df, out / "learning_curves.png"),
               plots.paired_differences(selected, comp, out / "paired_differences.png"),
               plots.loss_components(_loss_trials(runs[0]), runs[0].run_id, out / "loss_components.png")]
    return [f for f in figures if f is not None]


def drop_failed(selected: pd.DataFrame, runs: list[Run], epoch: str) -> pd.DataFrame:
    """A failed trial stopped early: its last or best epoch is not comparable with finished trials'."""
    if epoch not in ("final", "best"):
        return selected  # a fixed epoch it did reach is as good as any other trial's
    gone = {(r.run_id, f["trial"]) for r in runs for f in r.failed}
    keep = [(rid, name) not in gone for rid, name in zip(selected["run_id"], selected["trial_name"])]
    return selected[keep]


def _missing(run: Run, expected: int | None) -> tuple[int, int | None]:
    n = run.rows["trial_name"].nunique()
    expected = expected or run.expected_trials
    return (max(0, expected - n) if expected else 0), expected


def _epoch_arg(text: str) -> str:
    if text in ("final", "best") or text.isdigit() and int(text) > 0:
        return text
    raise argparse.ArgumentTypeError(f"{text!r}: use final, best, or an epoch number like 3")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m wbvb.analysis", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="a sweep's output folder, its tune/ folder, or a results_summary.csv")
    ap.add_argument("--compare", nargs="+", default=[], metavar="RUN",
                    help="more runs to analyse beside RUN (rows keyed by run id, never duplicated)")
    ap.add_argument("--run", action="append", dest="run_ids", metavar="ID",
                    help="keep only this run id (or id prefix); repeatable")
    ap.add_argument("--since", help="keep only runs started at or after this ISO date/time (UTC), e.g. 2026-11-27")
    ap.add_argument("--epoch", default="final", type=_epoch_arg,
                    help="which epoch of each trial: final (default), best (by val_acc: optimistic), or N")
    ap.add_argument("--format", default="text", choices=tables.FORMATS, dest="fmt",
                    help="console table format: text, markdown, or latex (for papers)")
    ap.add_argument("--no-plots", action="store_true", help="skip the PNGs (tables and report.md only)")
    ap.add_argument("--out", type=Path, help="folder for the outputs (default: the run folder; with --compare, "
                                             "a compare/ folder beside the first run)")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        analyze(Path(args.run), epoch=args.epoch, compare=args.compare, run_ids=args.run_ids, since=args.since,
                fmt=args.fmt, out_dir=args.out, plot=not args.no_plots)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
