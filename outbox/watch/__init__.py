"""Watch the event flow for suspicious activity: rules over sliding windows of event metadata.

Usable in-process::

    from outbox.watch import Watch, load_rules, JsonLines

    watch = Watch(load_rules("strangler-watch.toml"), sinks=[JsonLines()])
    for alert in watch.observe_envelope(envelope, destination="order"):
        ...

or as ``strangler watch --router URL --rules FILE``. No key is needed: the
rules read attributes, destinations, timing and the key ids JOSE leaves in
the clear. See docs/observability.md for every rule kind.
"""

from .engine import Alert, Observation, Watch, recipient_kids
from .rules import (
    BurstRule,
    GapRule,
    GroupRule,
    KeyRule,
    RateRule,
    Rule,
    RulesError,
    SourceRule,
    load_rules,
    parse_duration,
    parse_rules,
)
from .sinks import JsonLines, PrometheusCounter, Webhook

__all__ = [
    "Alert",
    "BurstRule",
    "GapRule",
    "GroupRule",
    "JsonLines",
    "KeyRule",
    "Observation",
    "PrometheusCounter",
    "RateRule",
    "Rule",
    "RulesError",
    "SourceRule",
    "Watch",
    "Webhook",
    "load_rules",
    "parse_duration",
    "parse_rules",
    "recipient_kids",
]
