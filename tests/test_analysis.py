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
