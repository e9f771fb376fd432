"""Scan rate against bare ``libcst.parse_module`` over the same files, in the same run.

    python bench/scan_speed.py [PATH] [--rounds 3]

PATH defaults to the installed SQLAlchemy package (a large real codebase with no
app sessions: nearly no sites); ``--app-copies N`` measures an app-like tree instead. Each round times, over the
same file list: bare parsing (one process), ``scan`` with one job, and ``scan``
with two jobs. Reported: lines/s and the ratio of scan to bare parsing (target
≥ 0.5 single process), median of the rounds. Peak RSS is printed for the scan.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import libcst

from codemods import runner
from codemods.detect import Settings


def parse_one(path) -> None:
    text, *_ = runner.read_source(path)
    if text is not None:
        try:
            libcst.parse_module(text)
        except libcst.ParserSyntaxError:
            pass


def bare_parse(files):
    for path in files:
        parse_one(path)


def interleaved_ratio(files) -> float:
    """Parse and scan each file back to back, so both see the same load: sum(parse) / (index + sum(scan))."""
    clock = time.process_time
    start = clock()
    index = runner.build_index(files)
    spent_scan = clock() - start
    spent_parse = 0.0
    options = runner.Options(settings=Settings(), root="/")
    for path in files:
        start = clock()
        parse_one(path)
        spent_parse += clock() - start
        start = clock()
        runner.process_file(path, index, options)
        spent_scan += clock() - start
    return spent_parse / spent_scan


def scan(files, jobs):
    options = runner.Options(settings=Settings(), root="/")
    return sum(len(r.sites) for r in runner.run(files, options, jobs=jobs))


def _app_tree(copies: int) -> str:
    import shutil
    import tempfile

    root = Path(__file__).resolve().parents[1]
    target = Path(tempfile.mkdtemp(prefix="strangler-scan-bench-"))
    for n in range(copies):
        shutil.copytree(root / "tests" / "codemods" / "corpus", target / f"corpus{n}",
                        ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(root / "sample_monolith" / "shop", target / f"shop{n}",
                        ignore=shutil.ignore_patterns("__pycache__", "migrations"))
    return str(target)


def main() -> None:
    import sqlalchemy

    parser = argparse.ArgumentParser()
    parser.add_argument("path", nargs="?", default=str(Path(sqlalchemy.__file__).parent))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory", action="store_true",
                        help="also: peak RSS of a one-job scan of 10, 40 and 160 app copies, each in a fresh process")
    parser.add_argument("--app-copies", type=int, default=0, metavar="N",
                        help="instead of PATH, N copies of the labelled corpus and the sample shop: "
                             "an app-like tree dense with sites")
    args = parser.parse_args()
    if args.app_copies:
        args.path = _app_tree(args.app_copies)
    files = runner.discover([args.path])
    lines = sum(p.read_bytes().count(b"\n") for p in files)
    print(f"{len(files)} files, {lines} lines under {args.path}")
    wall = {"parse": [], "scan --jobs 1": [], "scan --jobs 2": []}
    cpu = {"parse": [], "scan --jobs 1": []}  # CPU time of this process: robust to other load
    sites = 0

    def timed(name, func):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = func()
        wall[name].append(time.perf_counter() - start)
        if name in cpu:
            cpu[name].append(time.process_time() - start_cpu)
        return result

    interleaved = []
    for _ in range(args.rounds):
        timed("parse", lambda: bare_parse(files))
        sites = timed("scan --jobs 1", lambda: scan(files, 1))
        timed("scan --jobs 2", lambda: scan(files, 2))
        interleaved.append(interleaved_ratio(files))
    base, base_cpu = statistics.median(wall["parse"]), statistics.median(cpu["parse"])
    print(f"{'':16} {'wall s':>8} {'lines/s':>9} {'÷ parse':>8} {'cpu s':>8} {'÷ parse':>8}")
    for name, times in wall.items():
        t = statistics.median(times)
        line = f"{name:16} {t:8.2f} {lines / t:9.0f} {base / t:8.2f}"
        if name in cpu:
            c = statistics.median(cpu[name])
            line += f" {c:8.2f} {base_cpu / c:8.2f}"
        print(line)
    print(f"scan ÷ parse, file by file, CPU time (index pass included): {statistics.median(interleaved):.2f} "
          f"(rounds: {', '.join(f'{r:.2f}' for r in interleaved)})")
    print(f"sites found: {sites}; peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    if args.memory:
        for copies in (10, 40, 160):
            tree = _app_tree(copies)
            # VmHWM, not ru_maxrss: on Linux the latter keeps the parent's peak across exec.
            code = ("import re, sys; from codemods import runner; from codemods.detect import Settings; "
                    "files = runner.discover([sys.argv[1]]); "
                    "n = sum(len(r.sites) for r in runner.run(files, runner.Options(settings=Settings()), jobs=1)); "
                    "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1); "
                    "print(len(files), n, int(hwm) // 1024)")
            out = subprocess.run([sys.executable, "-c", code, tree], capture_output=True, text=True, check=True)
            files, found, rss = out.stdout.split()
            print(f"memory: {copies:>3} app copies, {files:>5} files, {found:>6} sites: peak RSS {rss} MiB")


if __name__ == "__main__":
    main()
