"""Configuration: file, then STRANGLER_* variables, then flags; bad input names key and origin."""

from __future__ import annotations

import textwrap

import pytest

from toolkit.config import ConfigError, describe, find_config_file, load_config


def write(path, text):
    path.write_text(textwrap.dedent(text))
    return path


def test_defaults_without_any_file(tmp_path):
    config = load_config(cwd=tmp_path, environ={})
    assert config.relay.batch >= 100
    assert config.router.startswith("file://")
    assert config.crypto.encrypt_at == "emit"


def test_file_then_environment_then_flags(tmp_path):
    path = write(
        tmp_path / "strangler.toml",
        """\
        source = "/shop"
        db = "sqlite:///shop.db"
        [relay]
        batch = 50
        max_attempts = 3
        """,
    )
    config = load_config(path, environ={"STRANGLER_RELAY_BATCH": "75", "STRANGLER_DB": "sqlite:///env.db"})
    assert (config.source, config.db, config.relay.batch, config.relay.max_attempts) == (
        "/shop", "sqlite:///env.db", 75, 3,
    )
    config = load_config(path, environ={"STRANGLER_RELAY_BATCH": "75"}, overrides={"relay.batch": 5, "db": None})
    assert config.relay.batch == 5 and config.db == "sqlite:///shop.db"


def test_pyproject_tool_section_is_found_from_a_subfolder(tmp_path):
    write(tmp_path / "pyproject.toml", '[project]\nname = "shop"\n[tool.strangler]\nsource = "/shop"\n')
    sub = tmp_path / "app" / "views"
    sub.mkdir(parents=True)
    assert find_config_file(sub) == tmp_path / "pyproject.toml"
    assert load_config(cwd=sub, environ={}).source == "/shop"


def test_a_pyproject_without_the_section_is_not_a_config(tmp_path):
    write(tmp_path / "pyproject.toml", '[project]\nname = "shop"\n')
    assert find_config_file(tmp_path) is None


@pytest.mark.parametrize(
    "text, message",
    [
        ("sorce = '/shop'\n", r"strangler.toml: unknown key 'sorce'; known keys here: .*source"),
        ("[relay]\nbatch = 'many'\n", r"strangler.toml: relay.batch = 'many': expected an integer"),
        ("[relay]\nbtach = 1\n", r"unknown key 'relay.btach'"),
        ("[crypto]\nencrypt_at = 'never'\n", r"crypto.encrypt_at = 'never': expected one of 'emit', 'relay', 'off'"),
        ("relay = 3\n", r"'relay' must be a table"),
        ("[relay]\nbatch = 0\n", r"relay.batch = 0: expected an integer from 1 to 100000 \(.*strangler.toml\)"),
        ("[relay]\nbatch = 100000000000000000000\n", r"relay.batch = 1\d+: expected an integer from 1 to 100000"),
        ("[relay]\nlease_seconds = 1e12\n", r"lease_seconds = 1000000000000.0: .* at most 86400 \(a day\)"),
        ("source = \n", r"strangler.toml: not valid TOML"),
        ("[relay]\nretry_base = 0\n", r"relay.retry_base = 0.0: expected a number of seconds above 0, at most 86400 \(a day\) \(.*strangler.toml\)"),
        ("[relay]\nretry_base = 'soon'\n", r"relay.retry_base = 'soon': expected a number"),
        ("[relay]\nretry_base = 10\nretry_max = 5\n",
         r"relay.retry_max = 5.0: expected a number of seconds of at least relay.retry_base \(10.0\)"),
        ("[relay]\noutage_max = -1\n", r"relay.outage_max = -1.0: expected a number of seconds above 0"),
        ("[relay]\ncoalesce = -0.001\n", r"relay.coalesce = -0.001: expected a number of seconds from 0 \(no wait\) to"),
        ("[relay]\npoll_interval = 0.2\ncoalesce = 0.5\n",
         r"relay.coalesce = 0.5: .* to relay.poll_interval \(0.2\)"),
        ("[relay]\nlease_seconds = 3\nmark_interval = 2\n",
         r"relay.mark_interval = 2.0: expected a number of seconds from 0 .* to a third of relay.lease_seconds \(1\)"),
        ("[relay]\npoll_interval = 0\n", r"relay.poll_interval = 0.0: expected a number of seconds above 0"),
        ("[relay]\nlease_seconds = nan\n", r"relay.lease_seconds = nan: expected a number of seconds above 0"),
    ],
)
def test_bad_files_name_file_key_and_expected_form(tmp_path, text, message):
    path = write(tmp_path / "strangler.toml", text)
    with pytest.raises(ConfigError, match=message):
        load_config(path, environ={})


