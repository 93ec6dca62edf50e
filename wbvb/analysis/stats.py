"""Per-task statistics over seeds: aggregates with t-based CIs and paired, Holm-corrected comparisons.

Accuracy is a fraction in [0, 1]; differences are in the same unit (0.03 = 3 points).
Comparisons pair trials by seed (same data order and init across distill types), so the
seed-to-seed spread shared by both arms cancels: the paired t-test is the primary test, the
Wilcoxon signed-rank test is reported beside it as a check that does not assume normality.
Accuracies are fractions k/N, and are compared as such: in floating point 669/872 - 665/872 and
681/872 - 677/872 differ, which would split a tie and change the Wilcoxon ranks.
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from wbvb.analysis.results import ACC_PREFIX, distill_rank, tasks_of

BASELINES = ("black_box", "sft")
MIN_SEEDS = 3
ALPHA = 0.05
NOT_ENOUGH = "not enough seeds"
MAX_EXAMPLES = 10 ** 6  # an accuracy is k/N with N at most this: distinct such fractions differ by > 1e-12


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


def exact_fraction(x: float | Fraction) -> Fraction:
    """An accuracy as the fraction k/N it stands for (N <= MAX_EXAMPLES); a Fraction is kept as is."""
    return x if isinstance(x, Fraction) else Fraction(float(x)).limit_denominator(MAX_EXAMPLES)


def exact_differences(a: Sequence[float], b: Sequence[float]) -> list[Fraction]:
    """Paired accuracy differences, exact: equal differences compare equal."""
    return [exact_fraction(x) - exact_fraction(y) for x, y in zip(a, b)]


def _doubled_midranks(values: list[Fraction]) -> list[int]:
    """2 x the midrank of each value (ties share the mean of their ranks); integers, so exact."""
    order = sorted(range(len(values)), key=values.__getitem__)
    out, i = [0] * len(values), 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for m in order[i:j + 1]:
            out[m] = (i + 1) + (j + 1)
        i = j + 1
    return out


def wilcoxon_exact(diffs: Sequence[Fraction]) -> float:
    """Two-sided exact Wilcoxon signed-rank p, ties given midranks, zero differences dropped
    (scipy's zero_method="wilcox"): the share of the 2^n sign assignments whose W+ lies at least as
    far from its mean as the observed one. Without ties it equals scipy's method="exact"."""
    d = [x for x in diffs if x != 0]
    if not d:
        return 1.0
    ranks = _doubled_midranks([abs(x) for x in d])
    total, observed = sum(ranks), sum(r for r, x in zip(ranks, d) if x > 0)
    prob = np.zeros(total + 1)  # prob[s]: share of the sign assignments with doubled W+ = s
    prob[0] = 1.0
    for r in ranks:  # each rank's sign is + or - with probability 1/2
        prob = 0.5 * (prob + np.concatenate([np.zeros(r), prob[:-r]]))
    extreme = np.abs(2 * np.arange(total + 1) - total) >= abs(2 * observed - total)
    return float(min(1.0, prob[extreme].sum()))


def wilcoxon_floor(n_nonzero: int) -> float:
    """The smallest two-sided exact Wilcoxon p with n non-zero differences (ties or not): only the
    two assignments with every sign alike are that extreme, so 2 / 2^n."""
    return min(1.0, 2.0 / 2 ** n_nonzero)


def paired_test(diffs: Sequence[float | Fraction]) -> dict:
    """Mean difference, its 95% CI, paired t and Wilcoxon p-values, Cohen's d_z for one pairing.

    ``diffs`` may be floats (each read as the nearest fraction k/N) or exact Fractions."""
    exact = [exact_fraction(x) for x in diffs]
    diffs = np.array([float(x) for x in exact], dtype=float)
    n = len(diffs)
    nonzero = sum(1 for x in exact if x != 0)
    res = {"n": n, "mean_diff": float(np.mean(diffs)) if n else float("nan"), "wilcoxon_n": nonzero,
           "p_wilcoxon_floor": wilcoxon_floor(nonzero)}
    if n < MIN_SEEDS:
        return res | {"ci_low": float("nan"), "ci_high": float("nan"), "p_ttest": float("nan"),
                      "p_wilcoxon": float("nan"), "cohens_dz": float("nan"),
                      "status": f"{NOT_ENOUGH} (n={n}, need {MIN_SEEDS})"}
    lo, hi = t_interval(diffs)
    sd = float(np.std(diffs, ddof=1))
    if len(set(exact)) == 1:  # every seed moved by the same amount: no spread to test against
        p_t = 1.0 if res["mean_diff"] == 0 else 0.0
        dz = float("nan") if res["mean_diff"] == 0 else math.copysign(math.inf, res["mean_diff"])
    else:
        p_t = float(stats.ttest_1samp(diffs, 0.0).pvalue)
        dz = res["mean_diff"] / sd
    return res | {"ci_low": lo, "ci_high": hi, "p_ttest": p_t, "p_wilcoxon": wilcoxon_exact(exact),
                  "cohens_dz": dz, "status": "ok"}


def _by_seed(arm: pd.DataFrame, baseline: pd.DataFrame, col: str) -> tuple[pd.Series, pd.Series]:
    """The two arms' ``col`` on the seeds both have (NaNs dropped), in seed order: the pairs."""
    a, b = arm.set_index("seed")[col].dropna(), baseline.set_index("seed")[col].dropna()
    seeds = sorted(set(a.index) & set(b.index))
    return a.loc[seeds], b.loc[seeds]


def _paired(a: pd.Series, b: pd.Series) -> dict:
    """Both arms' means over the paired seeds and the paired test of their differences."""
    return {"mean": float(a.mean()) if len(a) else float("nan"),
            "baseline_mean": float(b.mean()) if len(b) else float("nan"),
            **paired_test(exact_differences(a, b))}


def _add_holm(family: list[dict]) -> None:
    """Holm-adjusted t and Wilcoxon p-values over one family of comparisons, in place."""
    for key in ("p_ttest", "p_wilcoxon"):
        for r, p in zip(family, holm([r[key] for r in family])):
            r[key + "_holm"] = p


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
                    a, b = _by_seed(run[run.distill_type == dt], run[run.distill_type == baseline], col)
                    family.append({"run_id": run_id, "task": task, "distill_type": dt, "baseline": baseline,
                                   **_paired(a, b)})
        _add_holm(family)
        tested = [f for f in family if f["status"] == "ok"]
        # every Holm-adjusted p is >= m x the smallest raw p in the family, so >= m x its smallest floor
        holm_floor = min(1.0, len(tested) * min((f["p_wilcoxon_floor"] for f in tested), default=1.0))
        for r in family:
            r["family_size"] = len(tested)
            r["p_wilcoxon_holm_floor"] = holm_floor if r["status"] == "ok" else float("nan")
            r["significant"] = bool(r["status"] == "ok" and r["p_ttest_holm"] < ALPHA)
        rows += family
    cols = ["run_id", "task", "distill_type", "baseline", "n", "mean", "baseline_mean", "mean_diff", "ci_low",
            "ci_high", "p_ttest", "p_ttest_holm", "p_wilcoxon", "p_wilcoxon_holm", "cohens_dz", "significant",
            "family_size", "wilcoxon_n", "p_wilcoxon_floor", "p_wilcoxon_holm_floor", "status"]
    comp = pd.DataFrame(rows, columns=cols)
    if comp.empty:
        return comp
    order = {t: i for i, (t, _) in enumerate(metric_columns(selected))}
    keys = comp.assign(_run=comp["run_id"].map({r: i for i, r in enumerate(selected["run_id"].unique())}),
                       _task=comp["task"].map(order), _base=comp["baseline"].map(BASELINES.index),
                       _type=comp["distill_type"].map(distill_rank))
    return comp.loc[keys.sort_values(["_run", "_task", "_base", "_type"]).index].reset_index(drop=True)


def compare_runs(selected: pd.DataFrame, order: Sequence[str] | None = None) -> pd.DataFrame:
    """The same distill type across runs (e.g. one recipe with two hidden-loss choices): each later run
    vs the first, per type and task, paired by seed, Holm-corrected over all of these comparisons.

    Pairing by seed assumes the runs share the data order and init of a seed, which they do when only
    the varied setting differs. ``order``: the run ids as given (the first is the reference). Empty for
    a single run."""
    present = set(selected["run_id"])
    runs = [r for r in (order or selected["run_id"].unique()) if r in present]
    if len(runs) < 2:
        return pd.DataFrame()
    ref = selected[selected.run_id == runs[0]]
    family = []
    for other in runs[1:]:
        run = selected[selected.run_id == other]
        for dt in sorted(set(ref["distill_type"]) & set(run["distill_type"]), key=distill_rank):
            for task, col in metric_columns(selected):
                if task == "all" or col not in ref or col not in run:
                    continue
                a, b = _by_seed(run[run.distill_type == dt], ref[ref.distill_type == dt], col)
                if len(a):
                    family.append({"run_id": other, "baseline_run": runs[0], "task": task, "distill_type": dt,
                                   **_paired(a, b)})
    _add_holm(family)
    for r in family:
        r["significant"] = bool(r["status"] == "ok" and r["p_ttest_holm"] < ALPHA)
    return pd.DataFrame(family)


def unreachable(floor: float) -> bool:
    """True where a test's smallest attainable p is not below ALPHA: "ns" would say nothing."""
    return not math.isnan(floor) and floor >= ALPHA


def significance_mark(p_holm: float) -> str:
    if math.isnan(p_holm):
        return ""
    return "***" if p_holm < 0.001 else "**" if p_holm < 0.01 else "*" if p_holm < ALPHA else "ns"
