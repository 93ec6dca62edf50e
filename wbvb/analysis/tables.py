"""Tables as text (console), Markdown (report.md) or LaTeX (papers) from the same cells."""
from __future__ import annotations

import math

import pandas as pd

from wbvb.analysis.results import distill_rank
from wbvb.analysis.stats import ALPHA, significance_mark, unreachable, wilcoxon_floor

FORMATS = ("text", "markdown", "latex")
RAW_MARK, HOLM_MARK = "†", "‡"  # the Wilcoxon cannot reach ALPHA at this n / after Holm over the family


def _latex(s: str) -> str:
    return (s.replace("_", r"\_").replace("±", r"$\pm$").replace("%", r"\%").replace("<", r"$<$")
            .replace(RAW_MARK, r"$^\dagger$").replace(HOLM_MARK, r"$^\ddagger$"))


def render(header: list[str], body: list[list[str]], fmt: str = "text") -> str:
    if fmt not in FORMATS:
        raise ValueError(f"table format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in body])
    if fmt == "latex":
        lines = [r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}", r"\toprule",
                 " & ".join(_latex(h) for h in header) + r" \\", r"\midrule"]
        lines += [" & ".join(_latex(c) for c in r) + r" \\" for r in body]
        return "\n".join(lines + [r"\bottomrule", r"\end{tabular}"])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(b) for b in body])


