"""The HTML report is self-contained and renders in headless Chromium with its table and figures."""

import re
import shutil
import subprocess

import numpy as np
import pytest

from cache import CacheReader
from heads.evaluation.evaluate import evaluate_runs
from heads.reporting.report import write_report
from heads.training.experiment import train_fold
from heads.training.features import load_corpus_arrays
from heads.training.train import TrainConfig
from heads.training.variants import parse_variant
from tests.synth_cache import planted_cache

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    reader = CacheReader(planted_cache(root / "c.h5", n_per_speaker=20))
    arrays = load_corpus_arrays(reader)
    runs = []
    for spec in ("shared", "separate-attn", "separate+layer=weighted"):
        for fold in (1, 2):
            run = root / spec / f"fold{fold}"
            train_fold(arrays, fold, parse_variant(spec, TrainConfig(epochs=8)), [0], run)
            runs.append(run)
    return write_report(evaluate_runs(runs), root / "report.html", title="test report")


def test_the_report_is_one_file_with_table_figures_and_provenance(report):
    text = report.read_text()
    # per fold, scatter, attention, learning curves + forest plot, layer weights
    assert 'id="results"' in text and text.count("data:image/png;base64,") == 6
    assert "separate-attn" in text and "valence branch gives prosody" in text and "Provenance" in text
    assert 'id="comparisons"' in text and "Differences from" in text and 'id="per-speaker"' in text
    assert not re.search(r'src="(?!data:)', text)  # nothing external to fetch


def test_the_first_screen_answers_which_run_is_best_and_whether_it_is_distinguishable(report):
    text = report.read_text()
    answer = re.search(r'<p id="answer">(.*?)</p>', text).group(1)
    assert text.index('id="answer"') < text.index('id="results"')
    for metric in ("CCC-V", "CCC-A", "CCC-Avg"):
        assert f"{metric}: best " in answer
    assert "over shared" in answer or "the baseline itself" in answer
    assert ("not distinguishable" in answer) or ("a real difference" in answer)
    assert text.count('<td class="best">') == 5  # the best cell of each of the five metric columns


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (bash scripts/bootstrap.sh --test installs it)")
def test_the_report_renders_in_headless_chromium(report, tmp_path):
    dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                          report.as_uri()], capture_output=True, text=True, timeout=120).stdout
    results = dom[dom.index('<table id="results">'):]
    assert results[:results.index("</table>")].count("<tr>") == 1 + 3
    assert dom.count("<img") == 6
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile2'}", f"--screenshot={shot}",
                    "--window-size=1400,900", report.as_uri()], capture_output=True, timeout=120)
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (900, 1400) and np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0).shape[0] > 20


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (bash scripts/bootstrap.sh --test installs it)")
def test_in_a_1400x900_window_the_results_are_above_the_fold_and_provenance_is_collapsed(report, tmp_path):
    probe = ("<script>window.addEventListener('load', () => {"
             "const r = document.getElementById('results').getBoundingClientRect();"
             "const p = document.getElementById('provenance').getBoundingClientRect();"
             "document.body.setAttribute('data-probe', `${r.bottom} ${p.height} ${window.innerHeight}`);});</script>")
    page = tmp_path / "probe.html"
    page.write_text(report.read_text().replace("</body>", probe + "</body>"))
    dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,900",
                          "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    bottom, provenance_height, viewport = (float(v) for v in re.search(r'data-probe="([^"]+)"', dom).group(1).split())
    assert 0 < bottom <= viewport <= 900  # the whole results table shows without scrolling (browser bars included)
    assert provenance_height < 40  # closed <details>: only its one-line summary takes room


def test_the_report_says_per_fold_what_the_state_gate_kept_and_on_how_many_validation_dialogues():
    from heads.evaluation.evaluate import Evaluation
    from heads.reporting.report import gate_table

    records = {"separate-attn+state": [
        {"fold": 2, "state_gate": {"chosen": "without_state", "with_state": 0.51, "without_state": 0.55},
         "validation": {"dialogues": 6}},
        {"fold": 1, "state_gate": {"chosen": "with_state", "with_state": 0.62, "without_state": 0.58},
         "validation": {"dialogues": 7}}]}
    rows = gate_table(Evaluation(None, {}, records))
    assert rows == [
        {"run": "separate-attn+state", "fold": "fold 1", "kept": "with state", "validation CCC with state": 0.62,
         "without": 0.58, "validation dialogues": 7},
        {"run": "separate-attn+state", "fold": "fold 2", "kept": "without state", "validation CCC with state": 0.51,
         "without": 0.55, "validation dialogues": 6}]
    assert gate_table(Evaluation(None, {}, {"shared": [{"fold": 1}]})) == []  # no gate, no table
