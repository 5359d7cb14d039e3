"""Aggregate head runs: metrics per fold, over folds, over seeds and pooled, each with an interval chosen by
calibration; paired comparisons against a baseline; per-speaker, per-category and per-group breakdowns, as one
``summarise`` dict (``heads.reporting.tables`` renders and writes it).

What the numbers mean (also written into every table and metrics.json):

* a fold's metric is computed on that fold's test utterances, for each seed, then averaged over seeds;
* ``mean`` is the mean over folds (the research note's table); ``± fold sd`` the sample sd (ddof=1) of the
  fold metrics; ``seed sd`` the sample sd over seeds of the mean over folds (spread from training noise);
* ``pooled`` is computed on all folds' test utterances at once (then averaged over seeds);
* ``[lo, hi]`` is a 95 % interval chosen by calibration (``heads.evaluation.stats``): with k folds a t interval over the
  folds, with one test set (or the mean over predefined test sets) a speaker bootstrap; it is withheld, with a
  reason, where the calibration says it would not hold its level at the corpus's shape (``Design``);
* ``p`` of a difference is a paired speaker-permutation test (exact under exchangeability of the two variants'
  predictions per speaker), Holm-adjusted over the variants compared, separately per metric.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import polars as pl

from core.columns import TARGETS
from core.errors import InputError
from core.metrics import dimension_metrics
from heads.evaluation.calibration import measured_at
from heads.evaluation.stats import (
    Moments,
    StatsConfig,
    aggregate,
    bootstrap_counts,
    fold_sums,
    fold_t_interval,
    holm,
    interval,
    intervals,
    metrics_from_moments,
    permutation_p_value,
    reading,
    smallest_permutation_p,
    speaker_moments,
    swap_masks,
)
from heads.training.runs import HISTORY_FILE, HISTORY_SCHEMA, read_run

ATTENTION_COLUMNS = ("attn_valence_prosody", "attn_valence_other", "attn_arousal_speech", "attn_arousal_other")
COMPARED = {"CCC-V": "ccc_v", "CCC-A": "ccc_a", "CCC-Avg": "ccc_avg"}
MEANING = ("mean over folds (each fold: mean over seeds) [95 % interval, see below] ± sd over folds (ddof=1); "
           "seed sd: sd over seeds of the mean over folds (ddof=1)")
METHOD_WORDS = {"fold-t": "t interval over the folds (df = folds - 1; each fold: mean over seeds)",
                "percentile-bootstrap": "speaker-bootstrap percentile interval (speakers resampled within each test "
                                        "set)"}
P_WORDS = ("paired speaker-permutation test (exact under exchangeability of the two variants' predictions per "
           "speaker)")
# An interval is printed when the calibration measured it at least this good at the nearest shape (the table then
# states its measured coverage); below, it would mislead (the percentile bootstrap at 2 speakers per fold: 72-80 %).
TRUSTED = {"coverage": 0.85, "false_positive": 0.10}
METRIC_RANGE = {"ccc": (-1.0, 1.0), "pearson": (-1.0, 1.0), "ccc_avg": (-1.0, 1.0), "mse": (0.0, np.inf),
                "rmse": (0.0, np.inf)}


@dataclass(frozen=True)
class Design:
    """The shape of an evaluation, which decides its interval (``heads.evaluation.stats``) and what the calibration
    measured at that shape (``heads.evaluation.calibration.measured_at``)."""

    folds: int
    speakers: int  # test speakers of all folds
    seeds: int
    partitions: bool = False

    @property
    def speakers_per_fold(self) -> float:
        return self.speakers / max(self.folds, 1)

    @property
    def method(self) -> str:
        """k folds: the t interval over folds; one test set or predefined test sets: the speaker bootstrap."""
        return "fold-t" if self.folds >= 2 and not self.partitions else "percentile-bootstrap"

    def calibration(self, quantity: str) -> dict | None:
        """The calibration of this design's method for ``quantity`` (``mean`` or ``difference``) at the nearest
        calibrated shape; None when no shape with this many folds was calibrated."""
        folds = 1 if self.method == "percentile-bootstrap" else self.folds
        return measured_at(self.method, quantity, folds, self.speakers_per_fold, self.seeds)

    def withheld(self, quantity: str) -> str | None:
        """Why this design's interval for ``quantity`` is not printed (None: it is): the calibration measured it
        below ``TRUSTED`` at the nearest shape. An uncalibrated design gets its interval, and the words say its
        coverage is unknown (``coverage_words``)."""
        measured = self.calibration(quantity)
        if measured is None:
            return None
        if measured["coverage"] < TRUSTED["coverage"] or (
                quantity == "difference" and (measured["false_positive"] or 0) > TRUSTED["false_positive"]):
            return (f"at {measured['shape']} the {self.method} interval covered the truth in only "
                    f"{measured['coverage']:.0%} of simulated experiments")
        return None

    def coverage_words(self, quantity: str) -> str:
        """One sentence: the measured coverage (and false positives) of the interval at the nearest shape."""
        measured = self.calibration(quantity)
        if measured is None:
            return (f"Its coverage at this shape ({self.folds} fold(s), {self.speakers_per_fold:.0f} test speakers per "
                    "fold) is unknown: no such shape was calibrated.")
        fp = (f" and called a null difference real in at most {measured['false_positive']:.1%}"
              if quantity == "difference" and measured["false_positive"] is not None else "")
        return (f"Measured at the nearest calibrated shape ({measured['shape']}): it covered the truth in at least "
                f"{measured['coverage']:.1%} of simulated experiments{fp} (benchmarks/bench_stats.py --calibration).")


def design_of(moments: Moments, partitions: bool) -> Design:
    return Design(folds=len(moments.folds), speakers=len(moments.groups), seeds=len(moments.seeds),
                  partitions=partitions)


@dataclass
class Evaluation:
    per_fold: pl.DataFrame  # label, fold, n_test, seeds, ccc_v, ..., rmse_a (mean over seeds)
    predictions: dict[str, pl.DataFrame]  # label -> all test predictions of all folds and seeds
    records: dict[str, list[dict]]  # label -> run.json of each fold
    seed_sd: pl.DataFrame | None = None  # label, fold, ccc_v_sd, ccc_a_sd: sd over seeds (ddof=1), null for one seed


def experiment_title(record: dict) -> str:
    """How a run's experiment is named in tables: ``fold 3`` or a test set (``Test1``); older runs: by fold."""
    return record.get("test_set") or f"fold {record['fold']}"


