"""Paired differences over folds with a hierarchical bootstrap and Holm's correction; curves against steps."""

import numpy as np
import pytest
from scipy import stats

from usema.bench.accuracy_analysis import (
    comparison_family,
    comparison_lines,
    comparison_pairs,
    curve_lines,
    fold_table_lines,
    hierarchical_bootstrap,
    holm,
    interval_text,
    paired_comparisons,
    run_means,
)


def per_case_rows(model, fold, scores):
    """Two classes per case whose mean is the given score."""
    rows = []
    for case, score in scores.items():
        rows.append({"model": model, "fold": str(fold), "case": case, "class": "1", "dice": str(score - 0.05)})
        rows.append({"model": model, "fold": str(fold), "case": case, "class": "2", "dice": str(score + 0.05)})
    return rows


def test_the_interval_spans_the_folds_and_not_only_the_cases():
    # every case of a fold has the same difference: the cases add no spread, the folds all of it, and the
    # interval is the paired t-test's over the fold means
    folds = [0.01, 0.03, -0.02]
    diffs = [np.full(10, folds[0]), np.full(10, folds[1]), np.full(12, folds[2])]
    result = hierarchical_bootstrap(diffs, draws=4000)
    assert result["mean"] == pytest.approx(np.mean(folds))
    t_test = stats.ttest_1samp(folds, 0.0)
    low, high = t_test.confidence_interval(0.95)
    assert result["low"] == pytest.approx(low, rel=0.05) and result["high"] == pytest.approx(high, rel=0.05)
    assert result["p"] == pytest.approx(t_test.pvalue, rel=0.1) and result["p"] > 0.5
    consistent = hierarchical_bootstrap([np.full(10, 0.02) + 0.001 * np.arange(10) for _ in range(5)], draws=4000)
    assert consistent["low"] > 0.02 and consistent["p"] < 1e-6  # only the cases' spread, a small one
    assert consistent["se"] > 0  # equal fold means: the t-test over them alone would see no spread at all
    with pytest.raises(ValueError, match="not finite"):
        hierarchical_bootstrap([np.array([0.1, np.nan]), np.array([0.2])])


def test_five_folds_of_one_sign_are_not_enough_when_they_spread_as_much_as_their_mean():
    # the draws of five positive folds never reach zero, so their percentiles called this "better"; with the
    # fold count's own t quantile and variance the sign is not settled
    folds = [0.0071, 0.0024, 0.0002, 0.0010, 0.0015]
    result = hierarchical_bootstrap([np.full(20, f) for f in folds], draws=4000)
    assert result["low"] < 0 < result["high"] and result["p"] > 0.05
    assert result["p"] == pytest.approx(stats.ttest_1samp(folds, 0.0).pvalue, rel=0.1)


def test_one_fold_has_no_interval():
    result = hierarchical_bootstrap([np.linspace(0.01, 0.03, 9)])
    assert result["mean"] == pytest.approx(0.02) and result["low"] is None and result["p"] == 1.0
    assert interval_text(result) == "no interval from 1 fold"
    assert interval_text({"low": -0.00123, "high": 0.0456}) == "[-0.0012, +0.0456]"


def test_holm_multiplies_the_smallest_p_by_the_count_and_keeps_the_order():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5] and holm([0.4, 0.9]) == pytest.approx([0.8, 0.9])


def test_which_models_are_compared():
    assert comparison_pairs(["usema", "usema-nosema", "nnunet"]) == [("usema", "usema-nosema"), ("usema", "nnunet")]
    assert comparison_pairs(["usema@all", "usema@bottleneck", "usema-nosema"]) == [
        ("usema@all", "usema-nosema"), ("usema@bottleneck", "usema-nosema")]


def study(commits=None):
    commits = commits or {}
    per_case, rows = [], []
    for fold in range(5):
        cases = [f"f{fold}c{i}" for i in range(8)]
        per_case += per_case_rows("usema", fold, {c: 0.80 + 0.002 * i for i, c in enumerate(cases)})
        per_case += per_case_rows("usema-nosema", fold, {c: 0.78 for c in cases})
        # nnU-Net ahead in some folds, behind in others
        per_case += per_case_rows("nnunet", fold, {c: 0.82 if fold % 2 else 0.79 for c in cases})
        for model in ("usema", "usema-nosema", "nnunet"):
            rows.append({"model": model, "fold": str(fold), "commit": commits.get(model, "abc")})
    return per_case, rows


