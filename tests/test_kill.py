"""SIGKILL of the main process at any moment of ``extract`` loses nothing: the resumed cache equals an
uninterrupted one, and no worker outlives the killed process."""

import pytest

from pipeline.corpora.synthetic import write_synthetic_corpus
from scripts.kill_campaign import PHASES, run_campaign


@pytest.fixture(scope="module")
def campaign(tmp_path_factory, tiny_wavlm):
    workdir = tmp_path_factory.mktemp("kills")
    manifest = write_synthetic_corpus(workdir / "corpus", dialogs_per_fold=1, turns=8)  # 40 utterances, 5 folds
    return run_campaign(manifest, tiny_wavlm, workdir, kills=len(PHASES), schedule=list(PHASES), target="main")


def test_a_kill_lands_in_every_phase_of_extraction(campaign):
    assert [(k.phase, k.landed) for k in campaign.kills] == [(p, True) for p in PHASES]


def test_after_every_kill_the_cache_is_absent_or_whole_and_right(campaign):
    assert all(k.cache_ok_after for k in campaign.kills)


def test_the_resumed_cache_equals_the_uninterrupted_one_bit_for_bit(campaign):
    assert {"speech/pooled", "prosody/values", "state/fold_1", "failures"} <= set(campaign.array_names)
    assert campaign.arrays_differing == []
    assert campaign.utterances == 40 and campaign.utterances_lost == 0 and campaign.duplicate_ids == 0


def test_no_temporary_files_parts_or_lock_are_left_behind(campaign):
    assert campaign.leftover_files == []


def test_no_worker_outlives_the_killed_main_process(campaign):
    assert [k.orphans for k in campaign.kills] == [0] * len(PHASES)