def evaluate_runs(run_dirs: list[str | Path]) -> Evaluation:
    """Read runs (one folder per fold and configuration) and compute per-fold metrics."""
    if not run_dirs:
        raise InputError("no runs given")
    rows, spread, predictions, records = [], [], {}, {}
    for run_dir in run_dirs:
        record, preds = read_run(run_dir)
        record["run_dir"] = str(run_dir)  # in memory only: where the report finds history.csv
        label = record["label"]
        if any(r["fold"] == record["fold"] for r in records.get(label, [])):
            raise InputError(f"{run_dir}: a second run of '{label}' for fold {record['fold']}; give each once")
        records.setdefault(label, []).append(record)
        predictions[label] = pl.concat([predictions[label], preds], how="diagonal_relaxed") \
            if label in predictions else preds
        per_seed = [dimension_metrics(preds.filter(pl.col("seed") == s)) for s in record["seeds"]]
        means = {k: float(np.mean([m[k] for m in per_seed])) for k in per_seed[0]}
        rows.append({"label": label, "fold": record["fold"], "test_set": experiment_title(record),
                     "n_test": preds.height // len(record["seeds"]),
                     "seeds": len(record["seeds"]), **means})
        spread.append({"label": label, "fold": record["fold"], **{
            f"{k}_sd": float(np.std([m[k] for m in per_seed], ddof=1)) if len(per_seed) > 1 else None
            for k in ("ccc_v", "ccc_a")}})
    check_complete(records)
    per_fold = pl.DataFrame(rows).sort("label", "fold")
    seed_sd = pl.DataFrame(spread, schema={"label": pl.String, "fold": pl.Int64, "ccc_v_sd": pl.Float64,
                                           "ccc_a_sd": pl.Float64})
    return Evaluation(per_fold, predictions, records, seed_sd)


