"""Per-task statistics over seeds: aggregates with t-based CIs and paired, Holm-corrected comparisons.

Accuracy is a fraction in [0, 1]; differences are in the same unit (0.03 = 3 points).
Comparisons pair trials by seed (same data order and init across distill types), so the
seed-to-seed spread shared by both arms cancels: the paired t-test is the primary test, the
Wilcoxon signed-rank test is reported beside it as a check that does not assume normality.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from wbvb.analysis.results import ACC_PREFIX, distill_rank, tasks_of

BASELINES = ("black_box", "sft")
MIN_SEEDS = 3
ALPHA = 0.05
NOT_ENOUGH = "not enough seeds"


def select_epoch(df: pd.DataFrame, epoch: str | int = "final") -> pd.DataFrame:
    """One row per trial: its last epoch, its best epoch (by ``select_acc``, measured on examples held
    out of train, when the run has them; else by ``val_acc``, optimistic), or epoch N."""
    key = ["run_id", "trial_name"]
    if epoch == "final":
        return df.loc[df.groupby(key)["epoch"].idxmax()]
    if epoch == "best":
        by = selection_metric(df)
        return df.loc[df.dropna(subset=[by]).groupby(key)[by].idxmax()]
    n = int(epoch)
    rows = df[df["epoch"] == n]
    if rows.empty:
        raise ValueError(f"--epoch {n}: no trial reported epoch {n} (epochs seen: {sorted(df['epoch'].unique())})")
    return rows


def selection_metric(df: pd.DataFrame) -> str:
    """``select_acc`` when every row has it (tasks[i].n_select), else ``val_acc``."""
    return "select_acc" if "select_acc" in df and df["select_acc"].notna().all() else "val_acc"


def epoch_phrase(epoch: str | int) -> str:
    """How the chosen epoch reads in titles: "final epoch", "best epoch (by val_acc)", "epoch 3"."""
    return {"final": "final epoch", "best": "best epoch (by val_acc)"}.get(str(epoch), f"epoch {epoch}")


def t_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Two-sided t confidence interval of the mean; NaNs when n < 2."""
    n = len(values)
    if n < 2:
        return float("nan"), float("nan")
    mean, sem = float(np.mean(values)), float(np.std(values, ddof=1)) / math.sqrt(n)
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sem
    return mean - half, mean + half


def metric_columns(df: pd.DataFrame) -> list[tuple[str, str]]:
    """(task label, column): each task, then ``all`` for the example-weighted ``val_acc``."""
    return [(t, ACC_PREFIX + t) for t in tasks_of(df)] + [("all", "val_acc")]


def aggregate(selected: pd.DataFrame, teacher_accuracy: dict | None = None,
              teacher_by_run: dict[str, dict] | None = None) -> pd.DataFrame:
    """Per run x distill type x task: n, mean, std, 95% CI, min, max; teacher as a reference row.

    ``teacher_accuracy`` ({task: acc}) applies to every run; ``teacher_by_run`` gives each run its own.
    """
    out = []
    for task, col in metric_columns(selected):
        for (run_id, dt), g in selected.groupby(["run_id", "distill_type"], sort=False):
            vals = g[col].dropna().to_numpy(dtype=float)
            if not len(vals):
                continue
            lo, hi = t_interval(vals)
            out.append({"run_id": run_id, "distill_type": dt, "task": task, "n": len(vals),
                        "mean": vals.mean(), "std": vals.std(ddof=1) if len(vals) > 1 else float("nan"),
                        "ci_low": lo, "ci_high": hi, "min": vals.min(), "max": vals.max(),
                        "reference": dt == "sft"})
    for run_id in selected["run_id"].unique():
        for task, acc in ((teacher_by_run or {}).get(run_id) or teacher_accuracy or {}).items():
            out.append({"run_id": run_id, "distill_type": "teacher", "task": task, "n": 1, "mean": acc,
                        "std": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"),
                        "min": acc, "max": acc, "reference": True})
    agg = pd.DataFrame(out)
    if agg.empty:
        return agg
    agg["_task"] = agg["task"].map({t: i for i, (t, _) in enumerate(metric_columns(selected))}).fillna(99)
    agg["_type"] = agg["distill_type"].map(lambda d: 99 if d == "teacher" else distill_rank(d))
    return agg.sort_values(["run_id", "_task", "_type"]).drop(columns=["_task", "_type"]).reset_index(drop=True)


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1); NaNs stay NaN."""
    idx = [i for i, p in enumerate(pvalues) if not math.isnan(p)]
    order = sorted(idx, key=lambda i: pvalues[i])
    m, running, adj = len(order), 0.0, [float("nan")] * len(pvalues)
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adj[i] = running
    return adj


def paired_test(diffs: np.ndarray) -> dict:
    """Mean difference, its 95% CI, paired t and Wilcoxon p-values, Cohen's d_z for one pairing."""
    n = len(diffs)
    res = {"n": n, "mean_diff": float(np.mean(diffs)) if n else float("nan")}
    if n < MIN_SEEDS:
        return res | {"ci_low": float("nan"), "ci_high": float("nan"), "p_ttest": float("nan"),
                      "p_wilcoxon": float("nan"), "cohens_dz": float("nan"),
                      "status": f"{NOT_ENOUGH} (n={n}, need {MIN_SEEDS})"}
    lo, hi = t_interval(diffs)
    sd = float(np.std(diffs, ddof=1))
    if sd == 0.0:  # every seed moved by the same amount: no spread to test against
        p_t = 1.0 if res["mean_diff"] == 0 else 0.0
        dz = float("nan") if res["mean_diff"] == 0 else math.copysign(math.inf, res["mean_diff"])
    else:
        p_t = float(stats.ttest_1samp(diffs, 0.0).pvalue)
        dz = res["mean_diff"] / sd
    p_w = 1.0 if not np.any(diffs) else float(stats.wilcoxon(diffs).pvalue)
    return res | {"ci_low": lo, "ci_high": hi, "p_ttest": p_t, "p_wilcoxon": p_w, "cohens_dz": dz, "status": "ok"}


