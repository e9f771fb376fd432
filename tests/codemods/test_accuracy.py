"""The corpus targets hold: precision ≥ 0.95 and recall ≥ 0.90 on direct sites, wrappers covered inside."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "codemod_accuracy.py"


def test_corpus_accuracy_meets_the_targets():
    spec = importlib.util.spec_from_file_location("codemod_accuracy", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.measure()
    precision, recall = result["direct"]
    assert precision >= 0.95 and recall >= 0.90, result
    assert result["committing_wrappers"] >= 4 and result["committing_wrappers_uncovered"] == 0
    assert result["skipped"] == []