def check_complete(records: dict[str, list[dict]]) -> None:
    """Refuse runs that do not form one comparable table: every label must cover the same folds, with the
    same seeds and the same settings in each fold, from one cache."""
    folds = {label: sorted(r["fold"] for r in recs) for label, recs in records.items()}
    everything = sorted({f for fs in folds.values() for f in fs})
    incomplete = {label: sorted(set(everything) - set(fs)) for label, fs in folds.items() if fs != everything}
    if incomplete:
        listing = "; ".join(f"'{label}' lacks fold(s) {missing}" for label, missing in incomplete.items())
        raise InputError(f"runs do not cover the same folds ({listing}); train the missing folds or leave the "
                         "incomplete labels out")
    for label, recs in records.items():
        for field in ("seeds", "config", "cache"):
            values = {json.dumps(r.get(field), sort_keys=True, default=str) for r in recs}
            if len(values) > 1:
                differing = sorted(r["fold"] for r in recs if json.dumps(r.get(field), sort_keys=True, default=str)
                                   != json.dumps(recs[0].get(field), sort_keys=True, default=str))
                raise InputError(f"runs labelled '{label}' differ in {field} (fold(s) {differing} vs fold "
                                 f"{recs[0]['fold']}); give runs of one setting a label each (train-heads --label)")


def _flat(metrics: dict[str, np.ndarray], index: tuple = ()) -> dict[str, float]:
    """``{ccc: [..., D]}`` -> ``{ccc_v, ccc_a, ...}`` (floats; None for undefined) at ``index``."""
    out = {}
    for name, values in metrics.items():
        if name == "ccc_avg":
            out[name] = _number(values[index])
        else:
            for d, dim in enumerate(TARGETS):
                out[f"{name}_{dim[0]}"] = _number(values[(*index, d)])
    return out


