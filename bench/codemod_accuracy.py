"""Precision and recall of ``scan`` per kind against the labelled corpus.

    python bench/codemod_accuracy.py [CORPUS]

CORPUS defaults to tests/codemods/corpus. A site is a true positive when scan
reports the labelled kind on the labelled line (``# expect: <kind>``). Targets:
precision ≥ 0.95 and recall ≥ 0.90 over the direct sites (every kind but the
calls of wrappers and implicit updates, which scan reports but rewrite does not
touch), and every wrapper that commits covered inside itself.
"""

from __future__ import annotations

import re
import sys
from collections import defaultdict
from pathlib import Path

from codemods import runner
from codemods.detect import KINDS, Settings

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "codemods" / "corpus"
LABEL = re.compile(r"# expect: ([\w-]+)")
INDIRECT = {"wrapper-call", "implicit-update"}


def labels(corpus: Path) -> set[tuple[str, int, str]]:
    out = set()
    for path in sorted(corpus.rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            match = LABEL.search(line)
            if match:
                out.add((path.relative_to(corpus).as_posix(), number, match.group(1)))
    return out


def measure(corpus: Path = CORPUS) -> dict:
    """Return per-kind counts and totals: {"kinds": {kind: (tp, fp, fn)}, "direct": (p, r), ...}."""
    files = runner.discover([corpus])
    options = runner.Options(settings=Settings(), root=str(corpus))
    results = list(runner.run(files, options, jobs=1))
    found = {(s.path, s.line, s.kind) for r in results for s in r.sites}
    expected = labels(corpus)
    kinds: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for site in found & expected:
        kinds[site[2]][0] += 1
    for site in found - expected:
        kinds[site[2]][1] += 1
    for site in expected - found:
        kinds[site[2]][2] += 1
    direct = [sum(v[i] for k, v in kinds.items() if k not in INDIRECT) for i in range(3)]
    wrappers = [s for r in results for s in r.sites if s.kind == "wrapper" and s.commit_visible]
    uncovered = [s for s in wrappers if s.action not in ("rewrite", "covered")]
    return {
        "kinds": {k: tuple(v) for k, v in sorted(kinds.items())},
        "direct": _ratios(*direct),
        "all": _ratios(*(sum(v[i] for v in kinds.values()) for i in range(3))),
        "committing_wrappers": len(wrappers),
        "committing_wrappers_uncovered": len(uncovered),
        "missed": sorted(expected - found),
        "extra": sorted(found - expected),
        "skipped": [r.path for r in results if r.status == "skipped"],
    }


def _ratios(tp: int, fp: int, fn: int) -> tuple[float, float]:
    return (tp / (tp + fp) if tp + fp else 1.0, tp / (tp + fn) if tp + fn else 1.0)


def main() -> None:
    corpus = Path(sys.argv[1]) if len(sys.argv) > 1 else CORPUS
    result = measure(corpus)
    print(f"{'kind':<16} {'tp':>3} {'fp':>3} {'fn':>3} {'precision':>9} {'recall':>7}")
    for kind in KINDS:
        tp, fp, fn = result["kinds"].get(kind, (0, 0, 0))
        if tp + fp + fn:
            p, r = _ratios(tp, fp, fn)
            print(f"{kind:<16} {tp:>3} {fp:>3} {fn:>3} {p:>9.2f} {r:>7.2f}")
    print(f"{'direct sites':<28} {result['direct'][0]:>9.2f} {result['direct'][1]:>7.2f}")
    print(f"{'all sites':<28} {result['all'][0]:>9.2f} {result['all'][1]:>7.2f}")
    print(f"wrappers that commit: {result['committing_wrappers']}, "
          f"not covered inside: {result['committing_wrappers_uncovered']}")
    for site in result["missed"]:
        print(f"missed: {site}")
    for site in result["extra"]:
        print(f"extra: {site}")


if __name__ == "__main__":
    main()
