"""The prepared GPU check keeps working: its CPU dry run prints every figure (the GPU numbers need a lent GPU)."""

import json
import subprocess
import sys

from tests.conftest import REPO

EXPECTED = ("device", "speech_rtf_bf16", "speech_rtf_fp32", "bf16_vs_fp32", "peak_memory_35s_bf16",
            "sharded_2_processes", "state_stage_mamba_kernel", "state_stage_reference", "heads_one_fold_cpu",
            "fused_adamw", "total")


def test_the_dry_run_prints_every_figure_and_writes_them_as_json(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--dry-run", "--out",
                             str(tmp_path / "work"), "--json", str(tmp_path / "figures.json")],
                            capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = [line.split(":")[0].removeprefix("FIGURE ") for line in result.stdout.splitlines()
               if line.startswith("FIGURE ")]
    assert printed == list(EXPECTED)
    figures = {f["figure"]: f for f in json.loads((tmp_path / "figures.json").read_text())}
    assert figures["sharded_2_processes"]["bit_identical"] is True  # two shards + merge == one process
    assert figures["fused_adamw"]["max_abs"] < 1e-5
    assert 0 < figures["bf16_vs_fp32"]["max_relative"] < 0.05