def _number(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _sd(values: np.ndarray) -> float | None:
    """Sample sd (ddof=1) over the first axis; None with fewer than 2 values or undefined ones."""
    return _number(np.std(values, ddof=1)) if len(values) > 1 else None


def label_summary(preds: pl.DataFrame, stats: StatsConfig, partitions: bool = False) -> tuple[dict, Moments]:
    """Point estimates, spreads and intervals of one run label (see the module docstring)."""
    moments = speaker_moments(preds)
    folds = len(moments.folds)
    point = aggregate(fold_sums(moments.values, moments.group_fold, folds))
    design = design_of(moments, partitions)
    out: dict = {
        "folds": {str(f): {**_flat(point.per_fold, (i,)), "n_test": int(_rows(moments, i)),
                           "speakers": int((moments.group_fold == i).sum())}
                  for i, f in enumerate(moments.folds)},
        "mean": _flat(point.mean), "pooled": _flat(point.pooled),
        "sd_folds": {k: _sd(np.array([m[k] for m in _fold_list(point)], dtype=float)) for k in _flat(point.mean)},
        "sd_seeds": {k: _sd(np.array([_flat(point.per_seed, (s,))[k] for s in range(len(moments.seeds))],
                                     dtype=float)) for k in _flat(point.mean)},
        "seeds": list(moments.seeds),
        "interval": {"method": design.method, "words": METHOD_WORDS[design.method],
                     "withheld": design.withheld("mean"), "calibration": design.calibration("mean")},
    }
    if design.method == "fold-t" and not out["interval"]["withheld"]:
        bounds = {k: np.clip(fold_t_interval(np.moveaxis(v, 0, -1), stats.confidence)[:2], *METRIC_RANGE[k])
                  for k, v in point.per_fold.items()}  # a t interval can leave a metric's range: clip it to it
        low, high = _flat({k: b[0] for k, b in bounds.items()}), _flat({k: b[1] for k, b in bounds.items()})
        out["mean_ci"] = {k: [low[k], high[k]] for k in low}
    if stats.resamples:
        counts = bootstrap_counts(moments.group_fold, stats.resamples, np.random.default_rng(stats.seed))
        draws = aggregate(fold_sums(moments.values, moments.group_fold, folds, counts))
        keys = (("pooled_ci", draws.pooled),) + ((("mean_ci", draws.mean),) if design.method != "fold-t"
                                                 and not out["interval"]["withheld"] else ())
        for key, metrics in keys:
            low, high = (_flat(bound) for bound in intervals(metrics, stats.confidence))
            out[key] = {k: [low[k], high[k]] for k in low}
        low, high = intervals(draws.per_fold, stats.confidence)
        for i, f in enumerate(moments.folds):
            fold = Design(1, out["folds"][str(f)]["speakers"], len(moments.seeds), True)
            if fold.withheld("mean"):  # a fold of 2 speakers has 3 distinct resamples: no interval at all
                out["folds"][str(f)]["ci_withheld"] = fold.withheld("mean")
                continue
            fold_low, fold_high = _flat(low, (i,)), _flat(high, (i,))
            out["folds"][str(f)]["ci"] = {k: [fold_low[k], fold_high[k]] for k in fold_low}
    return out, moments


def _rows(moments: Moments, fold_index: int) -> float:
    return moments.values[0, moments.group_fold == fold_index, 0, 0].sum()


def _fold_list(point) -> list[dict]:  # noqa: ANN001 - Aggregates
    return [_flat(point.per_fold, (i,)) for i in range(point.per_fold["ccc"].shape[0])]


def per_speaker(moments: Moments) -> list[dict]:
    """Each speaker's test utterances: n, CCC, MSE per dimension (mean over seeds)."""
    by_speaker: dict[str, list[int]] = {}
    for g, (_, speaker) in enumerate(moments.groups):
        by_speaker.setdefault(speaker, []).append(g)
    out = []
    for speaker, groups in sorted(by_speaker.items()):
        metrics = metrics_from_moments(moments.values[:, groups].sum(1))  # [S, D]
        flat = _flat({k: v.mean(0) for k, v in metrics.items() if k in ("ccc", "mse")})
        folds = sorted({moments.folds[moments.group_fold[g]] for g in groups})
        out.append({"speaker": speaker, "folds": folds, "n": int(moments.values[0, groups, 0, 0].sum()), **flat})
    return out


def per_category(preds: pl.DataFrame) -> list[dict]:
    """Per emotion category (where the manifest has one): n, mean error (pred - true) and mean absolute error
    per dimension, over all seeds. CCC within a category is not meaningful: its true values barely vary."""
    if "emotion" not in preds.columns or preds["emotion"].null_count() == preds.height:
        return []
    seeds = preds["seed"].n_unique()
    errors = preds.with_columns([(pl.col(f"{d}_pred") - pl.col(f"{d}_true")).alias(f"err_{d[0]}") for d in TARGETS])
    table = errors.group_by("emotion").agg(
        (pl.len() / seeds).cast(pl.Int64).alias("n"),
        *[pl.col(f"err_{d[0]}").mean().alias(f"bias_{d[0]}") for d in TARGETS],
        *[pl.col(f"err_{d[0]}").abs().mean().alias(f"mae_{d[0]}") for d in TARGETS],
    ).sort("emotion")
    return table.to_dicts()


def compare(moments: dict[str, Moments], baseline: str, stats: StatsConfig, partitions: bool = False) -> dict:
    """Each other label minus ``baseline`` on CCC-V, CCC-A, CCC-Avg (mean over folds): the difference, its
    per-fold values, the design's interval (``Design.method``: a paired t interval over folds, or a paired
    speaker bootstrap), a speaker-permutation p-value, Holm-adjusted per metric over the labels compared, and its
    reading in words: "better"/"worse" only when the interval excludes 0 and the adjusted p is below the level."""
    if baseline not in moments:
        raise InputError(f"baseline '{baseline}' is not among the runs ({', '.join(moments)})")
    base = moments[baseline]
    design = design_of(base, partitions)
    rows = []
    for label, m in moments.items():
        if label == baseline:
            continue
        if m.groups != base.groups or m.utt_ids != base.utt_ids or len(m.seeds) != len(base.seeds):
            raise InputError(f"'{label}' and the baseline '{baseline}' were not tested on the same utterances with "
                             f"the same number of seeds; a paired comparison needs both")
        rows.append((label, m, _difference(m, base, stats, design)))
    notes = []
    withheld = design.withheld("difference")
    if withheld:
        notes.append(f"No interval is printed: {withheld}; no difference is called real.")
    reachable = smallest_permutation_p(len(base.groups)) < stats.alpha
    if not reachable:
        notes.append(f"With {len(base.groups)} test speakers the permutation test cannot give p < {stats.alpha:g} (its "
                     f"smallest p is 2/2^{len(base.groups)} = {smallest_permutation_p(len(base.groups)):.3f}); no "
                     "difference can be called real: add speakers, or read the intervals only.")
    comparisons = []
    for name, key in COMPARED.items():
        adjusted = holm([np.nan if d[key]["p"] is None else d[key]["p"] for _, _, d in rows]) if rows else []
        for (label, _, d), p_holm in zip(rows, adjusted):
            entry = {"label": label, "metric": name, **d[key], "p_holm": _number(p_holm)}
            if withheld:
                entry["ci"] = None
            bounds = [np.nan if v is None else v for v in (entry["ci"] or [None, None])]
            entry["reading"] = reading(*bounds, p_holm, stats.alpha) if reachable \
                else "not distinguishable"
            comparisons.append(entry)
    return {"baseline": baseline, "rows": comparisons, "interval_method": design.method,
            "interval_words": METHOD_WORDS[design.method], "p_method": P_WORDS,
            "family": f"Holm over the {len(rows)} variant(s) compared with the baseline, separately for each of "
                      f"{', '.join(COMPARED)}",
            "calibration": design.calibration("difference"), "coverage": design.coverage_words("difference"),
            "notes": notes}


def _difference(a: Moments, b: Moments, stats: StatsConfig, design: Design) -> dict[str, dict]:
    folds = len(a.folds)
    sums_a, sums_b = (fold_sums(m.values, m.group_fold, folds) for m in (a, b))
    point_a, point_b = aggregate(sums_a), aggregate(sums_b)
    rng = np.random.default_rng(stats.seed)
    masks = swap_masks(len(a.groups), stats.permutations, rng)
    shift = fold_sums(b.values - a.values, a.group_fold, folds, masks)  # [P, S, F, D, 6]: swapped groups' change
    null_a, null_b = aggregate(sums_a + shift), aggregate(sums_b - shift)
    draws_a = draws_b = None
    if stats.resamples and design.method == "percentile-bootstrap":
        counts = bootstrap_counts(a.group_fold, stats.resamples, np.random.default_rng(stats.seed))
        draws_a, draws_b = (aggregate(fold_sums(m.values, m.group_fold, folds, counts)) for m in (a, b))
    out = {}
    for key in COMPARED.values():
        def pick(metrics: dict[str, np.ndarray], key: str = key) -> np.ndarray:
            return metrics["ccc_avg"] if key == "ccc_avg" else metrics["ccc"][..., TARGETS.index(
                {"v": "valence", "a": "arousal"}[key[-1]])]

        observed = pick(point_a.mean) - pick(point_b.mean)
        p = permutation_p_value(observed, pick(null_a.mean) - pick(null_b.mean), exact=len(masks) == 2 ** len(a.groups))
        per_fold = pick(point_a.per_fold) - pick(point_b.per_fold)
        ci = None
        if design.method == "fold-t":
            low, high, _ = fold_t_interval(per_fold, stats.confidence)
            ci = [_number(low), _number(high)]
        elif draws_a is not None:
            low, high = interval(pick(draws_a.mean) - pick(draws_b.mean), stats.confidence)
            ci = [_number(low), _number(high)]
        out[key] = {"delta": _number(observed), "ci": ci, "ci_method": design.method, "p": _number(p),
                    "p_method": "speaker permutation", "per_fold": {str(f): _number(v) for f, v in zip(a.folds, per_fold)}}
    return out


def per_group(preds: pl.DataFrame, stats: StatsConfig, partitions: bool) -> list[dict]:
    """For every group column of the predictions (``group_<column>``: gender, a corpus, ``--group-by``): each group's
    CCC with the design's interval (``label_summary`` on its rows), and the gap between its two largest groups."""
    out = []
    for column in [c for c in preds.columns if c.startswith("group_")]:
        name = column.removeprefix("group_")
        sizes = preds.group_by(column).len().sort(["len", column], descending=[True, False])
        values = [v for v in sizes[column].to_list() if v is not None]
        summaries = {}
        for value in values:
            rows = preds.filter(pl.col(column) == value)
            if rows.filter(pl.col("seed") == rows["seed"][0]).height < 2:
                continue
            summary, _ = label_summary(rows, replace(stats, resamples=min(stats.resamples, 1000)), partitions)
            summaries[value] = summary
            out.append({"column": name, "group": value, "n": int(rows.height // rows["seed"].n_unique()),
                        "speakers": int(rows["speaker"].n_unique()),
                        **{k: summary["mean"][k] for k in ("ccc_v", "ccc_a", "mse_v", "mse_a")},
                        "ci": {k: summary.get("mean_ci", {}).get(k) for k in ("ccc_v", "ccc_a")},
                        "interval": summary["interval"]["method"]})
        if len(summaries) >= 2:
            first, second = list(summaries)[:2]
            out.append({"column": name, "group": f"gap {first} - {second}", **group_gap(
                preds.filter(pl.col(column) == first), preds.filter(pl.col(column) == second), stats, partitions)})
    return out


def group_gap(a: pl.DataFrame, b: pl.DataFrame, stats: StatsConfig, partitions: bool) -> dict:
    """CCC of group ``a`` minus group ``b`` (mean over folds each) with an interval: a t interval over the folds'
    gaps when both groups are in every fold (k folds), else a bootstrap of each group's speakers (independent)."""
    ma, mb = speaker_moments(a), speaker_moments(b)
    pa, pb = (aggregate(fold_sums(m.values, m.group_fold, len(m.folds))) for m in (ma, mb))
    out: dict = {"n": None, "speakers": None}
    for key, d in (("ccc_v", 0), ("ccc_a", 1)):
        out[key] = _number(pa.mean["ccc"][d] - pb.mean["ccc"][d])
    if ma.folds == mb.folds and len(ma.folds) >= 2 and not partitions:
        gaps = pa.per_fold["ccc"] - pb.per_fold["ccc"]  # [F, D]
        bounds = {k: fold_t_interval(gaps[:, d], stats.confidence)[:2] for k, d in (("ccc_v", 0), ("ccc_a", 1))}
        out["interval"] = "fold-t"
    elif stats.resamples:
        rng = np.random.default_rng(stats.seed)
        draws = [aggregate(fold_sums(m.values, m.group_fold, len(m.folds),
                                     bootstrap_counts(m.group_fold, stats.resamples, rng))).mean["ccc"] for m in (ma, mb)]
        bounds = {k: interval(draws[0][:, d] - draws[1][:, d], stats.confidence) for k, d in (("ccc_v", 0), ("ccc_a", 1))}
        out["interval"] = "percentile-bootstrap"
    else:
        bounds, out["interval"] = {}, None
    out["ci"] = {k: [_number(lo), _number(hi)] for k, (lo, hi) in bounds.items()}
    return out


def _mean_layer_weights(records: list[dict]) -> list[float] | None:
    weights = [m["layer_weights"] for r in records for m in r["metrics_per_seed"].values() if m.get("layer_weights")]
    return np.mean(weights, axis=0).tolist() if weights else None


def summarise(evaluation: Evaluation, stats: StatsConfig = StatsConfig(), baseline: str | None = None) -> dict:
    """Everything ``metrics.json`` holds: per label its metrics, intervals, spreads, attention, layer weights,
    per-speaker and per-category breakdowns; the comparisons against ``baseline`` (default: the first label)."""
    runs, moments = {}, {}
    partitions = any(r.get("protocol") == "partitions" for recs in evaluation.records.values() for r in recs)
    for label, preds in evaluation.predictions.items():
        runs[label], moments[label] = label_summary(preds, stats, partitions)
        runs[label].update({
            "attention_mean": {c: float(preds[c].mean()) for c in ATTENTION_COLUMNS if c in preds.columns},
            "layer_weights": _mean_layer_weights(evaluation.records[label]),
            "per_speaker": per_speaker(moments[label]), "per_category": per_category(preds),
            "per_group": per_group(preds, stats, partitions),
        })
    comparisons = None
    if len(runs) > 1:
        comparisons = compare(moments, baseline or next(iter(runs)), stats, partitions)
    return {"meaning": MEANING, "stats": asdict(stats), "runs": runs, "comparisons": comparisons}


def run_warnings(evaluation: Evaluation) -> list[str]:
    """Every distinct protocol warning of the runs (``heads.training.features.protocol_warnings``), with the experiments
    and labels it concerns: validation that shares speakers or dialogues with training, test rows that share them
    with training rows, a corpus without dialogue context."""
    where: dict[str, list[str]] = {}
    for label, records in evaluation.records.items():
        for record in records:
            for warning in record.get("warnings", []):
                where.setdefault(warning, []).append(f"{label} {experiment_title(record)}")
    lines = []
    for warning, places in where.items():
        every = len(places) == sum(len(r) for r in evaluation.records.values())
        lines.append(f"{warning} ({'every run' if every else ', '.join(places[:4]) + (' ...' if len(places) > 4 else '')})")
    return lines


def learning_histories(evaluation: Evaluation) -> dict[str, pl.DataFrame]:
    """Label -> every run's ``history.csv`` with a ``fold`` column (runs without one, e.g. linear, are left out)."""
    out: dict[str, pl.DataFrame] = {}
    for label, records in evaluation.records.items():
        frames = [pl.read_csv(Path(r["run_dir"]) / HISTORY_FILE, schema=HISTORY_SCHEMA)
                  .with_columns(pl.lit(r["fold"]).alias("fold"))
                  for r in records if "run_dir" in r and (Path(r["run_dir"]) / HISTORY_FILE).is_file()]
        frames = [f for f in frames if f.height]
        if frames:
            out[label] = pl.concat(frames)
    return out