def compare(selected: pd.DataFrame) -> pd.DataFrame:
    """Each distill type vs ``black_box`` and vs ``sft``, per task, paired by seed, Holm per run.

    The family (for Holm) is every tested comparison of one run over its tasks; ``sft`` vs
    ``black_box`` appears once (as ``black_box`` vs ``sft``).
    """
    rows = []
    for run_id, run in selected.groupby("run_id", sort=False):
        types = sorted(run["distill_type"].unique(), key=distill_rank)
        family = []
        for baseline in BASELINES:
            if baseline not in types:
                continue
            for dt in types:
                if dt == baseline or (baseline == "black_box" and dt == "sft"):
                    continue
                for task, col in metric_columns(run):
                    if task == "all":
                        continue  # the blend of the tasks is not a separate claim
                    a = run[run.distill_type == dt].set_index("seed")[col].dropna()
                    b = run[run.distill_type == baseline].set_index("seed")[col].dropna()
                    seeds = sorted(set(a.index) & set(b.index))
                    diffs = (a.loc[seeds] - b.loc[seeds]).to_numpy(dtype=float)
                    family.append({"run_id": run_id, "task": task, "distill_type": dt, "baseline": baseline,
                                   "mean": float(a.loc[seeds].mean()) if seeds else float("nan"),
                                   "baseline_mean": float(b.loc[seeds].mean()) if seeds else float("nan"),
                                   **paired_test(diffs)})
        for key in ("p_ttest", "p_wilcoxon"):
            for r, p in zip(family, holm([r[key] for r in family])):
                r[key + "_holm"] = p
        for r in family:
            r["family_size"] = sum(1 for f in family if f["status"] == "ok")
            r["significant"] = bool(r["status"] == "ok" and r["p_ttest_holm"] < ALPHA)
        rows += family
    cols = ["run_id", "task", "distill_type", "baseline", "n", "mean", "baseline_mean", "mean_diff", "ci_low",
            "ci_high", "p_ttest", "p_ttest_holm", "p_wilcoxon", "p_wilcoxon_holm", "cohens_dz", "significant",
            "family_size", "status"]
    comp = pd.DataFrame(rows, columns=cols)
    if comp.empty:
        return comp
    order = {t: i for i, (t, _) in enumerate(metric_columns(selected))}
    keys = comp.assign(_run=comp["run_id"].map({r: i for i, r in enumerate(selected["run_id"].unique())}),
                       _task=comp["task"].map(order), _base=comp["baseline"].map(BASELINES.index),
                       _type=comp["distill_type"].map(distill_rank))
    return comp.loc[keys.sort_values(["_run", "_task", "_base", "_type"]).index].reset_index(drop=True)


def significance_mark(p_holm: float) -> str:
    if math.isnan(p_holm):
        return ""
    return "***" if p_holm < 0.001 else "**" if p_holm < 0.01 else "*" if p_holm < ALPHA else "ns"
