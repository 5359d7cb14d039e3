"""Head settings against each other and against the linear baseline, on several caches, with intervals.

    .venv/bin/python benchmarks/bench_head_defaults.py --caches emodb,planted,synthetic \
        --specs "separate-attn,separate-attn+batch-size=0,linear" --baseline separate-attn --seeds 3

Each cache gets one ablation (``heads.studies.ablation.run_ablation``: every spec x every fold x the seeds) and its
table of means with speaker-bootstrap intervals and the paired differences from ``--baseline``. The caches:

* ``emodb``: the 535 real EmoDB utterances (../shared/corpora/emodb) through the real extraction with the
  demo's small random WavLM (its speech block carries no emotion; prosody does);
* ``planted``: ``tests/synth_cache.planted_cache`` (valence linear in two prosody features, arousal linear in
  four speech dimensions of one layer, loud noise elsewhere): a world made for the linear baseline;
* ``synthetic``: the demo's synthetic dialogue corpus (glottal-pulse speech whose prosody encodes valence and
  arousal non-linearly) through the real extraction, states included;
* ``planted-swap``: the same with the relations swapped (valence in speech, arousal in prosody), another seed;
* ``sticky``: ``tests/synth_cache.sticky_dialogue_cache`` (dialogues whose emotion persists; noisy features)
  with its cross-fitted states;
* ``iemocap-shape``: ``benchmarks/bench_heads.build_cache`` (10,039 rows, wavlm-large shapes, planted
  structure in some layers): what a default costs in time at IEMOCAP scale.

Caches are built once in ``--work`` and reused. Used to choose the heads' defaults (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def build(name: str, work: Path) -> Path:
    """The cache ``name`` in ``work`` (built the first time)."""
    cache = work / f"{name}.h5"
    if cache.is_file():
        return cache
    work.mkdir(parents=True, exist_ok=True)
    if name in ("planted", "planted-swap"):
        from tests.synth_cache import planted_cache

        return planted_cache(cache, seed=int(name == "planted-swap"), swap=name == "planted-swap")
    if name == "sticky":
        import torch

        from pipeline.stages.state import run_state_stage
        from tests.synth_cache import sticky_dialogue_cache
        from tests.test_state import SMALL

        sticky_dialogue_cache(cache)
        run_state_stage(str(cache), SMALL, torch.device("cpu"))
        return cache
    if name == "iemocap-shape":
        from bench_heads import build_cache

        build_cache(cache, 10039)
        return cache
    from demo import SHARED_EMODB
    from pipeline.corpora import build_manifest
    from pipeline.corpora.synthetic import write_synthetic_corpus
    from pipeline.extract import ExtractConfig, extract
    from pipeline.stages.speech import SpeechConfig
    from testing.random_wavlm import save_random_wavlm

    if name == "emodb":
        manifest, _ = build_manifest("emodb", root=str(SHARED_EMODB))
    elif name == "synthetic":
        manifest, _ = build_manifest("manifest", manifest=str(write_synthetic_corpus(work / "synthetic_corpus")))
    else:
        raise SystemExit(f"unknown cache {name}")
    model = work / "small_wavlm"
    if not (model / "config.json").is_file():
        save_random_wavlm(model, "small")
    extract(cache, manifest, ["speech", "prosody", "state"], ExtractConfig(speech=SpeechConfig(model=str(model))),
            device="cpu")
    return cache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--caches", default="emodb,planted,synthetic")
    parser.add_argument("--specs", required=True, help="comma-separated variant specs (heads.training.variants)")
    parser.add_argument("--baseline", default=None, help="spec the others are compared with (default: the first)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_head_defaults"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from heads.studies.ablation import run_ablation
    from heads.training.train import TrainConfig
    from heads.training.variants import parse_variant, run_label
    from pipeline.runtime.allocator import keep_freed_memory

    keep_freed_memory()
    configs = [parse_variant(spec, TrainConfig()) for spec in args.specs.split(",")]
    baseline = run_label(parse_variant(args.baseline, TrainConfig())) if args.baseline else None
    for name in args.caches.split(","):
        cache = build(name, args.work)
        started = time.perf_counter()
        from cache import CacheReader

        folds = sorted(set(CacheReader(cache).manifest["fold"].to_list()))
        markdown, _, _ = run_ablation(cache, configs, folds, list(range(args.seeds)), args.work / f"runs_{name}",
                                      baseline=baseline, overwrite=True)
        print(f"\n## {name}: {len(configs)} specs x {len(folds)} folds x {args.seeds} seeds "
              f"({time.perf_counter() - started:.0f} s)\n\n{markdown}", flush=True)


if __name__ == "__main__":
    main()
