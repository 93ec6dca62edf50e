"""Analysis inputs, run ids, report.md, PNGs and the CLI on hand-built sweep folders."""
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from wbvb import analysis
from wbvb.analysis.results import write_run_meta

from support.result_runs import TYPES, known_effect_run, write_events, write_meta, write_trial

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def study(tmp_path):
    run = known_effect_run(tmp_path / "study")
    write_events(run, "hidden_state-seed0", ["task", "kd", "hidden"])
    write_events(run, "sft-seed0", ["task"])
    return run


def test_report_finds_exactly_the_known_effect(study):
    out = analysis.analyze(study, quiet=True)
    report = (study / "report.md").read_text()
    marked = [line for line in report.splitlines() if line.endswith("| *** |") or line.endswith("| ** |")
              or line.endswith("| * |")]
    assert len(marked) == 2 and all(line.startswith("| arithmetic | hidden_state vs ") for line in marked)
    for text in ["preset:tiny", "top-k = 8", "hidden stride 1", "attention stride 2", "seeds [0, 1, 2, 3, 4, 5, 6]",
                 "sentiment (quickstart: 600 train / 100 eval)", "Holm-corrected over the 21", "final epoch of each trial",
                 "| sentiment | teacher (ref) | 1 | 0.920 |", "![paired_differences](paired_differences.png)"]:
        assert text in report, text
    names = {f.name for f in out["figures"]}
    assert names == {"accuracy_by_type.png", "learning_curves.png", "paired_differences.png", "loss_components.png"}
    for f in out["figures"]:
        assert f.read_bytes()[:8] == PNG_MAGIC
    comp = pd.read_csv(study / "comparisons.csv")
    assert comp["significant"].sum() == 2 and {"p_ttest_holm", "p_wilcoxon_holm", "cohens_dz"} <= set(comp.columns)
    agg = pd.read_csv(study / "aggregate.csv")
    assert {"n", "mean", "std", "ci_low", "ci_high", "min", "max", "reference"} <= set(agg.columns)


def test_two_seeds_plot_without_ci_and_no_loss_plot_without_event_files(tmp_path):
    out = analysis.analyze(known_effect_run(tmp_path / "r", seeds=range(2)), quiet=True)
    assert {f.name for f in out["figures"]} == {"accuracy_by_type.png", "learning_curves.png", "paired_differences.png"}
    assert "No tests" in (tmp_path / "r" / "report.md").read_text()


def test_best_epoch_is_flagged_as_selected_on_validation(study):
    analysis.analyze(study, quiet=True, plot=False, epoch="best")
    assert "optimistic" in (study / "report.md").read_text()


def test_partial_sweep_says_how_many_trials_are_missing(tmp_path, capsys):
    run = tmp_path / "partial"
    write_meta(run, seeds=range(7))  # 5 types x 7 seeds expected
    for dt in TYPES[:2]:
        for s in range(3):
            write_trial(run, dt, s, [{"sentiment": 0.5 + s / 100, "multiple_choice": 0.4, "arithmetic": 0.3}])
    out = analysis.analyze(run, plot=False)
    assert out["missing_trials"] == 29 and "29 of 35 trials missing" in capsys.readouterr().out
    assert "29 of 35 trials have no results yet" in (run / "report.md").read_text()


def test_tune_folder_and_summary_csv_are_inputs_too(study):
    first = analysis.analyze(study / "tune", quiet=True, plot=False)  # outputs go to the run folder above tune/
    assert (study / "report.md").is_file() and "preset:tiny" in (study / "report.md").read_text()
    csv = study / "results_summary.csv"
    before = csv.read_text()
    again = analysis.analyze(csv, quiet=True, plot=False)
    assert csv.read_text() == before  # a CSV input is read, never rewritten
    assert again["comparisons"]["significant"].sum() == first["comparisons"]["significant"].sum() == 2


