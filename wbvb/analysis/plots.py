"""PNG figures a reader can take in without a legend hunt: every panel says what, in which unit, over what.

Matplotlib runs on the Agg backend (no display needed: sweeps run on headless machines).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from wbvb.analysis.results import distill_rank  # noqa: E402
from wbvb.analysis.stats import MIN_SEEDS, metric_columns, significance_mark, t_interval  # noqa: E402

_RUN_STYLES = ["-", "--", "-.", ":"]
ACC_UNIT = "validation accuracy (fraction correct)"
COLORS = {"sft": "#7f7f7f", "seq_kd": "#8c564b", "black_box": "#1f77b4", "hidden_state": "#2ca02c",
          "attention": "#d62728", "combined": "#9467bd"}
PART_LABELS = {"train/loss": "total (weighted sum)", "train/task_loss": "task CE", "train/kd_loss": "top-k KD",
               "train/hidden_loss": "hidden alignment", "train/attention_loss": "attention alignment"}
PART_COLORS = {"train/loss": "black", "train/task_loss": "#ff7f0e", "train/kd_loss": COLORS["black_box"],
               "train/hidden_loss": COLORS["hidden_state"], "train/attention_loss": COLORS["attention"]}


def _arms(df: pd.DataFrame) -> list[tuple[str, str]]:
    """(run id, distill type) per plotted group, grouped by run (see _mark_runs)."""
    keys = df[["run_id", "distill_type"]].drop_duplicates()
    runs = list(dict.fromkeys(df["run_id"]))
    keys = sorted(keys.itertuples(index=False), key=lambda k: (runs.index(k.run_id), distill_rank(k.distill_type)))
    return [(k.run_id, k.distill_type) for k in keys]


def _run_spans(run_of_x: list[str]) -> list[tuple[str, int, int]]:
    """(run id, first x, last x) of each run's consecutive group of positions."""
    spans = []
    for x, rid in enumerate(run_of_x):
        if spans and spans[-1][0] == rid:
            spans[-1] = (rid, spans[-1][1], x)
        else:
            spans.append((rid, x, x))
    return spans


def _mark_runs(ax, run_of_x: list[str]) -> None:
    """With several runs: a separator between their groups and each run id under its group, inside the panel."""
    spans = _run_spans(run_of_x)
    if len(spans) < 2:
        return
    for rid, first, last in spans:
        if first:
            ax.axvline(first - 0.5, color="black", lw=0.8, ls="-", alpha=0.6)
        ax.annotate(f"run {rid}", ((first + last) / 2, 0.01), xycoords=("data", "axes fraction"), ha="center",
                    va="bottom", fontsize=7, color="#444444")


def _panel_width(n_positions: int) -> float:
    return max(4.6, 0.42 * n_positions + 2.0)


def _accuracy_ci(vals: np.ndarray) -> tuple[float, float]:
    """The t-CI clipped to [0, 1] (accuracy cannot leave it); NaNs below MIN_SEEDS, where a t-CI on
    2 seeds (t = 12.7) spans most of the axis and hides the data rather than describing it."""
    if len(vals) < MIN_SEEDS:
        return float("nan"), float("nan")
    lo, hi = t_interval(vals)
    return max(lo, 0.0), min(hi, 1.0)


