"""The head run the prediction benchmarks export: a randomly initialised WavLM saved like a checkpoint, speech and
prosody extracted, one separate-attn head trained (its quality is beside the point: these scripts measure the
pipeline). Imported by bench_predict.py, bench_onnx.py and bench_long.py, which run from this folder."""

from __future__ import annotations

from pathlib import Path

import polars as pl


def train_random_model(manifest: pl.DataFrame, work: Path, size: str, norm: str, fold: int, epochs: int
                       ) -> tuple[Path, Path]:
    """``(run folder, speech model folder)`` under ``work``: ``testing.random_wavlm`` of ``size`` and ``norm``,
    speech + prosody of ``manifest`` extracted on the CPU into ``work/train.h5``, a head trained ``epochs``
    epochs with ``fold`` held out (``core.protocol.ALL_FOLDS``: none), without the dialogue state."""
    from cache import CacheReader
    from heads.training.experiment import train_fold
    from heads.training.features import FeatureConfig, load_corpus_arrays
    from heads.training.train import TrainConfig
    from pipeline.extract import ExtractConfig, extract
    from pipeline.stages.speech import SpeechConfig
    from testing.random_wavlm import save_random_wavlm

    speech = save_random_wavlm(work / "wavlm", size, norm=norm)
    extract(work / "train.h5", manifest, ["speech", "prosody"], ExtractConfig(speech=SpeechConfig(model=str(speech))),
            device="cpu")
    run = work / "run"
    train_fold(load_corpus_arrays(CacheReader(work / "train.h5")), fold,
               TrainConfig(epochs=epochs, features=FeatureConfig(use_state=False)), [0], run)
    return run, speech
