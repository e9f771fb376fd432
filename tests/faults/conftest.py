"""Fault scenarios on real services: CI-sized by default, the long run with STRANGLER_FAULTS_FULL=1."""

from __future__ import annotations

import os

import pytest

from outbox.faults import Budget, run_scenario

FULL = os.environ.get("STRANGLER_FAULTS_FULL", "") not in ("", "0")


@pytest.fixture
def budget() -> Budget:
    """The CI budget, or the full one (25 kills, a 30 s outage, a 100k backlog) when asked for."""
    return Budget.full() if FULL else Budget.ci()


@pytest.fixture
def scenario(budget, tmp_path, capsys, record_property):
    """Run a scenario, print its line of figures, fail on any loss, order violation or double effect."""

    def run(name: str, db_url: str, router_url: str, **options):
        figures = run_scenario(name, db_url, router_url, budget=budget, workdir=tmp_path / name, **options)
        with capsys.disabled():
            print(f"\n{figures.line()}")
        record_property("figures", figures.line())  # for the summary, also from xdist workers
        assert figures.produced > 0
        assert figures.lost == 0, figures.line()
        assert figures.order_violations == 0, figures.line()
        assert figures.effects_twice == 0, figures.line()
        assert figures.duplicates_absorbed <= figures.duplicates_delivered, figures.line()
        return figures

    return run


def pytest_terminal_summary(terminalreporter):
    """Print every scenario's line of figures at the end of the run (xdist workers' output is not shown)."""
    lines = [value for outcome in ("passed", "failed") for report in terminalreporter.stats.get(outcome, [])
             if report.when == "call" for name, value in report.user_properties if name == "figures"]
    if lines:
        terminalreporter.write_sep("-", "fault scenario figures")
        for line in sorted(lines):
            terminalreporter.write_line(line)
