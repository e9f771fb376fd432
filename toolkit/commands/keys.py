"""``strangler keys``: make, rotate, retire and list the keys that encrypt and sign events.

Key material is never printed or logged; ``keys export`` prints a public JWK,
and a private one only with ``--private``.
"""

from __future__ import annotations

import json
import os

import click

from ..config import ConfigError
from ..context import Problems, load


@click.group(name="keys")
def command() -> None:
    """Make, rotate, retire and list event keys (consumer encryption keys, producer signing keys).

    \b
    Examples:
      strangler keys new --producer            # the monolith's signing key, e.g. shop-1
      strangler keys new billing               # billing's key: events of its types are encrypted to it
      strangler keys list
      strangler keys rotate billing            # then: strangler keys retire billing-1
    """


def _crypto():
    try:
        import outbox.crypto as crypto
    except ImportError as exc:
        raise click.UsageError(str(exc)) from None
    return crypto


def _keys_dir(ctx: click.Context, keys_dir: str | None) -> str:
    return load(ctx, crypto__keys_dir=keys_dir).crypto.keys_dir


def _producer_name(config) -> str:
    if config.crypto.producer:
        return config.crypto.producer
    name = config.source.strip("/").replace("/", "-")
    if not name:
        raise click.UsageError("name the producer: strangler keys new --producer NAME (or set source, e.g. '/shop')")
    return name


_KEYS_DIR = click.option("--keys-dir", help="Folder of key files (default: crypto.keys_dir, .strangler/keys).")


def _created(info, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(info.describe()))
        return
    what = "signing key" if info.use == "sig" else "encryption key"
    click.echo(f"created {info.kid}: {what}, {info.alg} on {info.curve}")
    private = info.path.with_name(f"{info.kid}.private.jwk")
    if info.use == "sig":
        click.echo(f"  private {private} (0600): keep it with the producer (monolith or relay) only")
        click.echo(f"  public  {info.path}: copy it to every consuming service's keys folder")
    else:
        click.echo(f"  private {private} (0600): give it to the {info.name} service only")
        click.echo(f"  public  {info.path}: copy it to the producer's keys folder (the recipients set)")


@command.command("new")
@click.argument("name", required=False)
@click.option("--producer", is_flag=True, help="Make the producer's Ed25519 signing key (NAME defaults to the source).")
@click.option("--curve", type=click.Choice(["P-256", "X25519"]), help="Curve of a consumer key (default: crypto.curve).")
@_KEYS_DIR
@click.option("--json", "as_json", is_flag=True, help="Describe the new key as JSON (never key material).")
@click.pass_context
def new_command(ctx, name: str | None, producer: bool, curve: str | None, keys_dir: str | None, as_json: bool):
    """Make a key pair: a consumer's encryption key, or with --producer the signing key.

    \b
    The private file (mode 0600) goes to its owner only; the public file is
    what others need: the producer encrypts to consumers' public keys,
    consumers verify with the producer's public key.

    \b
    Examples:
      strangler keys new billing
      strangler keys new crm --curve X25519
      strangler keys new --producer            # kid from source, e.g. shop-1
    """
    crypto = _crypto()
    config = load(ctx, crypto__keys_dir=keys_dir, crypto__curve=curve)
    if producer:
        name = name or _producer_name(config)
    elif not name:
        raise click.UsageError("name the service: strangler keys new SERVICE (or --producer for the signing key)")
    try:
        crypto.keys.check_name(name)
    except crypto.KeyFileError as exc:
        raise click.UsageError(str(exc)) from None
    _refuse_a_second_first_key(crypto, config.crypto.keys_dir, name)
    try:
        info = crypto.new_key(config.crypto.keys_dir, name, producer=producer, curve=config.crypto.curve)
    except crypto.KeyFileError as exc:
        raise Problems(str(exc)) from None
    _created(info, as_json)


def _refuse_a_second_first_key(crypto, keys_dir: str, name: str) -> None:
    """``keys new`` makes a name's first key: a second version is a rotation, with its own steps."""
    if not os.path.isdir(keys_dir):
        return
    try:
        existing = crypto.KeyRing.load(keys_dir).of(name)
    except crypto.KeyFileError as exc:
        raise Problems(str(exc)) from None
    if existing:
        kids = ", ".join(k.kid for k in existing)
        raise click.UsageError(
            f"{name!r} already has keys in {keys_dir} ({kids}); to add the next version, "
            f"run: strangler keys rotate {name}"
        )


@command.command("rotate")
@click.argument("name")
@_KEYS_DIR
@click.option("--json", "as_json", is_flag=True, help="Describe the new key as JSON.")
@click.pass_context
def rotate_command(ctx, name: str, keys_dir: str | None, as_json: bool):
    """Add the next version of NAME's key; the old one stays in use until retired.

    \b
    Rotation without an unreadable event:
      1. strangler keys rotate billing      -> billing-2; events now go to billing-1 and billing-2
      2. deploy billing-2.private.jwk to billing, billing-2.jwk to the producer
      3. strangler keys retire billing-1    -> events go to billing-2 only
      4. once no event for billing-1 is in flight, delete billing-1.private.jwk

    \b
    Example:
      strangler keys rotate billing
    """
    crypto = _crypto()
    try:
        info = crypto.rotate_key(_keys_dir(ctx, keys_dir), name)
    except crypto.KeyFileError as exc:
        raise Problems(str(exc)) from None
    _created(info, as_json)
    if info.use == "sig":
        click.echo(
            f"note: the producer signs with {info.kid} from now on (a running one within a second): consumers "
            f"reject what it signs until {info.kid}.jwk is in their keys folders and [trust] names it; "
            "deploy it there first when events flow",
            err=True,
        )


