"""Watch rules: TOML validated with errors naming file, rule and key; sliding windows that slide and re-arm."""

from __future__ import annotations

import textwrap

import pytest

from outbox.watch import Observation, RateRule, RulesError, Watch, load_rules, parse_duration
from outbox.watch.rules import BurstRule, SourceRule


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def obs(
    n: int, type_: str = "shop.customer.deleted", subject: str = "1", source: str = "/shop"
) -> Observation:
    return Observation(
        id=f"e{n}", type=type_, source=source, subject=subject, destination="customer"
    )


def write(tmp_path, text: str):
    path = tmp_path / "strangler-watch.toml"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize(
    "text, message",
    [
        ("[rule]\nname='a'\n", r"'rule' must be an array of tables: write \[\[rule\]\]"),
        ("[other]\n", r"unknown table 'other'"),
        ("", r"no rules"),
        ("[[rule]]\nkind='rate'\n", r"rule 1: 'name' is required"),
        (
            "[[rule]]\nname='x'\nkind='speed'\n",
            r"rule 'x': kind 'speed' is not one of 'rate', 'burst'",
        ),
        (
            "[[rule]]\nname='x'\nkind='rate'\ntype='a'\nmax=3\n",
            r"rule 'x': key 'window' is required for kind 'rate'",
        ),
        (
            "[[rule]]\nname='x'\nkind='rate'\ntype='a'\nmax=0\nwindow=1\n",
            r"rule 'x': key 'max': expected a whole number of at least 1",
        ),
        (
            "[[rule]]\nname='x'\nkind='rate'\ntype='a'\nmax=2\nwindow='soon'\n",
            r"rule 'x': key 'window': expected a duration",
        ),
        (
            "[[rule]]\nname='x'\nkind='rate'\ntype='a'\nmax=2\nwindow=1\nmaxx=3\n",
            r"rule 'x': unknown key 'maxx' for kind 'rate'; known keys: kind, look_at, max, name, type, window",
        ),
        (
            "[[rule]]\nname='x'\nkind='source'\ntype='a'\n",
            r"rule 'x': kind 'source' needs 'sources'",
        ),
        (
            "[[rule]]\nname='x'\nkind='burst'\nmax=2\nwindow=1\n[[rule]]\nname='x'\nkind='burst'\nmax=2\nwindow=1\n",
            r"rule 'x': the name is used by an earlier rule",
        ),
        ("[[rule]\n", r"not valid TOML"),
    ],
)
def test_a_malformed_rules_file_is_refused_naming_file_rule_and_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(RulesError, match=message) as caught:
        load_rules(path)
    assert str(path) in str(caught.value)


def test_a_missing_rules_file_points_to_the_docs(tmp_path):
    with pytest.raises(RulesError, match="no such rules file; see docs/observability.md"):
        load_rules(tmp_path / "nope.toml")


def test_durations_take_units_and_paths_are_relative_to_the_rules_file(tmp_path):
    assert [parse_duration(v, "x") for v in (90, "500ms", "30s", "5m", "1h")] == [
        90,
        0.5,
        30,
        300,
        3600,
    ]
    path = write(
        tmp_path,
        """
        [[rule]]
        name = "keys"
        kind = "key"
        keys_dir = "keys"
    """,
    )
    assert load_rules(path)[0].keys_dir == str(tmp_path / "keys")


def test_a_rate_alert_fires_once_per_episode_and_rearms_when_the_window_drains():
    clock = Clock()
    watch = Watch(
        [RateRule("deletions", type="shop.customer.deleted", max=3, window=60)], clock=clock
    )
    raised = []
    for n in range(
        6
    ):  # 6 in 5 s: the fourth crosses the line, the fifth and sixth do not fire again
        raised += watch.observe(obs(n))
        clock.now += 1
    assert [a.count for a in raised] == [4]
    assert raised[0].evidence == ["e0", "e1", "e2", "e3"]

    clock.now += 120  # the window empties
    raised = [a for n in range(6, 10) for a in watch.observe(obs(n))]
    assert len(raised) == 1 and raised[0].evidence == ["e6", "e7", "e8", "e9"]


def test_a_rate_spread_over_more_than_the_window_raises_nothing():
    clock = Clock()
    watch = Watch([RateRule("deletions", type="shop.customer.*", max=3, window=60)], clock=clock)
    for n in range(20):
        assert watch.observe(obs(n)) == []
        clock.now += 21  # at most three inside any 60 s


def test_other_types_do_not_count_toward_a_rate():
    watch = Watch(
        [RateRule("deletions", type="shop.customer.deleted", max=1, window=60)], clock=Clock()
    )
    assert [
        a for n in range(5) for a in watch.observe(obs(n, type_="shop.customer.registered"))
    ] == []


def test_a_burst_counts_per_subject_and_forgets_quiet_subjects():
    clock = Clock()
    watch = Watch([BurstRule("hot", type="*", max=2, window=10)], clock=clock)
    for n in range(100):  # many subjects, one event each: no burst
        assert watch.observe(obs(n, subject=str(n))) == []
    alerts = [a for n in range(100, 103) for a in watch.observe(obs(n, subject="7"))]
    assert len(alerts) == 1 and alerts[0].details["subject"] == "7" and alerts[0].count == 3
    clock.now += 30
    watch.observe(obs(200, subject="x"))
    assert len(watch._burst["hot"]) == 1  # the quiet subjects' windows are gone


def test_a_source_alert_names_each_new_offender_once_per_repeat_interval():
    clock = Clock()
    watch = Watch(
        [SourceRule("shop-only", type="shop.*", sources=("/shop",), repeat=60)], clock=clock
    )
    assert watch.observe(obs(1)) == []
    first = watch.observe(obs(2, source="/evil"))
    assert [a.details["source"] for a in first] == ["/evil"]
    assert watch.observe(obs(3, source="/evil")) == []
    assert [a.details["source"] for a in watch.observe(obs(4, source="/other"))] == ["/other"]
    clock.now += 61
    assert len(watch.observe(obs(5, source="/evil"))) == 1


def test_an_alert_is_one_json_line_with_rule_window_evidence_and_what_to_look_at():
    import json

    sink_lines = []
    watch = Watch(
        [
            RateRule(
                "deletions",
                type="shop.customer.deleted",
                max=1,
                window=60,
                look_at="the admin console",
            )
        ],
        clock=Clock(),
        sinks=[lambda alert: sink_lines.append(alert.to_json())],
    )
    watch.observe(obs(1))
    watch.observe(obs(2))
    (line,) = sink_lines
    doc = json.loads(line)
    assert doc["alert"] == "deletions" and doc["kind"] == "rate"
    assert doc["window"]["seconds"] == 60 and doc["window"]["start"].endswith("Z")
    assert doc["evidence"] == ["e1", "e2"] and doc["count"] == 2
    assert doc["look_at"] == "the admin console"


def test_alerts_count_in_a_prometheus_counter_by_rule_and_kind():
    from prometheus_client import CollectorRegistry

    from outbox.watch import PrometheusCounter

    registry = CollectorRegistry()
    watch = Watch(
        [RateRule("deletions", type="shop.customer.deleted", max=1, window=60)],
        clock=Clock(),
        sinks=[PrometheusCounter(registry)],
    )
    for n in range(3):
        watch.observe(obs(n))
    assert (
        registry.get_sample_value(
            "strangler_watch_alerts_total", {"rule": "deletions", "kind": "rate"}
        )
        == 1
    )
