"""Intervals and comparisons: checked against formulas and simulated experiments with a known truth."""

import numpy as np
import polars as pl
import pytest
from scipy import stats as scipy_stats

from core.metrics import ccc, mse, pearson
from heads.evaluation.evaluate import Evaluation, compare, summarise
from heads.evaluation.stats import (
    StatsConfig,
    aggregate,
    bootstrap_counts,
    fold_sums,
    fold_t_interval,
    hierarchical_counts,
    holm,
    interval,
    metrics_from_moments,
    moments_from_arrays,
    permutation_p_value,
    reading,
    swap_masks,
)


def test_metrics_from_sufficient_statistics_equal_the_direct_formulas():
    rng = np.random.default_rng(0)
    true = rng.uniform(1, 5, (300, 2))
    pred = 0.6 * true + rng.normal(0.5, 0.7, (300, 2))
    m = moments_from_arrays(pred[None], true, np.ones(300, int), np.array(["s"] * 300))
    got = metrics_from_moments(m.values[0, 0])  # one group: every row
    for d in range(2):
        assert got["ccc"][d] == pytest.approx(ccc(pred[:, d], true[:, d]), abs=1e-10)
        assert got["pearson"][d] == pytest.approx(pearson(pred[:, d], true[:, d]), abs=1e-10)
        assert got["mse"][d] == pytest.approx(mse(pred[:, d], true[:, d]), abs=1e-10)


def test_the_mean_over_folds_and_the_pooled_metric_are_the_documented_averages():
    rng = np.random.default_rng(1)
    folds, speakers = np.repeat([1, 2, 3], 40), np.repeat([f"s{i}" for i in range(6)], 20)
    true = rng.normal(3, 1, (120, 2))
    pred = true[None] + rng.normal(0, 0.5, (2, 120, 2))  # 2 seeds
    m = moments_from_arrays(pred, true, folds, speakers, seeds=(0, 1))
    point = aggregate(fold_sums(m.values, m.group_fold, 3))
    per_fold_seed = [[ccc(pred[s, folds == f, 0], true[folds == f, 0]) for f in (1, 2, 3)] for s in (0, 1)]
    assert point.mean["ccc"][0] == pytest.approx(np.mean(per_fold_seed), abs=1e-10)
    assert point.per_fold["ccc"][:, 0] == pytest.approx(np.mean(per_fold_seed, 0), abs=1e-10)
    assert point.pooled["ccc"][0] == pytest.approx(np.mean([ccc(pred[s, :, 0], true[:, 0]) for s in (0, 1)]), abs=1e-10)
    assert point.mean["ccc_avg"] == pytest.approx(point.mean["ccc"].mean(), abs=1e-12)


def test_bootstrap_draws_stay_within_each_fold_and_draw_as_many_speakers_as_it_has():
    group_fold = np.array([0, 0, 1, 1, 1, 2])
    counts = bootstrap_counts(group_fold, 500, np.random.default_rng(0))
    for fold, size in ((0, 2), (1, 3), (2, 1)):
        assert (counts[:, group_fold == fold].sum(1) == size).all()
    assert counts[:, 5].min() == 1  # a one-speaker fold always redraws its only speaker


def test_the_bootstrap_interval_of_a_mean_covers_the_truth_at_95_percent_and_matches_the_analytic_width():
    rng = np.random.default_rng(2)
    n, true_mean, covered, ratios = 50, 3.0, 0, []
    for _ in range(500):
        x = rng.normal(true_mean, 2.0, n)
        m = moments_from_arrays(x[None, :, None], np.zeros((n, 1)), np.zeros(n, int), np.arange(n))  # own groups
        sums = fold_sums(m.values, m.group_fold, 1, bootstrap_counts(m.group_fold, 2000, rng))  # [B, 1, 1, 1, 6]
        low, high = interval(sums[:, 0, 0, 0, 1] / sums[:, 0, 0, 0, 0], 0.95)
        covered += low <= true_mean <= high
        analytic = 2 * scipy_stats.t.ppf(0.975, n - 1) * x.std(ddof=1) / np.sqrt(n)
        ratios.append((high - low) / analytic)
    assert 0.92 <= covered / 500 <= 0.98
    assert 0.9 <= np.mean(ratios) <= 1.1


