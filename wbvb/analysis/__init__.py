"""Trial results -> results_summary.csv, per-task statistics, paired comparisons, plots and report.md."""
from wbvb.analysis.cli import analyze, main
from wbvb.analysis.results import load_results, tasks_of, write_run_meta, write_timings
from wbvb.analysis.stats import aggregate, compare, select_epoch

__all__ = ["aggregate", "analyze", "compare", "load_results", "main", "select_epoch", "tasks_of", "write_run_meta", "write_timings"]