def _grid(n: int, width: float = 4.6, height: float = 3.8):
    cols = max(1, min(n, 3, int(16 // width)))  # at most ~16 inches wide: wide panels stack instead
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def accuracy_by_type(selected: pd.DataFrame, teacher_accuracy: dict, epoch_phrase: str, path: Path) -> Path:
    """Per task: each seed as a dot, mean as a bar-free marker with its 95% CI; teacher and sft lines."""
    tasks = metric_columns(selected)
    arms = _arms(selected)
    fig, axes = _grid(len(tasks), width=_panel_width(len(arms)))
    rng = np.random.default_rng(0)
    for ax, (task, col) in zip(axes, tasks):
        for x, (run_id, dt) in enumerate(arms):
            vals = selected[(selected.run_id == run_id) & (selected.distill_type == dt)][col].dropna().to_numpy(float)
            if not len(vals):
                continue
            color = COLORS.get(dt, "#333333")
            ax.scatter(x + rng.uniform(-0.12, 0.12, len(vals)), vals, s=14, color=color, alpha=0.45, zorder=2)
            lo, hi = _accuracy_ci(vals)
            mean = vals.mean()
            yerr = None if np.isnan(lo) else [[mean - lo], [hi - mean]]
            ax.errorbar(x + 0.25, mean, yerr=yerr, fmt="D", color=color, ms=6, capsize=5, lw=1.8, zorder=3)
        _sft_lines(ax, selected, col, [a[0] for a in arms])
        _teacher_line(ax, (teacher_accuracy or {}).get(task))
        ax.set_xticks(range(len(arms)), [a[1] for a in arms], rotation=30, ha="right", fontsize=8)
        ax.set_xlim(-0.5, len(arms) - 0.3)
        _mark_runs(ax, [a[0] for a in arms])
        ax.set_title(task if task != "all" else "all tasks (example-weighted val_acc)", fontsize=10)
        ax.set_ylabel(ACC_UNIT, fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    n = selected.groupby(["run_id", "distill_type"]).size()
    n_text = (f"n = {n.min()}" if n.min() == n.max() else f"n = {n.min()}–{n.max()}") + " seeds per type"
    if n.min() < MIN_SEEDS:
        n_text += f"; no CI where n < {MIN_SEEDS}"
    fig.suptitle(f"Accuracy at the {epoch_phrase} by distill type — dots: one per seed; diamond: mean "
                 f"with 95% t-CI ({n_text})\ndashed: teacher; dotted: sft mean; y axes differ per "
                 "panel; these CIs are not paired by seed (see paired_differences.png for the tests)", fontsize=10)
    return _save(fig, path)


def _sft_lines(ax, selected: pd.DataFrame, col: str, run_of_x: list[str]) -> None:
    """The sft mean of each run across that run's group (labelled right of the panel when there is one run)."""
    spans = _run_spans(run_of_x)
    for rid, first, last in spans:
        sft = selected[(selected.run_id == rid) & (selected.distill_type == "sft")][col].dropna()
        if not len(sft):
            continue
        if len(spans) == 1:
            ax.axhline(sft.mean(), color=COLORS["sft"], ls=":", lw=1.3)
            ax.annotate(f"sft\n{sft.mean():.3f}", (1.01, sft.mean()), xycoords=("axes fraction", "data"),
                        va="center", fontsize=7, color=COLORS["sft"], annotation_clip=False)
        else:
            ax.hlines(sft.mean(), first - 0.45, last + 0.45, color=COLORS["sft"], ls=":", lw=1.3)


def _teacher_line(ax, teacher: float | None) -> None:
    """Teacher accuracy, labelled right of the panel; a teacher far above the data is named, not drawn,
    so that it does not squash the differences between distill types into a few pixels."""
    if teacher is None:
        return
    lo, hi = ax.get_ylim()
    if teacher > hi + 0.5 * (hi - lo) or teacher < lo - 0.5 * (hi - lo):
        ax.annotate(f"teacher {teacher:.3f}\n(off scale {'above' if teacher > hi else 'below'})",
                    (1.01, 1.0 if teacher > hi else 0.0), xycoords="axes fraction", va="top" if teacher > hi else "bottom",
                    fontsize=7, annotation_clip=False)
        return
    ax.axhline(teacher, color="black", ls="--", lw=1.2)
    ax.annotate(f"teacher\n{teacher:.3f}", (1.01, teacher), xycoords=("axes fraction", "data"), va="center",
                fontsize=7, annotation_clip=False)


def paired_differences(selected: pd.DataFrame, comp: pd.DataFrame, path: Path) -> Path | None:
    """Per task: each comparison's per-seed differences, mean with 95% CI, and its Holm-corrected mark."""
    if comp.empty:
        return None
    tasks = list(dict.fromkeys(comp["task"]))
    pairs = list(dict.fromkeys(zip(comp["run_id"], comp["distill_type"], comp["baseline"])))
    fig, axes = _grid(len(tasks), width=_panel_width(len(pairs)))
    rng = np.random.default_rng(0)
    for ax, task in zip(axes, tasks):
        col = "val_acc" if task == "all" else f"validation_accuracy_{task}"
        for x, (run_id, dt, base) in enumerate(pairs):
            run = selected[selected.run_id == run_id]
            a = run[run.distill_type == dt].set_index("seed")[col].dropna()
            b = run[run.distill_type == base].set_index("seed")[col].dropna()
            seeds = sorted(set(a.index) & set(b.index))
            diffs = (a.loc[seeds] - b.loc[seeds]).to_numpy(float)
            if not len(diffs):
                continue
            color = COLORS.get(dt, "#333333")
            ax.scatter(x + rng.uniform(-0.12, 0.12, len(diffs)), diffs, s=12, color=color, alpha=0.45, zorder=2)
            row = comp[(comp.run_id == run_id) & (comp.task == task) & (comp.distill_type == dt) & (comp.baseline == base)]
            r = row.iloc[0]
            tested = r["status"] == "ok"
            yerr = [[r["mean_diff"] - r["ci_low"]], [r["ci_high"] - r["mean_diff"]]] if tested else None
            ax.errorbar(x + 0.25, r["mean_diff"], yerr=yerr, fmt="D", color=color, ms=5, capsize=4, lw=1.6, zorder=3)
            mark = significance_mark(r["p_ttest_holm"]) if tested else f"n={int(r['n'])}<3"
            ax.annotate(mark, (x + 0.1, 1.0), xycoords=("data", "axes fraction"), xytext=(0, 2),
                        textcoords="offset points", ha="center", va="bottom", fontsize=8)
        ax.axhline(0.0, color="black", lw=0.9)
        ax.set_xticks(range(len(pairs)), [f"{dt}\nvs {base}" for _, dt, base in pairs], rotation=35, ha="right",
                      fontsize=7)
        ax.set_xlim(-0.5, len(pairs) - 0.3)
        _mark_runs(ax, [p[0] for p in pairs])
        ax.set_title(task, fontsize=10, pad=14)
        ax.set_ylabel("Δ accuracy, paired by seed\n(fraction; 0.01 = 1 point)", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Paired differences (distill type − baseline) per seed: dots; mean with 95% t-CI: diamond.\n"
                 "Marks: paired t-test, Holm-corrected over each run's comparisons (*** <0.001, ** <0.01, * <0.05, "
                 "ns: not significant). Above 0: better than the baseline; y axes differ per panel.", fontsize=10)
    return _save(fig, path)


def learning_curves(df: pd.DataFrame, path: Path) -> Path:
    """Per task: validation accuracy per epoch, mean over seeds with a 95% t-CI band."""
    tasks = metric_columns(df)
    arms = _arms(df)
    runs = list(dict.fromkeys(df["run_id"]))  # one line style per run
    fig, axes = _grid(len(tasks))
    for ax, (task, col) in zip(axes, tasks):
        for run_id, dt in arms:
            label = f"{dt} [{run_id}]" if len(runs) > 1 else dt
            g = df[(df.run_id == run_id) & (df.distill_type == dt)]
            by_epoch = g.groupby("epoch")[col].apply(lambda s: s.dropna().to_numpy(float))
            epochs = by_epoch.index.to_numpy()
            mean = np.array([v.mean() if len(v) else np.nan for v in by_epoch])
            ci = np.array([_accuracy_ci(v) for v in by_epoch])
            color = COLORS.get(dt, None)
            ax.plot(epochs, mean, marker="o", ms=3, color=color, label=label,
                    ls=_RUN_STYLES[runs.index(run_id) % len(_RUN_STYLES)])
            if np.isfinite(ci).any():
                ax.fill_between(epochs, ci[:, 0], ci[:, 1], color=color, alpha=0.15, lw=0)
        ax.set_title(task if task != "all" else "all tasks (example-weighted val_acc)", fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ACC_UNIT, fontsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, title="distill type", title_fontsize=7)
    n = df.groupby(["run_id", "distill_type"])["seed"].nunique()
    note = f" (no band where n < {MIN_SEEDS} seeds; here n = {n.min()})" if n.min() < MIN_SEEDS else ""
    fig.suptitle(f"Learning curves: validation accuracy per epoch, mean over seeds with 95% t-CI band{note}", fontsize=10)
    return _save(fig, path)


def read_scalars(event_dir: Path) -> dict[str, pd.Series]:
    """Scalar tag -> Series(value, index=step) from a TensorBoard event folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(event_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: pd.Series([e.value for e in acc.Scalars(tag)], index=[e.step for e in acc.Scalars(tag)])
            for tag in acc.Tags().get("scalars", [])}


def loss_components(trials: dict[str, Path], run_id: str, path: Path) -> Path | None:
    """One panel per distill type (one trial each): the loss and its unweighted parts per optimizer step.

    Parts differ by orders of magnitude (KD ~1e-3, attention ~1e-7, task CE ~6 on the tiny presets), so
    each is drawn relative to its start value, with that value in the legend: the trends stay
    visible on one linear axis. Long runs are smoothed by a rolling mean over ~1/40 of the steps.
    """
    series = {}
    for dt, folder in trials.items():
        s = {tag: v.sort_index() for tag, v in read_scalars(folder).items() if tag in PART_LABELS}
        if s:
            series[dt] = (folder.name, s)
    if not series:
        return None
    fig, axes = _grid(len(series), height=3.4)
    windows = set()
    for ax, (dt, (trial, s)) in zip(axes, series.items()):
        for tag, label in PART_LABELS.items():
            if tag not in s:
                continue
            v = s[tag]
            window = max(1, len(v) // 40)
            windows.add(window)
            start = float(v.iloc[:window].mean())  # the first window, not one noisy step
            shown = v.rolling(window, min_periods=1).mean() / (start if start else 1.0)
            ax.plot(shown.index, shown.to_numpy(), color=PART_COLORS[tag], lw=1.8 if tag == "train/loss" else 1.1,
                    ls="-" if tag == "train/loss" else "--", label=f"{label} (start {start:.3g})")
        ax.axhline(1.0, color="black", lw=0.6, alpha=0.5)
        ax.set_title(f"{dt} ({trial})", fontsize=10)
        ax.set_xlabel("optimizer step")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel("loss ÷ its start value", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    smooth = f"; rolling mean over {max(windows)} steps" if max(windows) > 1 else ""
    fig.suptitle(f"Training loss and its components per step, one trial per distill type (run {run_id})\n"
                 "each line relative to its start (mean of its first smoothing window; legend: that value); components unweighted, total = "
                 f"α·task + β·KD + γ₁·hidden + γ₂·attention{smooth}", fontsize=10)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
