"""benchmarks/bench_run_overhead.py --quick runs end to end (a tiny random BERT, a toy CSV task, no downloads) and
prints both tables: the run-cost ratios of `attack` and `redteam`, and the padding modes."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_run_overhead.py"


@pytest.mark.slow
def test_the_quick_benchmark_prints_both_tables(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRAINLOCK_TOKEN_CACHE": str(tmp_path / "tokens")}
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick"], capture_output=True, text=True, env=env, timeout=600, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "attack --no-scratch" in out and "redteam --budget 1 (2 runs)" in out
    assert "wall / (steps x step time)" in out
    for mode in ("fixed", "dynamic", "bucketed"):
        assert f"| {mode}" in out
    assert any((tmp_path / "tokens").rglob("*.safetensors"))  # the commands tokenized through the cache
