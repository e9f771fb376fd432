"""The event type rule's verbs: event types are a contract, so their spelling is specified here."""

from __future__ import annotations

import pytest

from codemods.naming import past_tense, template_problem, verb_for


@pytest.mark.parametrize("word, expected", [
    # regular
    ("approve", "approved"), ("archive", "archived"), ("verify", "verified"), ("play", "played"),
    ("lock", "locked"), ("fail", "failed"), ("wait", "waited"), ("open", "opened"), ("visit", "visited"),
    ("deliver", "delivered"), ("order", "ordered"), ("fix", "fixed"), ("show", "showed"), ("sync", "synced"),
    ("refund", "refunded"), ("need", "needed"), ("own", "owned"),
    # one syllable ending consonant-vowel-consonant: the consonant doubles
    ("drop", "dropped"), ("stop", "stopped"), ("ship", "shipped"), ("plan", "planned"), ("log", "logged"),
    ("ban", "banned"), ("tag", "tagged"), ("grab", "grabbed"), ("scan", "scanned"),
    # stressed on the last syllable
    ("submit", "submitted"), ("refer", "referred"), ("commit", "committed"), ("admit", "admitted"),
    ("permit", "permitted"), ("omit", "omitted"), ("transfer", "transferred"), ("prefer", "preferred"),
    ("occur", "occurred"),
    # irregular
    ("reset", "reset"), ("set", "set"), ("put", "put"), ("cut", "cut"), ("shut", "shut"), ("quit", "quit"),
    ("run", "run"), ("pay", "paid"), ("send", "sent"), ("sell", "sold"), ("freeze", "frozen"),
    ("cancel", "cancelled"),
])
def test_past_tense(word, expected):
    assert past_tense(word) == expected


@pytest.mark.parametrize("function, expected", [
    ("drop_table_booking", "dropped"), ("OrderService.submit_order", "submitted"), ("reset_password", "reset"),
    ("_stop_subscription", "stopped"), ("save_order", "saved"), ("run_job", "saved"),
])
def test_verb_for_function_names(function, expected):
    assert verb_for("saved", function, "function") == expected


@pytest.mark.parametrize("entry, problem", [
    ("shop/*::*={prefix}.{aggregate}.{verb}", None),
    ("shop/*::pay=shop.order.paid", None),
    ("shop/*=x.{{literal}}.{verb}", None),
    ("shop/*::*={prefix}.{aggreagte}.{verb}", "unknown placeholder {aggreagte}"),
    ("shop/*::*={prefix}.{0}", "unknown placeholder {0}"),
    ("shop/*::*={prefix", "expected '}'"),
    ("shop/*::pay", "expected PATH_GLOB::FUNCTION_GLOB=TEMPLATE"),
])
def test_template_problem(entry, problem):
    found = template_problem(entry)
    assert (found is None) if problem is None else (problem in found)
