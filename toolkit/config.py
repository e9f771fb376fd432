"""Configuration: ``strangler.toml`` or ``[tool.strangler]``, then ``STRANGLER_*``, then flags.

One typed object, ``Config``, with a section per part. Each field's type is
checked; an unknown key or a bad value is a ``ConfigError`` naming the key,
where it came from (file, environment variable or flag) and the expected form.

To add a setting, add a field (with a default and a ``help`` in its metadata)
to the section dataclass; loading, validation, environment variables and
``docs/configuration.md`` follow from it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import typing
from pathlib import Path
from typing import Any, Literal, Mapping

ENV_PREFIX = "STRANGLER_"


class ConfigError(Exception):
    """A configuration value is unknown or malformed; the message says where and what to write."""

    exit_code = 2


def _field(default: Any, help: str) -> Any:
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass
class RelayConfig:
    """How the relay claims, publishes and retries."""

    batch: int = _field(200, "rows claimed and published per batch (1 to 100000)")
    max_attempts: int = _field(10, "failed publishes before a row is dead")
    poll_interval: float = _field(0.5, "longest sleep between polls when idle, in seconds")
    lease_seconds: float = _field(15.0, "how long a relay owns its partitions without renewing")
    metrics_port: int = _field(0, "port of /metrics, /healthz and /readyz; 0 turns them off")
    retry_base: float = _field(
        1.0, "seconds before a row's first retry after a permanent failure; doubles per attempt (above 0)"
    )
    retry_max: float = _field(300.0, "longest wait before a row's retry, in seconds (at least retry_base)")
    outage_max: float = _field(30.0, "longest pause of the whole relay while the broker is unreachable, in seconds")
    coalesce: float = _field(
        0.0, "seconds to wait after a NOTIFY wake-up so close commits share a batch (0 to poll_interval)"
    )
    mark_interval: float = _field(
        0.01, "while caught up with NOTIFY, mark published rows at most this often, in one statement, "
        "in seconds (0 marks each batch at once; at most lease_seconds / 3)"
    )


@dataclasses.dataclass
class CodemodsConfig:
    """How ``scan`` and ``rewrite`` find state changes and name events."""

    event_prefix: str = _field("app", "first segment of generated event types: <prefix>.<aggregate>.<verb>")
    exclude: list[str] = _field([], "glob patterns of paths to leave alone")
    skip_kinds: list[str] = _field([], "kinds of state change to leave alone everywhere")
    skip: list[str] = _field([], "per-path opt-outs 'GLOB:KIND' (KIND may be '*'), e.g. 'shop/tracking.py:*'")
    skip_functions: list[str] = _field(
        [], "glob patterns of functions whose writes are left alone, e.g. '*.before_request', 'track_*'"
    )
    verbs: Literal["crud", "function"] = _field(
        "crud", "event verbs: 'crud' (created/updated/deleted/saved) or 'function' (from the function's name)"
    )
    event_types: list[str] = _field(
        [], "per-site event types 'PATH_GLOB::FUNCTION_GLOB=TEMPLATE', e.g. 'shop/orders.py::pay=shop.order.paid'"
    )
    attach_metadata: bool = _field(
        True, "rewrite adds outbox.table.create_with(<metadata>) where the app creates its MetaData"
    )


@dataclasses.dataclass
class CryptoConfig:
    """Where events are encrypted and where keys and the policy live."""

    encrypt_at: Literal["emit", "relay", "off"] = _field(
        "emit", "encrypt when the row is written ('emit'), in the relay ('relay'), or not ('off')"
    )
    keys_dir: str = _field(".strangler/keys", "folder of key files (private keys are mode 0600)")
    policy: str = _field("strangler-policy.toml", "policy file: which services read which event types")
    producer: str = _field("", "name of this producer's signing key (kid <producer>-<n>); empty: the only one in keys_dir")
    reuse_events: int = _field(1000, "events one content key serves per recipient set; 0: a new key per event")
    reuse_seconds: float = _field(60.0, "seconds one content key serves per recipient set; 0: a new key per event")
    curve: Literal["P-256", "X25519"] = _field("P-256", "curve of new consumer keys made by 'strangler keys new'")


@dataclasses.dataclass
class WatchConfig:
    """What ``strangler watch`` evaluates and where its alerts go."""

    rules: str = _field("strangler-watch.toml", "watch rules file (TOML); see docs/observability.md")
    group: str = _field("strangler-watch", "the watch's own consumer group on the router")
    webhook: str = _field("", "URL each alert is POSTed to as JSON; empty: none")
    metrics_port: int = _field(0, "port serving strangler_watch_alerts_total; 0 turns it off")


@dataclasses.dataclass
class Config:
    """All of strangler's settings."""

    source: str = _field("/monolith", "CloudEvents source of this producer, e.g. '/shop'")
    db: str = _field("", "SQLAlchemy URL of the monolith's database")
    router: str = _field("file://./strangler-events", "router URL: file://, redis://, amqp://, nats://, mqtt://")
    outbox_table: str = _field("strangler_outbox", "name of the outbox table")
    relay: RelayConfig = dataclasses.field(default_factory=RelayConfig)
    codemods: CodemodsConfig = dataclasses.field(default_factory=CodemodsConfig)
    crypto: CryptoConfig = dataclasses.field(default_factory=CryptoConfig)
    watch: WatchConfig = dataclasses.field(default_factory=WatchConfig)
    #: Where the file values came from, for messages; not a setting.
    origin: str = dataclasses.field(default="defaults", compare=False, repr=False)

    def policy_file(self) -> str | None:
        """The policy file in force: ``crypto.policy`` where it exists, None where the default's is absent.

        A project without a policy at the default path has not adopted
        encryption yet; a policy named explicitly must exist, or ``emit`` and the
        relay would quietly pass plaintext the project meant to encrypt.
        """
        policy = self.crypto.policy
        if os.path.isfile(policy):
            return policy
        if policy == CryptoConfig().policy:
            return None
        where = "environment variable STRANGLER_CRYPTO_POLICY" if "STRANGLER_CRYPTO_POLICY" in os.environ else self.origin
        raise ConfigError(
            f"{where}: crypto.policy = {policy!r}: no such file (relative paths are from {os.getcwd()}); "
            "write the policy there, or set crypto.encrypt_at = 'off' for plaintext events"
        )




