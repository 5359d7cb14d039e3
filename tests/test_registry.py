"""Adding a feature set is one module and one registration line: a toy set registered in a test is extracted,
described, added to an existing cache without touching its other stages, and read by the heads."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from cache import CacheReader
from cache.summary import cache_summary, format_summary
from core.errors import InputError
from pipeline.corpora import read_generic_manifest
from pipeline.extract import ExtractConfig, extract
from pipeline.stages import registry
from pipeline.stages.feature_table import FeatureSet, FeatureTableConfig
from pipeline.stages.prosody import ProsodyConfig
from tests.synth import harmonic_tone, write_wav

TOY_NAMES = ("rms_dbfs", "peak_dbfs")


def toy_features(wave: np.ndarray, rate_hz: int) -> np.ndarray:
    """The toy set: RMS and peak level in dBFS (module level: feature functions are sent to worker processes)."""
    return 20 * np.log10([np.sqrt(np.mean(wave.astype(np.float64) ** 2)), np.abs(wave).max()])


@dataclass(frozen=True)
class ToyConfig(FeatureTableConfig):
    """Settings of the toy stage."""


TOY = FeatureSet("toy", "toy", "toy-v1", lambda: TOY_NAMES, toy_features)


@pytest.fixture
def toy_registered(monkeypatch):
    """The one registration line a new set needs, made for the duration of a test."""
    monkeypatch.setitem(registry.STAGES, "toy", registry.feature_table_stage(TOY, ToyConfig))


def _corpus(root: Path, amplitudes=(0.05, 0.1, 0.2, 0.4, 0.05, 0.1, 0.2, 0.4)) -> Path:
    lines = ["utt_id,path,speaker,fold,valence,arousal"]
    for i, amplitude in enumerate(amplitudes):
        write_wav(root / f"u{i}.wav", harmonic_tone(120.0 + 20 * i, seconds=0.5, amplitude=amplitude))
        lines.append(f"u{i},u{i}.wav,s{i % 4},{i % 4 + 1},{1 + i % 5},{5 - i % 5}")
    (root / "m.csv").write_text("\n".join(lines) + "\n")
    return root / "m.csv"


def _config() -> ExtractConfig:
    return ExtractConfig(prosody=ProsodyConfig(workers=1), toy=ToyConfig(workers=1))


def test_a_registered_set_is_extracted_into_its_own_group_with_its_values(tmp_path, toy_registered):
    df, _ = read_generic_manifest(_corpus(tmp_path))
    extract(tmp_path / "c.h5", df, ["toy"], _config(), device="cpu")
    reader = CacheReader(tmp_path / "c.h5")
    assert reader.stages == ["toy"] and list(reader.read("toy", "names")) == list(TOY_NAMES)
    import soundfile

    for i, path in enumerate(reader.manifest["path"].to_list()):  # independent: the file read back, numpy by hand
        wave, _ = soundfile.read(path)
        expected = 20 * np.log10(np.sqrt(np.mean(wave ** 2)))
        assert reader.read("toy", "values")[i, 0] == pytest.approx(expected, abs=0.05)
    assert reader.provenance("toy")["feature_set_version"] == "toy-v1"


def test_cache_info_describes_a_registered_set(tmp_path, toy_registered):
    df, _ = read_generic_manifest(_corpus(tmp_path))
    extract(tmp_path / "c.h5", df, ["toy"], _config(), device="cpu")
    reader = CacheReader(tmp_path / "c.h5")
    text = format_summary(cache_summary(reader, registry.stage_facts(reader)), reader.failures)
    assert "[toy] 8 of 8 ok; toy-v1, 2 features" in text


def test_adding_a_set_to_a_cache_keeps_the_stored_stages_as_they_were(tmp_path, toy_registered):
    df, _ = read_generic_manifest(_corpus(tmp_path))
    cache = tmp_path / "c.h5"
    extract(cache, df, ["prosody"], _config(), device="cpu")
    before = CacheReader(cache)
    values, provenance = before.read("prosody", "values"), before.provenance("prosody")
    extract(cache, df, ["prosody", "toy"], _config(), device="cpu")
    after = CacheReader(cache)
    assert after.stages == ["prosody", "toy"]
    assert after.provenance("prosody") == provenance  # not recomputed: the same record, created_utc included
    assert np.array_equal(after.read("prosody", "values"), values, equal_nan=True)


def test_requested_prosody_sets_expand_to_their_stages_in_run_order(toy_registered):
    assert registry.requested_stages(["state", "prosody", "speech"], {"prosody": ["toy", "praat"]}) == \
        ["speech", "prosody", "toy", "state"]
    with pytest.raises(InputError, match="unknown prosody feature set.*nope.*available: praat, egemaps, toy"):
        registry.requested_stages(["prosody"], {"prosody": ["nope"]})


def test_an_extract_config_round_trips_through_json_with_a_registered_set(toy_registered):
    import json

    from pipeline.models.state_model import StateModelConfig
    from pipeline.stages.speech import SpeechConfig
    from pipeline.stages.state import StateConfig

    config = ExtractConfig(toy=ToyConfig(sample_rate_hz=8000, workers=1), speech=SpeechConfig(frame_layers=(1, 2)),
                           state=StateConfig(kind="mamba", model=StateModelConfig(d_state=8)))
    assert ExtractConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert config.toy.sample_rate_hz == 8000
    with pytest.raises(TypeError, match="takes a ToyConfig"):
        ExtractConfig(toy=ProsodyConfig())


def test_the_heads_read_a_registered_set_alone_or_beside_praat(tmp_path, toy_registered):
    from core.protocol import experiment_split
    from heads.training.features import FeatureConfig, load_corpus_arrays, prepare_fold

    df, _ = read_generic_manifest(_corpus(tmp_path))
    extract(tmp_path / "c.h5", df, ["prosody", "toy"], _config(), device="cpu")
    arrays = load_corpus_arrays(CacheReader(tmp_path / "c.h5"))
    assert set(arrays.prosody_sets) == {"praat", "toy"} and arrays.prosody_names["toy"] == list(TOY_NAMES)
    split = experiment_split(arrays.folds, None, arrays.speakers, arrays.dialogs, arrays.usable, 1, 0.25)
    toy = prepare_fold(arrays, split, FeatureConfig(prosody_sets=("toy",)))
    both = prepare_fold(arrays, split, FeatureConfig(prosody_sets=("praat", "toy")))
    assert toy.train.prosody.shape[1] == 2 and both.train.prosody.shape[1] == 2 + len(arrays.prosody_names["praat"])
    with pytest.raises(InputError, match="no egemaps feature set in this cache.*extract --prosody praat,toy,egemaps"):
        prepare_fold(arrays, split, FeatureConfig(prosody_sets=("egemaps",)))


def test_a_stored_set_of_another_version_is_refused_not_mixed(tmp_path, monkeypatch, toy_registered):
    df, _ = read_generic_manifest(_corpus(tmp_path))
    extract(tmp_path / "c.h5", df, ["toy"], _config(), device="cpu")
    newer = FeatureSet("toy", "toy", "toy-v2", lambda: TOY_NAMES, toy_features)
    monkeypatch.setitem(registry.STAGES, "toy", registry.feature_table_stage(newer, ToyConfig))
    with pytest.raises(InputError, match="another version of its feature set .feature_set_version: toy-v1 -> toy-v2"):
        extract(tmp_path / "c.h5", df, ["toy"], _config(), device="cpu")
    import os

    path = CacheReader(tmp_path / "c.h5").manifest["path"][0]
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))  # a "changed" file: one row
    with pytest.raises(InputError, match="another version of its feature set"):  # would be redone: still refused
        extract(tmp_path / "c.h5", df, ["toy"], _config(), device="cpu")
    assert CacheReader(tmp_path / "c.h5").provenance("toy")["feature_set_version"] == "toy-v1"


def test_a_derived_stage_without_its_inputs_is_refused_before_any_work(tmp_path, toy_registered):
    df, _ = read_generic_manifest(_corpus(tmp_path))
    with pytest.raises(InputError, match="the state stage reads prosody .the Praat set: --prosody praat.*neither asked"):
        extract(tmp_path / "c.h5", df, ["speech", "egemaps", "state"], _config(), device="cpu")
    assert not (tmp_path / "c.h5").exists()


def test_cross_compares_only_the_feature_sets_its_heads_read(tmp_path, toy_registered):
    from heads.studies.cross import check_compatible

    df, _ = read_generic_manifest(_corpus(tmp_path))
    extract(tmp_path / "a.h5", df, ["prosody"], _config(), device="cpu")
    extract(tmp_path / "b.h5", df, ["prosody", "toy"], _config(), device="cpu")
    readers = {"a": CacheReader(tmp_path / "a.h5"), "b": CacheReader(tmp_path / "b.h5")}
    check_compatible(readers, {"praat"})  # the heads read Praat's set only: the extra toy set does not matter
    with pytest.raises(InputError, match="differ in prosody feature sets"):
        check_compatible(readers, {"praat", "toy"})