def test_a_consistent_gain_is_better_and_a_fold_dependent_one_is_no_difference():
    per_case, rows = study()
    results = {r["control"]: r for r in paired_comparisons(per_case, rows, draws=4000)}
    better, level = results["usema-nosema"], results["nnunet"]
    assert better["folds"] == [0, 1, 2, 3, 4] and better["cases"] == 40
    assert better["mean"] == pytest.approx(0.027) and better["per_fold"][3] == pytest.approx(0.027)
    assert better["verdict"] == "better" and better["p_holm"] >= better["p"]
    assert level["verdict"] == "no difference" and level["low"] < 0 < level["high"]
    lines = comparison_lines(per_case, rows)
    assert "Holm-corrected over the 2 comparisons" in lines[0]
    assert lines[-2].startswith("| usema - usema-nosema | dice | 5 | 40 | +0.027, +0.027, +0.027, +0.027, +0.027 "
                                "| +0.0270 | [+0.02") and lines[-2].endswith("| better |")
    assert better["p_holm"] < 1e-3
    assert "interval and p: Student's t on folds - 1 degrees of freedom" in lines[0]
    budget = comparison_lines(per_case, rows, verdicts=False)
    assert budget[-2].endswith("| none (wall-clock budget) |")
    one_fold = [r for r in per_case if r["fold"] == "0"]
    assert comparison_lines(one_fold, rows, total_folds=5)[-2].endswith(
        "| no interval from 1 fold | - | pending (1 of 5 folds) |")


def test_an_ablation_is_its_own_family_and_leaves_the_controls_correction_alone():
    assert [comparison_family(label) for label in ("usema-nosema", "nnunet@compute", "usema-window",
                                                   "usema-linear@compute", "usema-full", "not-a-preset")] == [
        "controls", "controls", "ablation", "ablation", "ablation", "controls"]
    per_case, rows = study()
    alone = {r["control"]: r for r in paired_comparisons(per_case, rows, draws=4000)}
    for model, score in (("usema-window", 0.79), ("usema-mean", 0.80), ("usema-linear", 0.81)):
        for fold in range(5):
            per_case += per_case_rows(model, fold, {f"f{fold}c{i}": score for i in range(8)})
            rows.append({"model": model, "fold": str(fold), "commit": "abc"})
    results = {r["control"]: r for r in paired_comparisons(per_case, rows, draws=4000)}
    for control in ("usema-nosema", "nnunet"):  # corrected over their 2, as without the ablation
        assert results[control]["family"] == "controls"
        assert results[control]["p_holm"] == pytest.approx(alone[control]["p_holm"])
    window = results["usema-window"]
    assert window["family"] == "ablation" and window["p_holm"] == pytest.approx(3 * window["p"])
    lines = comparison_lines(per_case, rows)
    ablation = next(i for i, line in enumerate(lines) if line.startswith("Ablation, which part of SEMA carries"))
    assert "Holm-corrected over the 2 comparisons of this table" in lines[0]
    assert lines[ablation - 1] == "" and "over the 3 comparisons of this table" in lines[ablation]
    assert [line.split(" | ")[0] for line in lines if line.startswith("| usema - ")] == [
        "| usema - usema-nosema", "| usema - nnunet", "| usema - usema-window", "| usema - usema-mean",
        "| usema - usema-linear"]


def test_runs_of_different_commits_get_no_verdict():
    per_case, rows = study(commits={"usema-nosema": "def"})
    results = {r["control"]: r for r in paired_comparisons(per_case, rows, draws=1000)}
    assert results["usema-nosema"]["verdict"] == "mixed commits"
    assert results["nnunet"]["verdict"] == "no difference"


def test_run_means_and_the_fold_table_are_those_of_the_per_case_scores():
    per_case, _ = study()
    means = run_means(per_case)
    assert means[("usema", 2)]["dice"] == pytest.approx(0.80 + 0.002 * 3.5)
    assert means[("nnunet", 1)]["dice"] == pytest.approx(0.82)
    lines = fold_table_lines(means, ("dice",))
    assert "| nnunet | dice | 0.790 | 0.820 | 0.790 | 0.820 | 0.790 | 0.802 ± 0.016 |" in lines


def test_curves_against_steps(tmp_path):
    curves = [{"model": "usema", "fold": str(f), "epoch": str(e), "step": str(100 * e), "val_dice": str(v + f / 100)}
              for f in (0, 1) for e, v in ((1, 0.5), (2, 0.7))]
    lines = curve_lines(curves, tmp_path / "accuracy_x.png")
    assert "| model | 100 | 200 |" in lines and "| usema | 0.505 | 0.705 |" in lines
    assert (tmp_path / "accuracy_x.png").read_bytes()[:4] == b"\x89PNG"
    # a control with fold 0 only: the table's means compare fold 0 alone
    curves += [{"model": "nnunet", "fold": "0", "epoch": "1", "step": "100", "val_dice": "0.4"}]
    lines = curve_lines(curves, tmp_path / "accuracy_x.png")
    assert "mean over the folds every model has run (0):" in lines[2]
    assert "| usema | 0.500 | 0.700 |" in lines and "| nnunet | 0.400 |  |" in lines