def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _expected(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is list:
        return "a list of strings"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(tp, str(tp))


def _coerce(tp: Any, value: Any, *, from_text: bool) -> Any:
    """Return ``value`` as type ``tp`` or raise ValueError; text (env, flags) is parsed."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ValueError
        return value
    if origin is list:
        if from_text and isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError
        return list(value)
    if tp is bool:
        if from_text and isinstance(value, str):
            lowered = value.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if not isinstance(value, bool):
            raise ValueError
        return value
    if tp is int:
        if from_text and isinstance(value, str):
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError
        return value
    if tp is float:
        if from_text and isinstance(value, str):
            return float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError
        return value
    raise ValueError


#: Upper bounds: values past them are typos (a batch of 10^20 rows, a lease of 30,000 years) that would
#: fail later, in a timestamp or a driver's integer, with an error naming neither the key nor the file.
MAX_BATCH = 100_000
MAX_ATTEMPTS = 1_000_000
MAX_SECONDS = 86_400


def _check_bounds(config: "Config", set_by: Mapping[str, str]) -> None:
    """Check the values' ranges; an error names where the offending key was set (file, variable, option)."""

    def origin(key: str) -> str:
        return set_by.get(key, "the default")

    if not 1 <= config.relay.batch <= MAX_BATCH:
        raise ConfigError(f"relay.batch = {config.relay.batch}: expected an integer from 1 to {MAX_BATCH} "
                          f"({origin('relay.batch')})")
    if not 1 <= config.relay.max_attempts <= MAX_ATTEMPTS:
        raise ConfigError(
            f"relay.max_attempts = {config.relay.max_attempts}: expected an integer from 1 to {MAX_ATTEMPTS} "
            f"({origin('relay.max_attempts')})"
        )
    if not 0 <= config.relay.metrics_port <= 65535:
        raise ConfigError(f"relay.metrics_port = {config.relay.metrics_port}: expected 0-65535 ({origin('relay.metrics_port')})")
    relay = config.relay
    for key in ("poll_interval", "lease_seconds", "retry_base", "outage_max"):
        value = getattr(relay, key)
        if not (math.isfinite(value) and 0 < value <= MAX_SECONDS):
            raise ConfigError(f"relay.{key} = {value}: expected a number of seconds above 0, at most {MAX_SECONDS} "
                              f"(a day) ({origin('relay.' + key)})")
    if not (math.isfinite(relay.retry_max) and relay.retry_base <= relay.retry_max <= MAX_SECONDS):
        raise ConfigError(
            f"relay.retry_max = {relay.retry_max}: expected a number of seconds of at least "
            f"relay.retry_base ({relay.retry_base}) ({origin('relay.retry_max')})"
        )
    if not 0 <= relay.coalesce <= relay.poll_interval:
        raise ConfigError(
            f"relay.coalesce = {relay.coalesce}: expected a number of seconds from 0 (no wait) to "
            f"relay.poll_interval ({relay.poll_interval}) ({origin('relay.coalesce')})"
        )
    if not (math.isfinite(relay.mark_interval) and 0 <= relay.mark_interval <= relay.lease_seconds / 3):
        raise ConfigError(
            f"relay.mark_interval = {relay.mark_interval}: expected a number of seconds from 0 (mark each batch at "
            f"once) to a third of relay.lease_seconds ({relay.lease_seconds / 3:g}) ({origin('relay.mark_interval')})"
        )
    if not config.source or any(c.isspace() for c in config.source):
        raise ConfigError(f"source = {config.source!r}: expected a URI-reference such as '/shop' ({origin('source')})")


def _apply(
    target: Any, values: Mapping[str, Any], where: str, *, prefix: str = "", from_text: bool = False,
    set_by: dict[str, str] | None = None,
) -> None:
    hints = typing.get_type_hints(type(target))
    names = {f.name for f in dataclasses.fields(target) if f.name != "origin"}
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            known = ", ".join(sorted(names))
            raise ConfigError(f"{where}: unknown key {dotted!r}; known keys here: {known}")
        tp = hints[key]
        if _is_section(tp):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}: {dotted!r} must be a table ([{dotted}])")
            _apply(getattr(target, key), value, where, prefix=f"{dotted}.", from_text=from_text, set_by=set_by)
            continue
        try:
            coerced = _coerce(tp, value, from_text=from_text)
        except (ValueError, TypeError):
            raise ConfigError(f"{where}: {dotted} = {value!r}: expected {_expected(tp)}") from None
        setattr(target, key, coerced)
        if set_by is not None:
            set_by[dotted] = where


