"""report.md: the setup, the tables, the figures and the caveats a reviewer asks about first."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from wbvb.analysis import tables
from wbvb.analysis.results import Run, write_text_atomic
from wbvb.analysis.stats import ALPHA, MIN_SEEDS, epoch_phrase, selection_metric, unreachable


def _eval_rows(n) -> str:
    """A task's n_eval as the report says it: 0 means the whole eval split (config.TaskConfig)."""
    return "all" if n == 0 else str(n)


def _setup(run: Run) -> list[str]:
    c, t = run.config, run.teacher
    if not c:
        return [f"- run `{run.run_id}`: no config.json beside the results, so the setup is unknown"]
    m, td, tr, loss, sw = (c.get(k, {}) for k in ("models", "teacher_data", "training", "loss", "sweep"))
    tasks = ", ".join(f"{x['name']} ({x.get('source', '?')}: {x.get('n_train', '?')} train / "
                      f"{_eval_rows(x.get('n_eval', '?'))} eval)" for x in c.get("tasks", []))
    lines = [f"- run `{run.run_id}` (started {run.started_at or 'unknown'}), folder `{run.folder}`",
             f"- teacher `{m.get('teacher')}` -> student {_student(m.get('student'))}"
             + (f"; teacher data fingerprint `{t['fingerprint']}`" if t.get("fingerprint") else ""),
             f"- tasks: {tasks}",
             f"- teacher signal: top-k = {td.get('top_k')}, hidden stride {td.get('hidden_stride')}, "
             f"attention stride {td.get('attention_stride')}, stored as {td.get('dtype')}",
             f"- training: {tr.get('epochs')} epochs, batch {tr.get('batch_size')}, lr {tr.get('lr')}; loss weights "
             f"α={loss.get('alpha')}, β={loss.get('beta')}, γ₁={loss.get('gamma_hidden')}, "
             f"γ₂={loss.get('gamma_attention')}, T={loss.get('temperature')}",
             f"- distill types {', '.join(sw.get('distill_types', []))} × seeds {sw.get('seeds')}"]
    if t.get("teacher_accuracy"):
        lines.append("- teacher accuracy: " + ", ".join(f"{k} {v:.3f}" for k, v in t["teacher_accuracy"].items()))
    return lines


STAGE_NAMES = {"models": "models (presets, conversion, cut student)", "teacher_finetune": "teacher fine-tune",
               "teacher_data": "teacher data (shards)", "verify": "verify shards", "teacher_eval": "teacher eval",
               "teacher_answers": "teacher answers (seq_kd)", "teacher_stage_total": "teacher stage, total",
               "trials": "trials (Ray Tune)", "analysis": "analysis"}


def _timings(run: Run) -> list[str]:
    """Wall time per stage; a stage reused from an earlier run shows its (small) lookup time."""
    t = run.timings
    if not t:
        return []
    rows = [f"| {STAGE_NAMES.get(k, k)} | {v:,.1f} | {v / 60:.1f} |" for k, v in t.items()]
    total = sum(v for k, v in t.items() if k in ("teacher_stage_total", "trials", "analysis"))
    return ["", f"Wall time per stage (`{run.run_id}`; a stage an earlier run had built is reused and shows "
            "its lookup time only):", "", "| stage | seconds | minutes |", "|---|---:|---:|", *rows,
            f"| **sweep, total** | {total:,.1f} | {total / 60:.1f} |"]


def _student(spec) -> str:
    """A model name, or a student cut from the teacher said in words (not as a dict)."""
    cut = spec.get("from_teacher") if isinstance(spec, dict) else None
    if cut is None:
        return f"`{spec}`"
    return (f"cut from the teacher (blocks {cut['blocks']})" if cut.get("blocks")
            else f"cut from the teacher (every {cut.get('every')}th block)")


