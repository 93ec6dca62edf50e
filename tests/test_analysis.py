import json
import math

import pandas as pd
import pytest

from wbvb import analysis


def _trial(root, name, dt, seed, accs_by_epoch):
    d = root / "tune" / name
    d.mkdir(parents=True)
    lines = []
    for epoch, (sent, arith) in enumerate(accs_by_epoch, 1):
        lines.append(json.dumps({"trial_id": name, "epoch": epoch, "val_acc": (sent + arith) / 2,
                                 "validation_accuracy_sentiment": sent, "validation_accuracy_arithmetic": arith,
                                 "train_loss": 1.0 / epoch, "time_total_s": 10.0 * epoch,
                                 "config": {"distill_type": dt, "seed": seed}}))
    (d / "result.json").write_text("\n".join(lines) + "\n")


def test_summary_and_aggregate_by_hand(tmp_path):
    _trial(tmp_path, "sft-seed0", "sft", 0, [(0.1, 0.0), (0.5, 0.2)])
    _trial(tmp_path, "sft-seed1", "sft", 1, [(0.2, 0.0), (0.7, 0.4)])
    _trial(tmp_path, "black_box-seed0", "black_box", 0, [(0.6, 0.3)])
    (tmp_path / "teacher.json").write_text(json.dumps({"teacher_accuracy": {"sentiment": 0.9, "arithmetic": 0.8}}))
    out = analysis.analyze(tmp_path, expected_trials=4)
    summary = pd.read_csv(tmp_path / "results_summary.csv")
    assert len(summary) == 5 and set(summary["distill_type"]) == {"sft", "black_box"}
    agg = out["aggregate"].set_index(["distill_type", "task"])
    assert agg.loc[("sft", "sentiment"), "mean"] == pytest.approx(0.6)  # final epochs: 0.5 and 0.7
    assert agg.loc[("sft", "sentiment"), "std"] == pytest.approx(math.sqrt(0.02))  # sample std
    assert agg.loc[("sft", "arithmetic"), "n"] == 2
    assert math.isnan(agg.loc[("black_box", "arithmetic"), "std"])
    assert agg.loc[("teacher", "sentiment"), "mean"] == 0.9
    assert "0.600 ± 0.141 (n=2)" in out["table"]
    # analysing twice rebuilds, never appends
    analysis.analyze(tmp_path, quiet=True, plot=False)
    assert len(pd.read_csv(tmp_path / "results_summary.csv")) == 5


def test_partial_line_of_a_running_trial_is_skipped(tmp_path):
    _trial(tmp_path, "sft-seed0", "sft", 0, [(0.1, 0.0)])
    with open(tmp_path / "tune" / "sft-seed0" / "result.json", "a") as f:
        f.write('{"epoch": 2, "val_a')
    assert len(analysis.load_results(tmp_path)) == 1


def test_mid_epoch_checkpoint_reports_are_not_epoch_rows(tmp_path):
    _trial(tmp_path, "sft-seed0", "sft", 0, [(0.1, 0.0), (0.5, 0.2)])
    path = tmp_path / "tune" / "sft-seed0" / "result.json"
    lines = path.read_text().splitlines()
    mid = json.dumps({"trial_id": "sft-seed0", "epoch_progress": 1.5, "steps": 7, "train_loss": 0.8,
                      "config": {"distill_type": "sft", "seed": 0}})
    path.write_text("\n".join([lines[0], mid, lines[1], mid.replace("1.5", "2.5")]) + "\n")  # the last: a re-run
    df = analysis.load_results(tmp_path)
    assert list(df["epoch"]) == [1, 2]
    assert analysis.select_epoch(df)["val_acc"].item() == pytest.approx(0.35)


def test_cli_errors_on_empty_folder(tmp_path, capsys):
    assert analysis.main([str(tmp_path)]) == 2
    assert "no trial results" in capsys.readouterr().err