def _num(x: float, digits: int = 3, sign: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "+inf" if x > 0 else "-inf"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def _p(x: float) -> str:
    if math.isnan(x):
        return "-"
    return "<0.001" if x < 0.001 else f"{x:.3f}"


def _types(agg: pd.DataFrame) -> list[str]:
    return sorted(agg["distill_type"].unique(), key=lambda d: (d == "teacher", distill_rank(d)))


def _runs(df: pd.DataFrame) -> list[str]:
    return list(df["run_id"].unique())


def wide_table(agg: pd.DataFrame, fmt: str = "text") -> str:
    """Rows: distill types (teacher last; one block per run); columns: tasks; cells: mean ± std (n)."""
    if agg.empty:
        return "(no results yet)"
    tasks = list(dict.fromkeys(agg["task"]))
    tasks = [t for t in tasks if t != "all"] + (["all"] if "all" in tasks else [])
    many = len(_runs(agg)) > 1

    def cell(rows, dt, task):
        r = rows[(rows.distill_type == dt) & (rows.task == task)]
        if r.empty:
            return "-"
        r = r.iloc[0]
        if dt == "teacher":
            return _num(r["mean"])
        std = "" if math.isnan(r["std"]) else f" ± {r['std']:.3f}"
        return f"{r['mean']:.3f}{std} (n={int(r['n'])})"

    body = []
    for run_id in _runs(agg):
        rows = agg[agg.run_id == run_id]
        body += [([run_id] if many else []) + [dt] + [cell(rows, dt, t) for t in tasks] for dt in _types(rows)]
    return render((["run"] if many else []) + ["distill_type"] + tasks, body, fmt)


def aggregate_table(agg: pd.DataFrame, fmt: str = "markdown") -> str:
    """Long form: one row per (task, distill type) with n, mean, std, 95% CI, min, max."""
    many = len(_runs(agg)) > 1
    body = []
    for _, r in agg.iterrows():
        ref = " (ref)" if r["reference"] else ""
        ci = "-" if math.isnan(r["ci_low"]) else f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
        body.append(([r["run_id"]] if many else []) + [r["task"], r["distill_type"] + ref, str(int(r["n"])),
                    _num(r["mean"]), _num(r["std"]), ci, _num(r["min"]), _num(r["max"])])
    header = (["run"] if many else []) + ["task", "distill type", "n", "mean", "std", "95% CI", "min", "max"]
    return render(header, body, fmt)


def _wilcoxon_marks(r) -> tuple[str, str]:
    """Marks for the raw and Holm Wilcoxon cells where that p cannot go below ALPHA at all."""
    raw = RAW_MARK if unreachable(r["p_wilcoxon_floor"]) else ""
    return raw, raw or (HOLM_MARK if unreachable(r["p_wilcoxon_holm_floor"]) else "")


def wilcoxon_notes(comp: pd.DataFrame) -> list[str]:
    """One line per n (and per Holm family) at which the Wilcoxon cannot reach ALPHA."""
    ok = comp[comp["status"] == "ok"]
    notes = []
    for n in sorted(ok.loc[ok["p_wilcoxon_floor"].map(unreachable), "wilcoxon_n"].unique()):
        notes.append(f"{RAW_MARK} n={int(n)}: Wilcoxon cannot reach p<{ALPHA:g} (its smallest two-sided p with "
                     f"{int(n)} non-zero differences is {wilcoxon_floor(int(n)):.4f})")
    holm = ok[ok["p_wilcoxon_holm_floor"].map(unreachable) & ~ok["p_wilcoxon_floor"].map(unreachable)]
    for (m, floor), _ in holm.groupby(["family_size", "p_wilcoxon_holm_floor"]):
        notes.append(f"{HOLM_MARK} Holm over {int(m)} comparisons: Wilcoxon cannot reach p<{ALPHA:g} "
                     f"(its smallest corrected p is {floor:.3f})")
    return notes


def comparison_table(comp: pd.DataFrame, fmt: str = "markdown") -> str:
    """One row per comparison: Δ accuracy with 95% CI, p-values (raw and Holm), d_z, mark; below
    it, where the Wilcoxon cannot reach significance at the run's n, a note saying so."""
    if comp.empty:
        return "(no comparisons: the sweep has neither black_box nor sft, or a single distill type)"
    many = len(_runs(comp)) > 1
    body = []
    for _, r in comp.iterrows():
        ok = r["status"] == "ok"
        ci = f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]" if ok else "-"
        mark = significance_mark(r["p_ttest_holm"]) if ok else r["status"]
        w_raw, w_holm = _wilcoxon_marks(r) if ok else ("", "")
        body.append(([r["run_id"]] if many else []) + [
            r["task"], f"{r['distill_type']} vs {r['baseline']}", str(int(r["n"])), _num(r["mean_diff"], sign=True),
            ci, _p(r["p_ttest"]), _p(r["p_ttest_holm"]), _p(r["p_wilcoxon"]) + w_raw, _p(r["p_wilcoxon_holm"]) + w_holm,
            _num(r["cohens_dz"], 2), mark])
    header = (["run"] if many else []) + ["task", "comparison", "n pairs", "Δ acc", "95% CI", "p (t)",
                                          "p (t, Holm)", "p (Wilcoxon)", "p (W, Holm)", "d_z", "sig."]
    notes = [_latex(n) for n in wilcoxon_notes(comp)] if fmt == "latex" else wilcoxon_notes(comp)
    return render(header, body, fmt) + ("\n\n" + ("\n\n" if fmt == "markdown" else "\n").join(notes) if notes else "")


def run_comparison_table(comp: pd.DataFrame, fmt: str = "markdown") -> str:
    """One row per (run, distill type, task): Δ accuracy against the first run, paired by seed."""
    if comp.empty:
        return "(a single run: nothing to compare across runs)"
    body = []
    for _, r in comp.iterrows():
        ok = r["status"] == "ok"
        body.append([r["task"], r["distill_type"], f"{r['run_id']} vs {r['baseline_run']}", str(int(r["n"])),
                     _num(r["baseline_mean"]), _num(r["mean"]), _num(r["mean_diff"], sign=True),
                     f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]" if ok else "-", _p(r["p_ttest"]),
                     _p(r["p_ttest_holm"]), _p(r["p_wilcoxon"]),
                     significance_mark(r["p_ttest_holm"]) if ok else r["status"]])
    header = ["task", "distill type", "runs", "n pairs", "first run", "this run", "Δ acc", "95% CI", "p (t)",
              "p (t, Holm)", "p (Wilcoxon)", "sig."]
    return render(header, body, fmt)