def test_bad_environment_values_name_the_variable(tmp_path):
    with pytest.raises(ConfigError, match=r"environment variable STRANGLER_RELAY_MAX_ATTEMPTS: .*expected an integer"):
        load_config(cwd=tmp_path, environ={"STRANGLER_RELAY_MAX_ATTEMPTS": "lots"})


def test_a_missing_named_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(tmp_path / "nope.toml", environ={})


def test_every_setting_is_described_with_its_variable():
    rows = describe()
    keys = {key for key, *_ in rows}
    assert {"source", "db", "router", "relay.batch", "crypto.encrypt_at", "codemods.event_prefix"} <= keys
    assert all(var.startswith("STRANGLER_") and help_ for _, var, _, help_ in rows)


def test_the_configuration_doc_lists_every_setting():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    missing = [key for key, var, _, _ in describe() if f"`{key}`" not in doc or f"`{var}`" not in doc]
    assert missing == [], f"docs/configuration.md does not describe {missing}"


def test_relay_retry_outage_and_coalesce_settings_from_file_and_environment(tmp_path):
    path = write(
        tmp_path / "strangler.toml",
        """\
        [relay]
        retry_base = 2
        retry_max = 600
        outage_max = 10.5
        coalesce = 0
        """,
    )
    config = load_config(path, environ={"STRANGLER_RELAY_OUTAGE_MAX": "5", "STRANGLER_RELAY_COALESCE": "0.002"})
    relay = config.relay
    assert (relay.retry_base, relay.retry_max, relay.outage_max, relay.coalesce) == (2.0, 600.0, 5.0, 0.002)


def test_relay_defaults_are_the_relays_own():
    from outbox.relay import RelayOptions
    from toolkit.config import RelayConfig

    ours, theirs = RelayConfig(), RelayOptions()
    for key in ("batch", "max_attempts", "poll_interval", "lease_seconds", "retry_base", "retry_max", "outage_max",
                "coalesce"):
        assert getattr(ours, key) == getattr(theirs, key), key


def test_a_bad_relay_setting_from_the_environment_names_the_variable(tmp_path):
    with pytest.raises(ConfigError, match=r"environment variable STRANGLER_RELAY_RETRY_MAX: .*expected a number"):
        load_config(cwd=tmp_path, environ={"STRANGLER_RELAY_RETRY_MAX": "forever"})
    with pytest.raises(ConfigError, match=r"relay.retry_max = 0.5: .*at least relay.retry_base \(1.0\)"):
        load_config(cwd=tmp_path, environ={"STRANGLER_RELAY_RETRY_MAX": "0.5"})


def test_a_value_out_of_range_names_where_it_was_set(tmp_path):
    (tmp_path / "strangler.toml").write_text("[relay]\nbatch = 50\n")
    with pytest.raises(ConfigError, match=r"relay.batch = 0: .* \(environment variable STRANGLER_RELAY_BATCH\)"):
        load_config(cwd=tmp_path, environ={"STRANGLER_RELAY_BATCH": "0"})
    with pytest.raises(ConfigError, match=r"relay.batch = -5: .* \(option for relay.batch\)"):
        load_config(cwd=tmp_path, environ={}, overrides={"relay.batch": -5})