def _caveats(runs: list[Run], df: pd.DataFrame, selected: pd.DataFrame, comp: pd.DataFrame, epoch: str,
             missing: dict) -> list[str]:
    n = selected.groupby(["run_id", "distill_type"]).size()
    out = [f"- **Seeds**: {_span(n.min(), n.max())} per distill type. Confidence intervals use the t-distribution "
           f"over seeds; with few seeds they are wide and the tests have little power."]
    if not comp.empty:
        tested = comp[comp.status == "ok"]
        fam = tested.groupby("run_id")["family_size"].first()
        if tested.empty:
            out.append(f"- **No tests**: no comparison has {MIN_SEEDS} or more seeds paired with its baseline, so "
                       "no p-value is given and no difference can be called significant.")
        else:
            out.append(f"- **Multiple comparisons**: p-values are Holm-corrected over the {', '.join(map(str, fam))} "
                       f"comparisons of each run (each type vs black_box and vs sft, per task); marks use the "
                       f"corrected paired t-test at α = {ALPHA} (*** < 0.001, ** < 0.01, * < 0.05, ns otherwise).")
            raw = tested["p_wilcoxon_floor"].map(unreachable)
            holm = tested["p_wilcoxon_holm_floor"].map(unreachable)
            if raw.any():
                ns = ", ".join(f"n={int(n)}" for n in sorted(tested.loc[raw, "wilcoxon_n"].unique()))
                out.append(f"- **Wilcoxon**: {ns}: Wilcoxon cannot reach p<{ALPHA:g} ({int(raw.sum())} of "
                           f"{len(tested)} comparisons, marked †): with n non-zero differences its smallest "
                           "two-sided p is 2/2ⁿ (0.0625 at n=5), so no p it gives there could be significant; read it "
                           "as a check on the sign, not as a test.")
            if (holm & ~raw).any():
                floor = tested.loc[holm & ~raw, "p_wilcoxon_holm_floor"].min()
                out.append(f"- **Wilcoxon after Holm**: over {', '.join(map(str, fam))} comparisons its smallest "
                           f"corrected p is {floor:.3f}, so the corrected Wilcoxon cannot reach p<{ALPHA:g} "
                           f"({int((holm & ~raw).sum())} comparisons, marked ‡).")
        short = comp[comp.status != "ok"]
        if len(short):
            out.append(f"- **Not tested**: {len(short)} comparisons have fewer than {MIN_SEEDS} seeds paired with "
                       f"their baseline; they are listed but carry no p-value.")
    if epoch == "best" and selection_metric(df) == "select_acc":
        out.append("- **Epoch selection**: each trial's best epoch by `select_acc`, measured on train examples "
                   "held out of training (tasks' `n_select`), not on the validation data it reports.")
    elif epoch == "best":
        out.append("- **Epoch selection**: each trial's best epoch by validation accuracy, measured on the same "
                   "validation data it is selected on: optimistic, biased upwards (set tasks' `n_select` to "
                   "select on held-out train examples instead).")
    elif epoch == "final":
        out.append("- **Epoch selection**: the final epoch of each trial; nothing is selected on validation data.")
    else:
        out.append(f"- **Epoch selection**: epoch {epoch}, fixed by the analyst; if it was chosen after looking at "
                   "these curves, it was selected on validation data.")
    for run in runs:
        evals = [x.get("n_eval") for x in run.config.get("tasks", []) if x.get("n_eval")]
        if evals:
            out.append(f"- **Granularity** ({run.run_id}): each task is scored on {_span(min(evals), max(evals))} "
                       f"validation examples, so one example moves accuracy by up to {1 / min(evals):.3f}.")
        for f in run.failed:
            out.append(f"- **Failed** ({run.run_id}): trial `{f['trial']}` failed after its retries "
                       f"(`sweep.max_failures`): {first_line(f['error'])}. Its epochs are kept in "
                       "results_summary.csv; it is left out of the final/best-epoch tables.")
        n_missing, n_expected = missing.get(run.run_id, (0, None))
        if n_missing:
            out.append(f"- **Incomplete** ({run.run_id}): {n_missing} of {n_expected} trials have "
                       "no results yet; the numbers will change when they report.")
    short = df.groupby(["run_id", "trial_name"]).ngroups - len(selected)
    if short:
        out.append(f"- **Left out**: {short} trials have not reported {epoch_phrase(epoch)} and are not in the tables.")
    return out


def first_line(text: str) -> str:
    """The first non-empty line of an error, short enough for a table note."""
    lines = [x.strip() for x in str(text).splitlines() if x.strip()]
    return lines[0][:300] if lines else "(no error text)"


def _span(lo: int, hi: int) -> str:
    return f"{lo}" if lo == hi else f"{lo}–{hi}"


def write_report(path: Path, runs: list[Run], df: pd.DataFrame, selected: pd.DataFrame, agg: pd.DataFrame,
                 comp: pd.DataFrame, figures: list[Path], epoch: str, missing: dict,
                 across: pd.DataFrame | None = None) -> Path:
    parts = ["# Distillation study report", "", "## Setup", ""]
    for run in runs:
        parts += _setup(run)
    for run in runs:
        parts += _timings(run)
    parts += ["", f"## Accuracy per distill type and task ({epoch_phrase(epoch)})", "",
              "Accuracy is the fraction of validation examples answered correctly. `(ref)` marks the reference "
              "rows: the `sft` control (no teacher signal) and the teacher itself.", "",
              tables.aggregate_table(agg, "markdown"), "",
              "## Paired comparisons", "",
              "Δ acc = distill type − baseline, paired by seed (positive: the distill type is better).", "",
              tables.comparison_table(comp, "markdown"), ""]
    if across is not None and not across.empty:
        parts += ["## Across runs", "",
                  f"Each distill type against the same type in the first run (`{runs[0].run_id}`), paired by "
                  "seed (positive: this run is better); Holm-corrected over these comparisons.", "",
                  tables.run_comparison_table(across, "markdown"), ""]
    parts += ["## Figures", ""]
    parts += [f"![{f.stem}]({f.name})" for f in figures] or ["(no figures)"]
    parts += ["", "## Caveats", ""] + _caveats(runs, df, selected, comp, epoch, missing) + [""]
    write_text_atomic("\n".join(parts), path)
    return path
