import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from wbvb.analysis import stats

from support.result_runs import known_effect_run


def test_t_interval_by_hand():
    lo, hi = stats.t_interval(np.array([0.01, 0.02, 0.03, 0.04, 0.05]))
    # mean 0.03, sd 0.0158114, sem 0.0070711, t(0.975, 4) = 2.776445
    assert lo == pytest.approx(0.03 - 2.776445 * 0.0070711, abs=1e-6)
    assert hi == pytest.approx(0.03 + 2.776445 * 0.0070711, abs=1e-6)
    assert all(math.isnan(x) for x in stats.t_interval(np.array([0.5])))


def test_holm_by_hand():
    # sorted: 0.01*3 = 0.03; 0.03*2 = 0.06; 0.04*1 = 0.04 -> monotone 0.06
    adj = stats.holm([0.01, 0.04, 0.03, float("nan")])
    assert adj[:3] == pytest.approx([0.03, 0.06, 0.06]) and math.isnan(adj[3])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1


def test_paired_test_matches_scipy():
    a = np.array([0.61, 0.64, 0.58, 0.66, 0.63, 0.60, 0.65])
    b = np.array([0.59, 0.60, 0.57, 0.62, 0.61, 0.60, 0.61])
    r = stats.paired_test(a - b)
    assert r["n"] == 7 and r["mean_diff"] == pytest.approx(np.mean(a - b))
    assert r["p_ttest"] == pytest.approx(sps.ttest_rel(a, b).pvalue)
    assert r["p_wilcoxon"] == pytest.approx(sps.wilcoxon(a, b).pvalue)
    assert r["cohens_dz"] == pytest.approx(np.mean(a - b) / np.std(a - b, ddof=1))
    ci = sps.ttest_rel(a, b).confidence_interval(0.95)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((ci.low, ci.high))


def test_fewer_than_three_pairs_are_not_tested():
    r = stats.paired_test(np.array([0.02, 0.03]))
    assert r["status"].startswith("not enough seeds") and math.isnan(r["p_ttest"])


def test_identical_arms_give_p_one_not_an_error():
    r = stats.paired_test(np.zeros(4))
    assert r["p_ttest"] == 1.0 and r["p_wilcoxon"] == 1.0 and math.isnan(r["cohens_dz"])


def _selected(tmp_path, **kw):
    from wbvb.analysis.results import load_run

    run = load_run(known_effect_run(tmp_path / "run", **kw))
    return stats.select_epoch(run.rows, "final")


def test_known_effect_is_found_exactly_after_holm(tmp_path):
    comp = stats.compare(_selected(tmp_path))
    # 3 tasks x (3 types vs black_box + 4 types vs sft): sft vs black_box appears once
    assert len(comp) == 21 and comp["family_size"].eq(21).all()
    hits = set(comp[comp.significant].apply(lambda r: (r.task, r.distill_type, r.baseline), axis=1))
    assert hits == {("arithmetic", "hidden_state", "black_box"), ("arithmetic", "hidden_state", "sft")}
    hit = comp[(comp.task == "arithmetic") & (comp.distill_type == "hidden_state") & (comp.baseline == "black_box")].iloc[0]
    assert hit["mean_diff"] == pytest.approx(0.03, abs=0.006) and hit["ci_low"] > 0 and hit["cohens_dz"] > 2


def test_comparison_rows_match_scipy_and_holm_is_over_the_family(tmp_path):
    sel = _selected(tmp_path)
    comp = stats.compare(sel)
    row = comp[(comp.task == "sentiment") & (comp.distill_type == "attention") & (comp.baseline == "sft")].iloc[0]
    a = sel[sel.distill_type == "attention"].set_index("seed")["validation_accuracy_sentiment"].sort_index()
    b = sel[sel.distill_type == "sft"].set_index("seed")["validation_accuracy_sentiment"].sort_index()
    assert row["p_ttest"] == pytest.approx(sps.ttest_rel(a, b).pvalue)
    assert row["p_wilcoxon"] == pytest.approx(sps.wilcoxon(a, b).pvalue)
    assert list(comp["p_ttest_holm"]) == pytest.approx(stats.holm(list(comp["p_ttest"])))


def test_two_seeds_report_not_enough_seeds(tmp_path):
    comp = stats.compare(_selected(tmp_path, seeds=range(2)))
    assert comp["status"].str.startswith("not enough seeds").all() and not comp["significant"].any()


def test_aggregate_has_ci_min_max_and_reference_rows(tmp_path):
    sel = _selected(tmp_path)
    agg = stats.aggregate(sel, {"arithmetic": 0.61}).set_index(["distill_type", "task"])
    vals = sel[sel.distill_type == "black_box"]["validation_accuracy_arithmetic"].to_numpy()
    row = agg.loc[("black_box", "arithmetic")]
    assert row["n"] == 7 and row["mean"] == pytest.approx(vals.mean()) and row["max"] == pytest.approx(vals.max())
    ci = sps.t.interval(0.95, 6, loc=vals.mean(), scale=sps.sem(vals))
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(ci)
    assert agg.loc[("teacher", "arithmetic"), "reference"] and agg.loc[("sft", "arithmetic"), "reference"]
    assert not agg.loc[("black_box", "arithmetic"), "reference"]