@command.command("retire")
@click.argument("kid")
@_KEYS_DIR
@click.option("--force", is_flag=True,
              help="Retire KID even when it is the last active key of its service or producer.")
@click.pass_context
def retire_command(ctx, kid: str, keys_dir: str | None, force: bool):
    """Stop encrypting to (or signing with) KID; its private half still opens events in flight.

    The last active key of a name is kept unless --force: with no active key,
    every emit of the types its service reads (or, for the producer, every
    emit) fails. Rotate first, then retire the old version.

    \b
    Example:
      strangler keys rotate billing && strangler keys retire billing-1
    """
    crypto = _crypto()
    config = load(ctx, crypto__keys_dir=keys_dir)
    folder = config.crypto.keys_dir
    if not force:
        _refuse_retiring_the_last(crypto, folder, kid, _policy_or_none(crypto, config))
    try:
        info = crypto.retire_key(folder, kid)
    except crypto.KeyFileError as exc:
        raise Problems(str(exc)) from None
    click.echo(f"retired {info.kid} on {info.retired}")


def _policy_or_none(crypto, config):
    """The policy in force, or None where there is none or it cannot be read (other commands report that)."""
    try:
        path = config.policy_file()
        return None if path is None else crypto.load_policy(path)
    except (ConfigError, crypto.PolicyError):
        return None


def _refuse_retiring_the_last(crypto, folder: str, kid: str, policy) -> None:
    """A usage error when ``kid`` is the only active key of its name and use."""
    try:
        ring = crypto.KeyRing.load(folder)
    except crypto.KeyFileError:
        return  # retire_key names the problem with the folder or the kid
    info = ring.get(kid)
    if info is None or not info.active:
        return
    active = [k for k in ring.of(info.name, use=info.use) if k.active]
    if active != [info]:
        return
    if info.use == "sig":
        harm = "the producer could sign nothing: every emit would fail"
    else:
        patterns = policy.reader_services().get(info.name, []) if policy is not None else []
        harm = (f"{policy.origin} gives {info.name} {', '.join(patterns)}: every emit of those types would fail"
                if patterns else f"nothing could be encrypted to {info.name}")
    raise click.UsageError(
        f"{kid} is the last active key of {info.name}, and {harm}; run 'strangler keys rotate {info.name}' "
        f"first (and deploy the new key), then retire {kid}; or pass --force"
    )


@command.command("list")
@_KEYS_DIR
@click.option("--json", "as_json", is_flag=True, help="Write the keys as a JSON array (never key material).")
@click.pass_context
def list_command(ctx, keys_dir: str | None, as_json: bool):
    """List kids, algorithms, created and retired dates, and whether the private half is here.

    \b
    Example:
      strangler keys list --json
    """
    crypto = _crypto()
    try:
        ring = crypto.KeyRing.load(_keys_dir(ctx, keys_dir))
    except crypto.KeyFileError as exc:
        raise Problems(str(exc)) from None
    rows = [k.describe() for k in sorted(ring.keys.values(), key=lambda k: (k.name, k.version))]
    policy = _policy_or_none(crypto, load(ctx))
    if policy is not None:
        for service, patterns in sorted(ring.readers_without_keys(policy).items()):
            click.echo(
                f"warning: {policy.origin} gives {service} {', '.join(patterns)}, but no active key of "
                f"{service} is here: every emit of those types fails; run 'strangler keys new {service}' "
                "(or correct the name in the policy)",
                err=True,
            )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no keys; make one with: strangler keys new SERVICE", err=True)
        return
    click.echo(f"{'KID':<24} {'USE':<4} {'ALG':<15} {'CRV':<8} {'CREATED':<21} {'RETIRED':<21} PRIVATE")
    for row in rows:
        click.echo(
            f"{row['kid']:<24} {row['use']:<4} {row['alg']:<15} {row['crv']:<8} {row['created'] or '-':<21} "
            f"{row['retired'] or '-':<21} {'yes' if row['private'] else 'no'}"
        )


@command.command("export")
@click.argument("kid")
@click.option("--private", "include_private", is_flag=True, help="Print the private JWK too (it is a secret).")
@_KEYS_DIR
@click.pass_context
def export_command(ctx, kid: str, include_private: bool, keys_dir: str | None):
    """Print KID's public JWK (to hand to another team); --private prints the private one.

    \b
    Example:
      strangler keys export shop-1 > shop-1.jwk
    """
    crypto = _crypto()
    try:
        info = crypto.KeyRing.load(_keys_dir(ctx, keys_dir)).get(kid)
    except crypto.KeyFileError as exc:
        raise Problems(str(exc)) from None
    if info is None:
        raise Problems(f"no key {kid!r}; 'strangler keys list' shows the kids")
    key = info.private if include_private else info.public
    if key is None:
        raise Problems(f"the private half of {kid} is not in this keys folder")
    doc = {**key.as_dict(private=include_private), "kid": info.kid, "use": info.use, "alg": info.alg}
    click.echo(json.dumps(doc, indent=2))