def _experiment(rng, extra_noise_b: float, folds: int = 5, speakers_per_fold: int = 4, per_speaker: int = 100):
    """Two variants sharing a common prediction (as heads on the same features do), each with its own noise.
    Population CCC = 1.75 / (2.2025 + sd^2): sd 0.4 gives 0.7407, sd 0.5754 gives 0.6907 (0.05 lower)."""
    n = folds * speakers_per_fold * per_speaker
    speaker = np.repeat(np.arange(folds * speakers_per_fold), per_speaker)
    fold = speaker // speakers_per_fold + 1
    true = rng.normal(0, 0.5, folds * speakers_per_fold)[speaker] + rng.normal(0, 1, n)
    base = 0.7 * true + rng.normal(0, 0.3, folds * speakers_per_fold)[speaker] + rng.normal(0, 0.5, n)
    a = base + rng.normal(0, 0.4, n)
    b = base + rng.normal(0, np.hypot(0.4, extra_noise_b), n)
    spk = np.array([f"s{k}" for k in speaker])
    return {label: moments_from_arrays(np.stack([p, p], -1)[None], np.stack([true, true], -1), fold, spk)
            for label, p in (("a", a), ("b", b))}


def test_exchangeable_variants_are_called_different_at_about_the_nominal_rate():
    rng = np.random.default_rng(3)
    config = StatsConfig(resamples=0, permutations=1000)
    p_values = [compare(_experiment(rng, 0.0), "a", config)["rows"][0]["p"] for _ in range(300)]
    assert 0.02 <= np.mean(np.array(p_values) < 0.05) <= 0.09


def test_a_planted_ccc_difference_of_0_05_on_20_speakers_is_detected():
    rng = np.random.default_rng(4)
    config = StatsConfig(resamples=500, permutations=1000)
    extra = np.sqrt(0.5754**2 - 0.4**2)  # population CCC 0.7407 -> 0.6907
    readings, deltas = [], []
    for _ in range(300):
        row = compare(_experiment(rng, extra), "a", config)["rows"][0]  # CCC-V of b minus a
        readings.append(row["reading"])
        deltas.append(row["delta"])
    assert np.mean(deltas) == pytest.approx(-0.05, abs=0.01)
    assert np.mean(np.array(readings) == "worse") >= 0.8


def test_the_speaker_bootstrap_is_wider_than_an_utterance_bootstrap_when_speakers_have_offsets():
    rng = np.random.default_rng(5)
    speaker = np.repeat(np.arange(10), 50)
    true = rng.normal(3, 1, 500)
    pred = true + rng.normal(0, 0.8, 10)[speaker] + rng.normal(0, 0.3, 500)  # each speaker its own offset
    widths = {}
    for name, groups in (("speaker", speaker), ("utterance", np.arange(500))):
        m = moments_from_arrays(pred[None, :, None], true[:, None], np.ones(500, int), groups)
        sums = fold_sums(m.values, m.group_fold, 1, bootstrap_counts(m.group_fold, 2000, rng))
        low, high = interval(metrics_from_moments(sums)["ccc"][:, 0, 0, 0], 0.95)
        widths[name] = high - low
    assert widths["speaker"] > 2 * widths["utterance"]


def test_identical_variants_are_never_different_and_all_swaps_are_enumerated_for_few_speakers():
    rng = np.random.default_rng(6)
    moments = _experiment(rng, 0.0, folds=2, speakers_per_fold=3, per_speaker=20)
    same = {"a": moments["a"], "copy": moments["a"]}
    row = compare(same, "a", StatsConfig(resamples=200))["rows"][0]
    assert row["delta"] == 0 and row["p"] == 1.0 and row["reading"] == "not distinguishable"
    far = _experiment(rng, 3.0, folds=2, speakers_per_fold=3, per_speaker=20)
    assert compare(far, "a", StatsConfig(resamples=200))["rows"][0]["p"] == pytest.approx(2 / 2**6)  # exact: 64 swaps


def test_holm_matches_the_step_down_definition():
    p = [0.01, 0.04, 0.03, 0.2]
    # sorted: 0.01 (x4), 0.03 (x3), 0.04 (x2), 0.2 (x1); each at least the one before it
    assert holm(p) == pytest.approx([0.04, 0.09, 0.09, 0.2])