def test_epoch_selection_final_best_and_fixed():
    df = pd.DataFrame({"run_id": "r", "trial_name": "a", "epoch": [1, 2, 3], "val_acc": [0.2, 0.7, 0.5]})
    assert list(stats.select_epoch(df, "final")["epoch"]) == [3]
    assert list(stats.select_epoch(df, "best")["epoch"]) == [2]
    assert list(stats.select_epoch(df, "1")["val_acc"]) == [0.2]
    with pytest.raises(ValueError, match="no trial reported epoch 9"):
        stats.select_epoch(df, "9")


def _enumerated_wilcoxon_p(counts):
    """Reference: all 2^n sign assignments of the non-zero |differences| (midranks for ties);
    p = share whose W+ is at least as far from n(n+1)/4 as the observed one."""
    import itertools

    d = [c for c in counts if c != 0]
    ranks = sps.rankdata(np.abs(d))
    centre = ranks.sum() / 2
    observed = abs(ranks[np.array(d) > 0].sum() - centre)
    extreme = sum(abs(sum(r for r, s in zip(ranks, signs) if s) - centre) >= observed - 1e-9
                  for signs in itertools.product([0, 1], repeat=len(d)))
    return extreme / 2 ** len(d)


def test_tied_accuracy_differences_rank_as_ties():
    # 2/872 arises from different count pairs: in floats they differ and the ranks came out 0.25
    n_eval = 872
    a = np.array([646, 669, 660, 605, 656]) / n_eval
    b = np.array([644, 666, 662, 607, 654]) / n_eval
    assert len({abs(x) for x in a - b if abs(abs(x) - 2 / n_eval) < 1e-12}) > 1  # the float trap is real
    r = stats.paired_test(a - b)
    assert r["p_wilcoxon"] == pytest.approx(_enumerated_wilcoxon_p([2, 3, -2, -2, 2])) == pytest.approx(0.75)
    assert stats.paired_test(stats.exact_differences(a, b))["p_wilcoxon"] == pytest.approx(0.75)


def test_wilcoxon_matches_the_sign_flip_enumeration_on_random_tied_counts():
    rng = np.random.default_rng(7)
    for _ in range(60):
        n, n_eval = int(rng.integers(3, 10)), int(rng.choice([100, 872, 1319]))
        base = rng.integers(0, n_eval - 8, n)
        delta = rng.integers(-4, 5, n)  # few distinct values: ties and zeros are common
        if not delta.any():
            continue
        r = stats.paired_test((base + delta) / n_eval - base / n_eval)
        assert r["p_wilcoxon"] == pytest.approx(_enumerated_wilcoxon_p(delta), abs=1e-12), delta


def test_wilcoxon_without_ties_is_scipys_exact_and_t_test_is_scipys():
    rng = np.random.default_rng(8)
    for n in (3, 5, 8, 12):
        a, b = rng.normal(0.6, 0.05, n), rng.normal(0.6, 0.05, n)
        r = stats.paired_test(a - b)
        assert r["p_wilcoxon"] == pytest.approx(sps.wilcoxon(a, b, method="exact").pvalue, rel=1e-9)
        t = sps.ttest_rel(a, b)
        assert r["p_ttest"] == pytest.approx(t.pvalue, rel=1e-6)
        ci = t.confidence_interval(0.95)
        assert (r["ci_low"], r["ci_high"]) == pytest.approx((ci.low, ci.high), rel=1e-6)


def test_wilcoxon_is_exact_with_ties_beyond_scipys_permutation_limit():
    # scipy switches to the normal approximation for tied samples above 13 pairs; this stays exact
    delta = np.array([3, -1, 2, 2, 3, 1, -2, 4, 2, 1, 3, 0, 2, -1, 3])
    base = np.arange(15) * 7 + 300
    r = stats.paired_test((base + delta) / 872 - base / 872)
    assert r["p_wilcoxon"] == pytest.approx(_enumerated_wilcoxon_p(delta), abs=1e-12)


def test_best_epoch_is_chosen_on_the_held_out_selection_set_when_there_is_one():
    import pandas as pd

    from wbvb.analysis.stats import select_epoch

    # epoch 2 has the best validation accuracy, epoch 1 the best held-out selection accuracy
    df = pd.DataFrame({"run_id": ["r"] * 3, "trial_name": ["sft-seed0"] * 3, "epoch": [1, 2, 3],
                       "val_acc": [0.5, 0.9, 0.6], "select_acc": [0.8, 0.4, 0.7]})
    assert list(select_epoch(df, "best")["epoch"]) == [1]
    assert list(select_epoch(df.drop(columns="select_acc"), "best")["epoch"]) == [2]  # no selection set: val_acc


def test_the_selection_set_is_held_out_of_train_and_fixed(tiny_cfg):
    from wbvb.tasks import load_examples

    t = tiny_cfg.tasks[0]
    whole = [e.id for e in load_examples(t, "train")]
    t.n_select = 5
    train, select = [e.id for e in load_examples(t, "train")], [e.id for e in load_examples(t, "select")]
    assert len(select) == 5 and not set(select) & set(train) and sorted(train + select) == sorted(whole)
    assert select == [e.id for e in load_examples(t, "select")]  # the same every time
    assert not set(select) & {e.id for e in load_examples(t, "eval")}
