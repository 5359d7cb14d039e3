"""Is the spread of the seeds' heads an honest uncertainty? Rank correlation of the per-row sd across seeds with
the error of the seeds' mean, on held-out folds.

    .venv/bin/python benchmarks/bench_uncertainty.py [--seeds 5] [--corpora emodb,synthetic] [--epochs 30]

For each corpus: speech (random tiny WavLM: no real weights can be downloaded here) and prosody extracted once,
the separate-attn head trained on every fold with ``--seeds`` seeds; on each fold's test rows, Spearman's rho
between ``sd`` over seeds and ``|mean over seeds - label|``, per dimension. Printed: rho per fold, the mean over
folds with a t interval over folds, and the share of the worst-sd quintile's error over the best quintile's.
Corpora: EmoDB (../shared/corpora/emodb, 535 real utterances; skipped when absent) and the demo's synthetic
dialogues (another generator seed than the demo's, so nothing here was tuned on what it measures).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def corpus_cache(name: str, work: Path) -> Path:
    from demo import SHARED_EMODB
    from pipeline.corpora import build_manifest
    from pipeline.corpora.synthetic import write_synthetic_corpus
    from pipeline.extract import ExtractConfig, extract
    from pipeline.stages.speech import SpeechConfig
    from testing.random_wavlm import save_random_wavlm

    if name == "emodb":
        manifest, _ = build_manifest("emodb", root=str(SHARED_EMODB))
    else:
        manifest, _ = build_manifest("manifest", manifest=str(write_synthetic_corpus(work / "synthetic", seed=11)))
    speech = save_random_wavlm(work / "wavlm", "tiny", norm="layer")
    cache = work / f"{name}.h5"
    extract(cache, manifest, ["speech", "prosody"], ExtractConfig(speech=SpeechConfig(model=str(speech))), device="cpu")
    return cache


def fold_correlations(cache: Path, seeds: int, epochs: int, work: Path) -> list[dict]:
    import polars as pl
    from scipy.stats import spearmanr

    from cache import CacheReader
    from heads.training.experiment import train_fold
    from heads.training.features import FeatureConfig, load_corpus_arrays
    from heads.training.train import TrainConfig

    arrays = load_corpus_arrays(CacheReader(cache))
    config = TrainConfig(epochs=epochs, features=FeatureConfig(use_state=False))
    out = []
    for fold in arrays.experiments():
        predictions = train_fold(arrays, fold, config, list(range(seeds)), work / cache.stem / f"fold{fold}")
        row = {"fold": fold, "n": predictions["utt_id"].n_unique()}
        for d in ("valence", "arousal"):
            table = predictions.group_by("utt_id").agg(
                (pl.col(f"{d}_pred").std(ddof=1)).alias("sd"),
                pl.col(f"{d}_pred").mean().alias("mean"),
                pl.col(f"{d}_true").first().alias("true"))
            sd, error = table["sd"].to_numpy(), np.abs(table["mean"].to_numpy() - table["true"].to_numpy())
            row[f"rho_{d[0]}"] = float(spearmanr(sd, error).statistic)
            low, high = np.quantile(sd, [0.2, 0.8])
            row[f"ratio_{d[0]}"] = float(error[sd >= high].mean() / max(error[sd <= low].mean(), 1e-12))
        out.append(row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--corpora", default="emodb,synthetic")
    args = parser.parse_args()
    from scipy.stats import t

    from demo import SHARED_EMODB

    for name in args.corpora.split(","):
        if name == "emodb" and not SHARED_EMODB.is_dir():
            print(f"emodb: skipped, not at {SHARED_EMODB}")
            continue
        with tempfile.TemporaryDirectory(prefix="bench_uncertainty-") as tmp:
            rows = fold_correlations(corpus_cache(name, Path(tmp)), args.seeds, args.epochs, Path(tmp))
        print(f"{name}: separate-attn, {args.seeds} seeds, {args.epochs} epochs, {len(rows)} folds")
        print(f"{'fold':>5} {'n':>5} {'rho V':>7} {'rho A':>7} {'err ratio V':>12} {'err ratio A':>12}")
        for r in rows:
            print(f"{r['fold']:5d} {r['n']:5d} {r['rho_v']:7.3f} {r['rho_a']:7.3f} {r['ratio_v']:12.2f} "
                  f"{r['ratio_a']:12.2f}")
        for d in ("v", "a"):
            values = np.array([r[f"rho_{d}"] for r in rows])
            half = t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
            print(f"  mean rho {d.upper()}: {values.mean():.3f} [{values.mean() - half:.3f}, {values.mean() + half:.3f}] "
                  "(t over folds); err ratio = mean |error| of the highest-sd fifth / the lowest-sd fifth")


if __name__ == "__main__":
    main()