def find_config_file(start: Path) -> Path | None:
    """Return ``strangler.toml`` or a ``pyproject.toml`` with ``[tool.strangler]``, searching upwards."""
    for folder in (start, *start.parents):
        candidate = folder / "strangler.toml"
        if candidate.is_file():
            return candidate
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file():
            try:
                doc = tomllib.loads(pyproject.read_text(encoding="utf-8"))
            except tomllib.TOMLDecodeError:
                continue
            if "strangler" in doc.get("tool", {}):
                return pyproject
    return None


def _read_file(path: Path) -> dict[str, Any]:
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text: {exc}") from None
    if path.name == "pyproject.toml":
        doc = doc.get("tool", {}).get("strangler", {})
        if not isinstance(doc, dict):
            raise ConfigError(f"{path}: [tool.strangler] must be a table")
    return doc


def _environment_values(environ: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """Map dotted keys to (value, variable) for every ``STRANGLER_*`` variable naming a setting."""
    out: dict[str, tuple[str, str]] = {}
    hints = typing.get_type_hints(Config)
    for field in dataclasses.fields(Config):
        if field.name == "origin":
            continue
        tp = hints[field.name]
        if _is_section(tp):
            for sub in dataclasses.fields(tp):
                var = f"{ENV_PREFIX}{field.name}_{sub.name}".upper()
                if var in environ:
                    out[f"{field.name}.{sub.name}"] = (environ[var], var)
        else:
            var = f"{ENV_PREFIX}{field.name}".upper()
            if var in environ:
                out[field.name] = (environ[var], var)
    return out


def _nest(dotted: Mapping[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in dotted.items():
        head, _, tail = key.partition(".")
        if tail:
            nested.setdefault(head, {})[tail] = value
        else:
            nested[head] = value
    return nested


def load_config(
    path: str | Path | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    flags: Mapping[str, str] | None = None,
) -> Config:
    """Load the configuration: file, then environment, then ``overrides`` (dotted keys, e.g. from flags).

    ``path`` names the file; without it ``strangler.toml`` or ``pyproject.toml``
    is searched from ``cwd`` upwards, and none found means defaults.
    Overrides whose value is ``None`` (a flag not given) are ignored;
    ``flags`` names the command-line option each override came from, for errors.
    """
    environ = os.environ if environ is None else environ
    config = Config()
    set_by: dict[str, str] = {}  # dotted key -> where its value came from, for range errors
    file_path = Path(path) if path is not None else find_config_file(cwd or Path.cwd())
    if file_path is not None:
        config.origin = str(file_path)
        _apply(config, _read_file(file_path), str(file_path), set_by=set_by)
    for dotted, (value, var) in _environment_values(environ).items():
        _apply(config, _nest({dotted: value}), f"environment variable {var}", from_text=True, set_by=set_by)
    if overrides:
        given = {k: v for k, v in overrides.items() if v is not None}
        for dotted, value in given.items():
            where = f"option {flags[dotted]}" if flags and dotted in flags else f"option for {dotted}"
            _apply(config, _nest({dotted: value}), where, from_text=isinstance(value, str), set_by=set_by)
    _check_bounds(config, set_by)
    return config


def describe() -> list[tuple[str, str, str, str]]:
    """Return (key, environment variable, default, help) for every setting, for docs and --help."""
    rows = []
    hints = typing.get_type_hints(Config)
    for field in dataclasses.fields(Config):
        if field.name == "origin":
            continue
        tp = hints[field.name]
        if _is_section(tp):
            section_default = tp()
            for sub in dataclasses.fields(tp):
                rows.append(
                    (
                        f"{field.name}.{sub.name}",
                        f"{ENV_PREFIX}{field.name}_{sub.name}".upper(),
                        repr(getattr(section_default, sub.name)),
                        sub.metadata.get("help", ""),
                    )
                )
        else:
            rows.append(
                (field.name, f"{ENV_PREFIX}{field.name}".upper(), repr(field.default), field.metadata.get("help", ""))
            )
    return rows