def test_the_reading_needs_both_the_interval_and_the_adjusted_p_value():
    assert reading(0.01, 0.05, 0.01, 0.05) == "better"
    assert reading(-0.05, -0.01, 0.01, 0.05) == "worse"
    assert reading(-0.01, 0.05, 0.01, 0.05) == "not distinguishable"  # interval includes 0
    assert reading(0.01, 0.05, 0.2, 0.05) == "not distinguishable"  # test not significant


def test_summaries_report_fold_and_seed_spreads_with_ddof_1_and_intervals(tmp_path):
    rng = np.random.default_rng(7)
    rows, truth = [], rng.uniform(1, 5, (200, 2))
    for seed in (0, 1, 2):
        for i, t in enumerate(truth):
            rows.append({"utt_id": f"u{i}", "speaker": f"s{i // 20}", "fold": i // 40 + 1, "seed": seed,
                         "valence_true": t[0], "arousal_true": t[1], "valence_pred": t[0] + rng.normal(0, 0.8),
                         "arousal_pred": t[1] + rng.normal(0, 0.8)})
    preds = pl.DataFrame(rows)
    results = summarise(Evaluation(pl.DataFrame(), {"x": preds}, {"x": []}), StatsConfig(resamples=300))
    run = results["runs"]["x"]
    fold_ccc = [np.mean([ccc(preds.filter((pl.col("fold") == f) & (pl.col("seed") == s))["valence_pred"],
                             preds.filter((pl.col("fold") == f) & (pl.col("seed") == s))["valence_true"])
                         for s in (0, 1, 2)]) for f in range(1, 6)]
    assert run["sd_folds"]["ccc_v"] == pytest.approx(np.std(fold_ccc, ddof=1), abs=1e-9)
    seed_means = [np.mean([ccc(preds.filter((pl.col("fold") == f) & (pl.col("seed") == s))["valence_pred"],
                               preds.filter((pl.col("fold") == f) & (pl.col("seed") == s))["valence_true"])
                           for f in range(1, 6)]) for s in (0, 1, 2)]
    assert run["sd_seeds"]["ccc_v"] == pytest.approx(np.std(seed_means, ddof=1), abs=1e-9)
    low, high = run["mean_ci"]["ccc_v"]
    assert low < run["mean"]["ccc_v"] < high
    assert [r["n"] for r in run["per_speaker"]] == [20] * 10


def test_the_fold_t_interval_is_the_t_interval_of_the_fold_values():
    rng = np.random.default_rng(8)
    values = rng.normal(0.05, 0.04, (3, 5))  # 3 quantities x 5 folds
    low, high, p = fold_t_interval(values, 0.95)
    for q in range(3):
        expected = scipy_stats.t.interval(0.95, 4, loc=values[q].mean(), scale=scipy_stats.sem(values[q]))
        assert (low[q], high[q]) == pytest.approx(expected, abs=1e-12)
        assert p[q] == pytest.approx(scipy_stats.ttest_1samp(values[q], 0.0).pvalue, abs=1e-12)
    with_undefined = np.array([0.1, np.nan, 0.2, 0.3])
    assert fold_t_interval(with_undefined, 0.95)[0] == pytest.approx(
        scipy_stats.t.interval(0.95, 2, loc=0.2, scale=scipy_stats.sem([0.1, 0.2, 0.3]))[0])
    assert np.isnan(fold_t_interval(np.array([0.1]), 0.95)[0])  # one fold: no interval


def test_at_two_speakers_per_fold_the_old_interval_calls_a_null_difference_real_and_the_fold_t_does_not():
    """The calibration's headline case (IEMOCAP's shape), reproduced at a fixed seed: the percentile speaker
    bootstrap within folds flags a null difference far above 5 %; the t interval over folds stays at the level."""
    from heads.evaluation.calibration import Shape, measure, simulate

    rng = np.random.default_rng(11)
    shape, flagged = Shape(folds=5, speakers_per_fold=2, seeds=1), {"percentile-bootstrap": 0, "fold-t": 0}
    experiments = 800
    for _ in range(experiments):
        outcome = measure(simulate(rng, shape, "null"), rng, resamples=300, permutations=100)
        for method in flagged:
            low, high = outcome["difference"][method]
            flagged[method] += not low <= 0 <= high
    assert flagged["percentile-bootstrap"] / experiments > 0.15
    assert flagged["fold-t"] / experiments <= 0.06