def test_resumed_sweep_keeps_finished_rows_and_never_duplicates(study):
    analysis.analyze(study, quiet=True, plot=False)
    n = len(pd.read_csv(study / "results_summary.csv"))
    shutil.rmtree(study / "tune" / "sft-seed3")  # e.g. a trial folder lost when a sweep was restarted
    write_trial(study, "black_box", 0, [{"sentiment": 0.1, "multiple_choice": 0.1, "arithmetic": 0.1}] * 3)  # re-reported
    out = analysis.analyze(study, quiet=True, plot=False)
    df = pd.read_csv(study / "results_summary.csv")
    assert len(df) == n and not df.duplicated(["run_id", "trial_name", "epoch"]).any()
    assert "sft-seed3" in set(df["trial_name"])
    assert df[(df.trial_name == "black_box-seed0")]["validation_accuracy_sentiment"].eq(0.1).all()
    assert out["n_trials"] == 35


def test_run_id_is_stable_for_a_config_and_new_for_another(tmp_path):
    cfg = {"sweep": {"name": "quick"}, "training": {"lr": 0.1}}
    a = write_run_meta(tmp_path, cfg)
    assert write_run_meta(tmp_path, cfg) == a and a["run_id"].startswith("quick-")
    b = write_run_meta(tmp_path, {**cfg, "training": {"lr": 0.2}})
    assert b["run_id"] != a["run_id"]
    assert json.loads((tmp_path / "run.json").read_text()) == b


def _two_runs(tmp_path):
    a = known_effect_run(tmp_path / "a", seeds=range(4))
    b = known_effect_run(tmp_path / "b", seeds=range(4), effect=("attention", "sentiment", 0.03))
    cfg = json.loads((b / "config.json").read_text())
    cfg["training"]["lr"] = 0.001
    (b / "config.json").write_text(json.dumps(cfg))
    return a, b


def test_compare_keys_rows_by_run_id(tmp_path, capsys):
    a, b = _two_runs(tmp_path)
    out = analysis.analyze(a, compare=[b, a], quiet=True, plot=False)  # a named twice counts once
    df = pd.read_csv(tmp_path / "compare" / "results_summary.csv")
    assert df["run_id"].nunique() == 2 and len(df) == 2 * 5 * 4 * 3
    assert not df.duplicated(["run_id", "trial_name", "epoch"]).any()
    assert set(df["cfg.training.lr"]) == {0.005, 0.001}  # the config value that differs between the runs
    assert set(out["comparisons"]["run_id"]) == set(out["run_ids"])
    teacher = out["aggregate"][out["aggregate"].distill_type == "teacher"]
    assert set(teacher["run_id"]) == set(out["run_ids"]) and len(teacher) == 2 * 3  # each run's own teacher rows
    analysis.analyze(a, compare=[b], quiet=True, plot=False)
    assert len(pd.read_csv(tmp_path / "compare" / "results_summary.csv")) == len(df)


def test_run_and_since_filter_a_summary_with_several_runs(tmp_path, capsys):
    a, b = _two_runs(tmp_path)
    write_run_meta(a, json.loads((a / "config.json").read_text()))
    out = analysis.analyze(a, compare=[b], quiet=True, plot=False)
    rid_a, rid_b = out["run_ids"]
    csv = tmp_path / "compare" / "results_summary.csv"
    only_b = analysis.analyze(csv, run_ids=[rid_b], quiet=True, plot=False, out_dir=tmp_path / "only_b")
    assert only_b["run_ids"] == [rid_b] and set(only_b["summary"]["run_id"]) == {rid_b}
    assert analysis.analyze(csv, since="2000-01-01", quiet=True, plot=False, out_dir=tmp_path / "s")["run_ids"] == [rid_a]
    assert analysis.main([str(csv), "--since", "2999-01-01"]) == 2
    assert "no run matches" in capsys.readouterr().err


