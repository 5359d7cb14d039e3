"""Sharded extraction (torchrun ranks or ``--shard i/n`` job arrays) gives the single-process cache exactly."""

import os
import subprocess
import sys

import numpy as np
import pytest

from core.errors import InputError
from pipeline.corpora import read_generic_manifest
from pipeline.corpora.synthetic import write_synthetic_corpus
from pipeline.extract import ExtractConfig, extract
from pipeline.launch import extract_shard, merge_shards
from pipeline.runtime.sharding import Shard, assign_units, parse_shard
from pipeline.stages.prosody import ProsodyConfig
from pipeline.stages.runner import ShardsUnfinished
from pipeline.stages.speech import SpeechConfig
from pipeline.stages.state import StateConfig
from scripts.kill_campaign import cache_arrays, differing
from tests.conftest import REPO

STAGES = ["speech", "prosody", "state"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_synthetic_corpus(tmp_path_factory.mktemp("corpus"), dialogs_per_fold=1, turns=8)  # 40 utterances


def _config(model) -> ExtractConfig:
    return ExtractConfig(speech=SpeechConfig(model=str(model), batch_seconds=2.0, num_workers=0),
                         prosody=ProsodyConfig(workers=1, chunk_size=4), state=StateConfig(epochs=2))


def test_units_are_balanced_by_audio_seconds_not_by_count():
    seconds = [10.0] + [1.0] * 10  # by count the first shard would get 6 units and 15 s
    owner = assign_units(seconds, 2)
    loads = [sum(s for s, o in zip(seconds, owner) if o == k) for k in range(2)]
    assert loads == [10.0, 10.0] and np.bincount(owner).tolist() == [1, 10]


def test_every_unit_has_exactly_one_shard_and_loads_differ_by_at_most_one_unit():
    seconds = np.random.default_rng(0).uniform(0.5, 30.0, 200).tolist()
    owner = assign_units(seconds, 7)
    loads = np.bincount(owner, weights=seconds, minlength=7)
    assert owner.shape == (200,) and set(owner.tolist()) == set(range(7))
    assert loads.max() - loads.min() <= max(seconds)


@pytest.mark.parametrize("text", ["2/2", "-1/2", "1", "a/b", "1/0"])
def test_a_bad_shard_is_a_clear_error(text):
    with pytest.raises(InputError, match="expected i/n"):
        parse_shard(text)


def test_job_array_shards_then_merge_equal_one_process_bit_for_bit(corpus, tiny_wavlm, tmp_path):
    df, _ = read_generic_manifest(corpus)
    extract(tmp_path / "one.h5", df, STAGES, _config(tiny_wavlm), device="cpu")
    for index in range(3):
        extract_shard(tmp_path / "sharded.h5", df, STAGES, _config(tiny_wavlm), device="cpu", shard=Shard(index, 3))
    assert not (tmp_path / "sharded.h5").exists()  # nothing is published before the merge
    merge_shards(tmp_path / "sharded.h5", device="cpu")
    one, sharded = cache_arrays(tmp_path / "one.h5"), cache_arrays(tmp_path / "sharded.h5")
    assert {"speech/pooled", "prosody/values", "state/fold_1"} <= set(one)
    assert sorted(one) == sorted(sharded) and differing(one, sharded) == []
    assert not (tmp_path / "sharded.h5.parts").exists()


def test_merging_before_every_shard_is_done_names_the_unfinished_shard(corpus, tiny_wavlm, tmp_path):
    df, _ = read_generic_manifest(corpus)
    extract_shard(tmp_path / "c.h5", df, STAGES, _config(tiny_wavlm), device="cpu", shard=Shard(0, 2))
    with pytest.raises(ShardsUnfinished, match=r"`extract --shard 1/2`") as err:
        merge_shards(tmp_path / "c.h5", device="cpu")
    assert "0/2" not in str(err.value)
    extract_shard(tmp_path / "c.h5", df, STAGES, _config(tiny_wavlm), device="cpu", shard=Shard(1, 2))
    merge_shards(tmp_path / "c.h5", device="cpu")  # the refused merge lost nothing


def test_a_shard_of_another_corpus_is_refused(corpus, tiny_wavlm, tmp_path):
    df, _ = read_generic_manifest(corpus)
    extract_shard(tmp_path / "c.h5", df, ["prosody"], _config(tiny_wavlm), device="cpu", shard=Shard(0, 2))
    with pytest.raises(InputError, match="different manifest"):
        extract_shard(tmp_path / "c.h5", df.head(30), ["prosody"], _config(tiny_wavlm), device="cpu", shard=Shard(1, 2))


def test_merge_without_shards_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="no sharded extraction"):
        merge_shards(tmp_path / "nothing.h5")


def test_two_torchrun_processes_on_gloo_equal_one_process_array_for_array(corpus, tiny_wavlm, tmp_path):
    args = ["extract", "--corpus", "manifest", "--manifest", str(corpus), "--speech-model", str(tiny_wavlm),
            "--device", "cpu", "--workers", "1", "--loader-workers", "0", "--batch-seconds", "2",
            "--state-epochs", "2"]
    # torchrun gives each process one thread; the reference gets the same, since the float summation
    # order (and so the last bit) of a matrix product depends on the thread count
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    one = subprocess.run([sys.executable, "cli.py", *args, "--cache", str(tmp_path / "one.h5")], cwd=REPO,
                         env=env, capture_output=True, text=True)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                          "--rdzv-backend", "c10d", "--rdzv-endpoint", "localhost:0", "cli.py", *args,
                          "--cache", str(tmp_path / "two.h5")], cwd=REPO, env=env, capture_output=True, text=True)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "shard 0/2 holds" in two.stderr and "shard 1/2 holds" in two.stderr  # both ranks did work
    a, b = cache_arrays(tmp_path / "one.h5"), cache_arrays(tmp_path / "two.h5")
    assert sorted(a) == sorted(b) and differing(a, b) == []