def test_the_two_stage_bootstrap_fills_each_slot_with_one_folds_speakers():
    group_fold = np.array([0, 0, 1, 1, 1, 2])
    weights = hierarchical_counts(group_fold, 200, np.random.default_rng(0))  # [B, F, G]
    for b in range(200):
        for slot in range(3):
            drawn = np.flatnonzero(weights[b, slot])
            fold = group_fold[drawn[0]]
            assert (group_fold[drawn] == fold).all() and weights[b, slot].sum() == (group_fold == fold).sum()


def test_sampled_swaps_count_the_identity_once():
    masks = swap_masks(20, 500, np.random.default_rng(0))  # too many speakers to enumerate: sampled
    assert masks.shape == (500, 20) and not (masks == 0).all(1).any()  # no identity row slipped in first
    observed, null = np.array(0.3), np.r_[np.full(9, 0.1), np.full(491, 0.5)]
    assert permutation_p_value(observed, null, exact=False) == pytest.approx((1 + 491) / 501)


def test_with_five_speakers_or_fewer_no_difference_is_called_real_and_the_table_says_why():
    rng = np.random.default_rng(12)
    far = _experiment(rng, 3.0, folds=2, speakers_per_fold=2, per_speaker=40)  # 4 speakers, a huge difference
    result = compare(far, "a", StatsConfig(resamples=0))
    assert {r["reading"] for r in result["rows"]} == {"not distinguishable"}
    assert any("cannot give p < 0.05" in note and "2/2^4 = 0.125" in note for note in result["notes"])


def test_the_calibration_table_is_looked_up_at_the_nearest_shape(tmp_path):
    from heads.evaluation.calibration import measured_at

    rows = [{"scenario": sc, "folds": 5, "speakers_per_fold": g, "seeds": s, "experiments": 10,
             "quantity": "difference", "method": "fold-t", "truth": 0.0, "rejected": r, "covered": c, "width": 0.1}
            for g in (2, 10) for s in (1, 3)
            for sc, r, c in (("null", 0.05, 0.95), ("null-heterogeneous", 0.04 + g / 1000, 0.94), ("effect", 0.7, 0.96))]
    rows.append({**rows[0], "scenario": "trained-null", "speakers_per_fold": 10, "seeds": 1, "rejected": 0.02,
                 "covered": 0.91})  # trained heads: one seed only
    pl.DataFrame(rows).write_csv(tmp_path / "c.csv")
    near = measured_at("fold-t", "difference", 5, 3.0, 2, path=tmp_path / "c.csv")  # 3 speakers -> 2, 2 seeds -> 1
    assert near == {"shape": "5 folds x 2 speakers, 1 seed(s)", "coverage": 0.94, "false_positive": 0.05,
                    "power": 0.7}
    three_seeds = measured_at("fold-t", "difference", 5, 10, 3, path=tmp_path / "c.csv")
    assert three_seeds["shape"] == "5 folds x 10 speakers, 3 seed(s)" and three_seeds["coverage"] == 0.91
    assert measured_at("fold-t", "difference", 10, 2, 1, path=tmp_path / "c.csv") is None  # no 10-fold shape


def test_a_t_interval_of_a_ccc_is_clipped_to_the_ccc_range():
    rng = np.random.default_rng(9)
    rows = []
    for fold in (1, 2, 3):
        for i in range(40):
            t = rng.normal(3, 1)
            p = t if fold < 3 else t + rng.normal(0, 1)  # two perfect folds, one noisy one
            rows.append({"utt_id": f"f{fold}u{i}", "speaker": f"s{fold}{i % 2}", "fold": fold, "seed": 0,
                         "valence_true": t, "arousal_true": t, "valence_pred": p, "arousal_pred": p})
    run = summarise(Evaluation(pl.DataFrame(), {"x": pl.DataFrame(rows)}, {"x": []}), StatsConfig(resamples=0))
    low, high = run["runs"]["x"]["mean_ci"]["ccc_v"]
    unclipped = fold_t_interval(np.array([1.0, 1.0, run["runs"]["x"]["folds"]["3"]["ccc_v"]]), 0.95)
    assert -1 < unclipped[0] and unclipped[1] > 1  # the raw t interval leaves [-1, 1] above only
    assert high == 1.0 and low == pytest.approx(unclipped[0])