def test_older_runs_stay_in_the_folder_summary_and_are_reachable_by_run(tmp_path):
    run = known_effect_run(tmp_path / "r", seeds=range(3))
    old_id = analysis.analyze(run, quiet=True, plot=False)["run_ids"][0]
    cfg = json.loads((run / "config.json").read_text())
    cfg["training"]["epochs"] = 4  # the sweep is re-run with another config in the same folder
    (run / "config.json").write_text(json.dumps(cfg))
    new = analysis.analyze(run, quiet=True, plot=False)
    assert new["run_ids"] != [old_id] and len(new["summary"]) == 5 * 3 * 3
    assert set(pd.read_csv(run / "results_summary.csv")["run_id"]) == {old_id, new["run_ids"][0]}
    assert analysis.analyze(run, run_ids=[old_id], quiet=True, plot=False, out_dir=tmp_path / "old")["run_ids"] == [old_id]


@pytest.mark.parametrize("fmt, marker", [("latex", r"\begin{tabular}"), ("markdown", "|---|")])
def test_cli_table_formats(study, capsys, fmt, marker):
    assert analysis.main([str(study), "--format", fmt, "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert marker in out and "hidden" in out


def test_cli_rejects_a_bad_epoch(study, capsys):
    with pytest.raises(SystemExit):
        analysis.main([str(study), "--epoch", "last"])
    assert "use final, best, or an epoch number" in capsys.readouterr().err


def test_fixed_epoch_names_trials_that_have_not_reached_it(tmp_path):
    run = known_effect_run(tmp_path / "r", seeds=range(3), epochs=2)
    write_trial(run, "sft", 9, [{"sentiment": 0.5, "multiple_choice": 0.4, "arithmetic": 0.3}])  # only epoch 1
    out = analysis.analyze(run, epoch="2", quiet=True, plot=False)
    assert out["aggregate"].set_index(["distill_type", "task"]).loc[("sft", "sentiment"), "n"] == 3
    report = (run / "report.md").read_text()
    assert "1 trials have not reported epoch 2" in report and "(epoch 2)" in report


def test_loss_plot_reads_the_trainers_event_tags(study):
    from wbvb.analysis.plots import PART_LABELS, read_scalars

    tags = set(read_scalars(study / "tensorboard" / "hidden_state-seed0"))
    assert {"train/loss", "train/task_loss", "train/kd_loss", "train/hidden_loss"} <= tags & set(PART_LABELS)


def test_wilcoxon_that_cannot_reach_significance_says_so_in_report_and_console(tmp_path, capsys):
    from scipy import stats as sps

    from wbvb.analysis import stats

    # the floor is the exact p of a sample whose signs all agree (scipy's exact method)
    for n in (3, 5, 7):
        assert stats.wilcoxon_floor(n) == pytest.approx(sps.wilcoxon(np.arange(1.0, n + 1), method="exact").pvalue)
    out = analysis.analyze(known_effect_run(tmp_path / "r5", seeds=range(5)), plot=False)
    console, report = capsys.readouterr().out, (tmp_path / "r5" / "report.md").read_text()
    note = "† n=5: Wilcoxon cannot reach p<0.05"
    assert note in console and note in report and "n=5: Wilcoxon cannot reach p<0.05 (21 of 21" in report
    comp = out["comparisons"]
    assert (comp["p_wilcoxon"] >= comp["p_wilcoxon_floor"] - 1e-12).all() and comp["p_wilcoxon_floor"].eq(0.0625).all()
    rows = [line for line in console.splitlines() if " vs " in line and "Paired" not in line]
    assert len(rows) == 21 and all(line.count("†") == 2 for line in rows)
    # 7 seeds: 2/2^7 = 0.0156 can pass alone, but not after Holm over 21 (>= 21 x 0.0156 = 0.328)
    out = analysis.analyze(known_effect_run(tmp_path / "r7", seeds=range(7)), plot=False)
    console = capsys.readouterr().out
    assert "† n=" not in console and "‡ Holm over 21 comparisons: Wilcoxon cannot reach p<0.05" in console
    comp = out["comparisons"]
    assert (comp["p_wilcoxon_holm"] >= comp["p_wilcoxon_holm_floor"] - 1e-12).all()
    assert comp["p_wilcoxon_holm_floor"].iloc[0] == pytest.approx(21 * 2 / 2 ** 7)
    # 10 seeds: 21 x 2/2^10 = 0.041 < 0.05: both can reach it, no note
    analysis.analyze(known_effect_run(tmp_path / "r10", seeds=range(10)), plot=False)
    console = capsys.readouterr().out
    assert "cannot reach" not in console and "cannot reach" not in (tmp_path / "r10" / "report.md").read_text()


def test_report_gives_the_wall_time_of_each_stage(tmp_path):
    run = known_effect_run(tmp_path / "timed", seeds=range(2))
    analysis.write_timings(run, {"teacher_finetune": 600.0, "teacher_data": 90.5, "teacher_stage_total": 720.0,
                                 "trials": 3000.0, "analysis": 12.0})
    analysis.analyze(run, quiet=True, plot=False)
    report = (run / "report.md").read_text()
    assert "| teacher fine-tune | 600.0 | 10.0 |" in report
    assert "| trials (Ray Tune) | 3,000.0 | 50.0 |" in report
    # the total is the stage total + trials + analysis, not the stage's parts counted twice
    assert "| **sweep, total** | 3,732.0 | 62.2 |" in report


def test_compare_tests_each_type_across_runs_paired_by_seed_against_scipy(tmp_path, capsys):
    from scipy import stats as sps

    a = known_effect_run(tmp_path / "a", seeds=range(6))
    b = known_effect_run(tmp_path / "b", seeds=range(6), rng_seed=2, effect=("attention", "sentiment", 0.03))
    cfg = json.loads((b / "config.json").read_text())
    cfg["loss"] = {**cfg.get("loss", {}), "hidden_loss": "cka"}  # the setting the two runs differ in
    (b / "config.json").write_text(json.dumps(cfg))
    out = analysis.analyze(a, compare=[b], quiet=False, plot=False)
    across = pd.read_csv(tmp_path / "compare" / "run_comparisons.csv")
    assert len(across) == 5 * 3 and set(across["baseline_run"]) == {out["run_ids"][0]}
    df = pd.read_csv(tmp_path / "compare" / "results_summary.csv")
    final = df[df["epoch"] == df["epoch"].max()]
    raw = []
    for _, r in across.iterrows():
        col = f"validation_accuracy_{r['task']}"
        pick = lambda run: final[(final.run_id == run) & (final.distill_type == r["distill_type"])].set_index("seed")[col]
        x, y = pick(r["run_id"]).sort_index(), pick(r["baseline_run"]).sort_index()
        assert r["mean_diff"] == pytest.approx((x - y).mean(), abs=1e-9)  # accuracies read as fractions k/N
        assert r["p_ttest"] == pytest.approx(sps.ttest_rel(x, y).pvalue, rel=1e-6)
        assert r["p_wilcoxon"] == pytest.approx(sps.wilcoxon(x, y, method="exact").pvalue, rel=1e-6)
        raw.append(r["p_ttest"])
    # Holm over the 15 comparisons: the smallest raw p times 15
    assert across["p_ttest_holm"].min() == pytest.approx(min(1.0, 15 * min(raw)), rel=1e-9)
    assert "Across runs" in (tmp_path / "compare" / "report.md").read_text()
    assert "Across runs" in capsys.readouterr().out


def test_setup_says_all_for_a_task_scored_on_its_whole_eval_split(tmp_path):
    """n_eval 0 is the whole split (the smollm2-sst2 recipe's final epoch), not zero rows."""
    from wbvb.analysis.report import _setup
    from wbvb.analysis.results import Run

    run = Run("r", tmp_path, "", pd.DataFrame(), config={"tasks": [
        {"name": "sst2", "source": "local", "n_train": 600, "n_eval": 0},
        {"name": "mmlu", "source": "local", "n_train": 50, "n_eval": 40}]})
    assert "sst2 (local: 600 train / all eval), mmlu (local: 50 train / 40 eval)" in "\n".join(_setup(run))