def test_scoring_variants_are_not_tasks():
    from wbvb.analysis.results import tasks_of

    df = pd.DataFrame(columns=["validation_accuracy_sst2", "validation_accuracy_norm_sst2",
                               "validation_accuracy_gsm8k", "validation_accuracy_flexible_gsm8k"])
    assert tasks_of(df) == ["sst2", "gsm8k"]


# The earlier scripts' results_summary.csv: one row per trial x epoch, no run_id, no trial_name, no val_acc.
# Final-epoch (2) sst2 accuracies: black_box 0.80 0.84 0.85, sft 0.75 0.78 0.78; seed 1's black_box epoch 2
# row appears twice (an exact repeat).
LEGACY_CSV = """distill_type,seed,epoch,train_loss,validation_accuracy_sst2,validation_accuracy_mmlu
black_box,0,1,2.0,0.70,0.25
black_box,0,2,1.5,0.80,0.30
black_box,1,1,2.1,0.71,0.26
black_box,1,2,1.4,0.84,0.28
black_box,1,2,1.4,0.84,0.28
black_box,2,1,2.2,0.72,0.24
black_box,2,2,1.6,0.85,0.26
sft,0,1,2.3,0.60,0.25
sft,0,2,1.9,0.75,0.27
sft,1,1,2.4,0.61,0.25
sft,1,2,1.8,0.78,0.25
sft,2,1,2.5,0.62,0.26
sft,2,2,1.7,0.78,0.23
"""


def test_a_summary_without_run_ids_is_read_as_one_run(tmp_path, capsys):
    from scipy import stats as sps

    from wbvb.analysis.cli import main

    csv = tmp_path / "results_summary.csv"
    csv.write_text(LEGACY_CSV)
    assert main([str(csv)]) == 0
    out = capsys.readouterr().out
    assert f"{csv}: no run_id column, read as one run '{tmp_path.name}': 6 trials, 12 rows " \
           "(1 repeated rows counted once)" in out
    agg = pd.read_csv(tmp_path / "aggregate.csv").set_index(["distill_type", "task"])
    t2 = sps.t.ppf(0.975, 2)  # 95% two-sided, n - 1 = 2 degrees of freedom
    for dt, mean, ss in (("black_box", 0.83, 0.0014), ("sft", 0.77, 0.0006)):  # ss: sum of squared deviations
        row = agg.loc[(dt, "sst2")]
        sd = math.sqrt(ss / 2)
        assert row["n"] == 3 and row["mean"] == pytest.approx(mean)
        assert row["std"] == pytest.approx(sd)
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((mean - t2 * sd / math.sqrt(3),
                                                                  mean + t2 * sd / math.sqrt(3)))
    assert agg.loc[("black_box", "mmlu"), "mean"] == pytest.approx((0.30 + 0.28 + 0.26) / 3)
    comp = pd.read_csv(tmp_path / "comparisons.csv")
    c = comp[(comp["distill_type"] == "black_box") & (comp["baseline"] == "sft") & (comp["task"] == "sst2")].iloc[0]
    # paired by seed: 0.05, 0.06, 0.07 -> mean 0.06, sd 0.01
    assert c["mean_diff"] == pytest.approx(0.06)
    assert (c["ci_low"], c["ci_high"]) == pytest.approx((0.06 - t2 * 0.01 / math.sqrt(3), 0.06 + t2 * 0.01 / math.sqrt(3)))


def test_a_summary_without_run_ids_refuses_two_different_rows_for_one_epoch(tmp_path, capsys):
    from wbvb.analysis.cli import main

    csv = tmp_path / "results_summary.csv"
    csv.write_text(LEGACY_CSV + "sft,2,2,1.7,0.79,0.23\n")
    assert main([str(csv), "--no-plots"]) == 2
    assert f"{csv}: lines 14, 15 give sft-seed2 epoch 2 with different values" in capsys.readouterr().err
