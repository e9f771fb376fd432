"""Key files and key rings: one JWK per file, private keys mode 0600, ``kid`` = ``<name>-<version>``.

A keys folder holds, per key version, ``<kid>.jwk`` (the public JWK, safe to
copy anywhere) and, where this machine may hold it, ``<kid>.private.jwk`` (mode
0600). Consumer keys have ``use`` ``enc`` (``ECDH-ES+A256KW`` on P-256 or
X25519); producer signing keys have ``use`` ``sig`` (``Ed25519``). Besides the
standard JWK members a file carries ``created`` and, once retired, ``retired``
(RFC 3339). A retired consumer key is no longer encrypted to, but its private
half still decrypts events already in flight until the file is deleted.

The producer (monolith or relay) needs the public files of its consumers and
its own signing key; a consumer needs its own private key(s) and the public
files of the producers it trusts.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import stat
from pathlib import Path
from typing import Any, Iterable

from joserfc.jwk import ECKey, OKPKey, import_key

ENC_ALG = "ECDH-ES+A256KW"
SIG_ALG = "Ed25519"
CURVES = ("P-256", "X25519")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_KID = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)-(?P<version>[0-9]+)$")
_PUBLIC_SUFFIX = ".jwk"
_PRIVATE_SUFFIX = ".private.jwk"


class KeyFileError(ValueError):
    """A key file or folder is missing, malformed or too open; the message names the file and the fix."""


@dataclasses.dataclass
class KeyInfo:
    """One key version: its public JWK and, when this folder holds it, the private one."""

    kid: str
    name: str
    version: int
    use: str  # "enc" (a consumer's) or "sig" (a producer's)
    alg: str
    curve: str
    created: str
    retired: str | None
    public: Any  # joserfc key with the public half only
    private: Any | None = dataclasses.field(default=None, repr=False)
    path: Path | None = None

    @property
    def active(self) -> bool:
        """True until the key is retired."""
        return not self.retired

    def describe(self) -> dict[str, Any]:
        """Return what ``keys list`` shows: never key material."""
        return {
            "kid": self.kid,
            "name": self.name,
            "version": self.version,
            "use": self.use,
            "alg": self.alg,
            "crv": self.curve,
            "created": self.created,
            "retired": self.retired,
            "private": self.private is not None,
            "file": str(self.path) if self.path else None,
        }


def parse_kid(kid: str) -> tuple[str, int]:
    """Split ``billing-2`` into ``("billing", 2)``."""
    match = _KID.match(kid or "")
    if not match:
        raise KeyFileError(f"key id {kid!r} is not '<name>-<version>', e.g. 'billing-1'")
    return match["name"], int(match["version"])


def check_name(name: str) -> str:
    """Return ``name`` if it can name a service or producer in key ids, else raise."""
    if not _NAME.match(name or ""):
        raise KeyFileError(
            f"name {name!r} must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read key file: {exc.strerror}") from None
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise KeyFileError(f"{path}: not a JSON Web Key (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(doc, dict):
        raise KeyFileError(f"{path}: not a JSON Web Key (the top level must be an object)")
    return doc


def check_private_mode(path: Path) -> None:
    """Refuse a private key file that group or others may read or write."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeyFileError(
            f"{path}: private key file has mode {mode:04o}, readable by group or others; "
            f"run: chmod 600 {path}"
        )


def _import(doc: dict[str, Any], path: Path, *, private: bool) -> tuple[Any, str, str, str]:
    """Return (joserfc key, use, alg, curve) of a key file's JWK, checked."""
    for member in ("kty", "crv", "x", "kid", "use"):
        if member not in doc:
            raise KeyFileError(f"{path}: JWK member {member!r} is missing; regenerate with 'strangler keys new'")
    if private and "d" not in doc:
        raise KeyFileError(f"{path}: a .private.jwk file must hold the private member 'd'")
    if not private and "d" in doc:
        raise KeyFileError(
            f"{path}: a public key file holds private key material ('d'); move it to "
            f"{path.name[: -len(_PUBLIC_SUFFIX)]}{_PRIVATE_SUFFIX} with mode 0600"
        )
    use, curve = doc["use"], doc["crv"]
    if use == "enc" and curve in CURVES:
        alg = ENC_ALG
    elif use == "sig" and curve == "Ed25519":
        alg = SIG_ALG
    else:
        raise KeyFileError(
            f"{path}: unsupported key: use {use!r} with crv {curve!r}; consumer keys are use 'enc' on "
            f"{' or '.join(CURVES)}, producer keys use 'sig' on Ed25519"
        )
    if doc.get("alg", alg) != alg:
        raise KeyFileError(f"{path}: alg {doc['alg']!r} does not fit a {use!r} key on {curve}; expected {alg!r}")
    standard = {k: doc[k] for k in ("kty", "crv", "x", "y", "d") if k in doc}
    try:
        key = import_key(standard)
    except Exception as exc:  # joserfc raises several types for bad key values
        raise KeyFileError(f"{path}: not a valid {curve} key: {exc}") from None
    return key, use, alg, curve


class KeyRing:
    """The keys of one folder, by kid: public halves of all, private halves this folder holds."""

    def __init__(self, keys: Iterable[KeyInfo] = (), folder: Path | None = None):
        self.folder = folder
        self.keys: dict[str, KeyInfo] = {k.kid: k for k in keys}
        self._stamp = self._folder_stamp()

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> "KeyRing":
        """Read every key file of ``folder``; a missing folder is an error naming it."""
        folder = Path(folder)
        if not folder.is_dir():
            raise KeyFileError(f"{folder}: no such keys folder; create keys with 'strangler keys new SERVICE'")
        return cls(_load_keys(folder), folder)

    def _folder_stamp(self) -> tuple | None:
        """What changes when a key file is added, removed or rewritten: each file's name, time and size.

        The folder's own time changes only when a name comes or goes; a key
        file copied over an older one of the same name (a deployment that syncs
        the folder, ``cp`` of a retired key) changes the file alone.
        """
        if self.folder is None:
            return None
        try:
            with os.scandir(self.folder) as entries:
                files = sorted(
                    (entry.name, stat.st_mtime_ns, stat.st_size)
                    for entry in entries
                    if entry.name.endswith(_PUBLIC_SUFFIX) and (stat := entry.stat())
                )
        except OSError:
            return None
        return tuple(files)

    def reload_if_changed(self) -> bool:
        """Re-read the folder if a key was added, rotated or retired since; return True if it was."""
        stamp = self._folder_stamp()
        if self.folder is None or stamp == self._stamp:
            return False
        self.keys = {k.kid: k for k in _load_keys(self.folder)}
        self._stamp = stamp
        return True

    def get(self, kid: str) -> KeyInfo | None:
        """Return the key ``kid``, or None."""
        return self.keys.get(kid)

    def of(self, name: str, *, use: str | None = None) -> list[KeyInfo]:
        """Return every version of ``name``'s keys, oldest first."""
        return sorted(
            (k for k in self.keys.values() if k.name == name and (use is None or k.use == use)),
            key=lambda k: k.version,
        )

    def recipients(self, service: str) -> list[KeyInfo]:
        """Return the active (not retired) encryption keys of ``service``: every version in use."""
        return [k for k in self.of(service, use="enc") if k.active]

    def decryption_keys(self) -> dict[str, KeyInfo]:
        """Return the private encryption keys this folder holds, retired ones included, by kid."""
        return {k.kid: k for k in self.keys.values() if k.use == "enc" and k.private is not None}

    def readers_without_keys(self, policy) -> dict[str, list[str]]:
        """The services ``policy`` names as readers that have no active encryption key here, with their patterns.

        Every emit of those patterns' types fails (``SealError``) while one is
        listed: a key not made yet, retired without a successor, or a name
        misspelt in the policy.
        """
        return {service: patterns for service, patterns in policy.reader_services().items()
                if not self.recipients(service)}

    def signing_key(self, producer: str | None = None) -> KeyInfo:
        """Return the newest active private signing key (of ``producer`` if given)."""
        candidates = [
            k
            for k in self.keys.values()
            if k.use == "sig" and k.private is not None and k.active and (producer is None or k.name == producer)
        ]
        if not candidates:
            who = f" for producer {producer!r}" if producer else ""
            raise KeyFileError(
                f"{self.folder or 'key ring'}: no active private signing key{who}; "
                "run: strangler keys new --producer"
            )
        names = {k.name for k in candidates}
        if producer is None and len(names) > 1:
            raise KeyFileError(
                f"{self.folder}: signing keys of several producers ({', '.join(sorted(names))}); "
                "name the producer (crypto.producer in strangler.toml)"
            )
        return max(candidates, key=lambda k: k.version)


def _load_keys(folder: Path) -> list[KeyInfo]:
    infos: dict[str, KeyInfo] = {}
    for path in sorted(folder.glob(f"*{_PUBLIC_SUFFIX}")):
        if path.name.endswith(_PRIVATE_SUFFIX):
            continue
        info = _load_public(path)
        infos[info.kid] = info
    for path in sorted(folder.glob(f"*{_PRIVATE_SUFFIX}")):
        check_private_mode(path)
        doc = _read_json(path)
        key, use, alg, curve = _import(doc, path, private=True)
        kid = doc["kid"]
        if path.name != kid + _PRIVATE_SUFFIX:
            raise KeyFileError(f"{path}: file name does not match its kid {kid!r}; expected {kid}{_PRIVATE_SUFFIX}")
        info = infos.get(kid)
        if info is None:
            name, version = parse_kid(kid)
            public = import_key({k: v for k, v in key.as_dict(private=False).items()})
            info = KeyInfo(kid, name, version, use, alg, curve, doc.get("created", ""), doc.get("retired"), public, path=path)
            infos[kid] = info
        elif info.public.as_dict(private=False) != key.as_dict(private=False):
            raise KeyFileError(f"{path}: private key does not match the public key in {info.path}")
        info.private = key
    return list(infos.values())


def load_key_file(path: str | os.PathLike[str]) -> KeyInfo:
    """Read one key file, public or private (any name; a file holding ``d`` must be mode 0600)."""
    path = Path(path)
    if not path.is_file():
        raise KeyFileError(f"{path}: no such key file")
    if path.name.endswith(_PRIVATE_SUFFIX):
        check_private_mode(path)
    doc = _read_json(path)
    private = "d" in doc
    if private:
        check_private_mode(path)
    key, use, alg, curve = _import(doc, path, private=private)
    name, version = parse_kid(doc["kid"])
    public = import_key(key.as_dict(private=False)) if private else key
    return KeyInfo(
        doc["kid"], name, version, use, alg, curve, doc.get("created", ""), doc.get("retired"),
        public, key if private else None, path,
    )


def _load_public(path: Path) -> KeyInfo:
    doc = _read_json(path)
    key, use, alg, curve = _import(doc, path, private=False)
    kid = doc["kid"]
    if path.name != kid + _PUBLIC_SUFFIX:
        raise KeyFileError(f"{path}: file name does not match its kid {kid!r}; expected {kid}{_PUBLIC_SUFFIX}")
    name, version = parse_kid(kid)
    return KeyInfo(kid, name, version, use, alg, curve, doc.get("created", ""), doc.get("retired"), key, path=path)


def _write_private(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, (json.dumps(doc, indent=2) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _write_public(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def new_key(
    folder: str | os.PathLike[str], name: str, *, producer: bool = False, curve: str = "P-256"
) -> KeyInfo:
    """Create the next version of ``name``'s key pair in ``folder`` and return it.

    A consumer key (``producer=False``) is an ECDH key on ``curve`` (P-256 or
    X25519); a producer key is an Ed25519 signing key. The private file is
    created with mode 0600 and the folder with 0700.
    """
    check_name(name)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    existing = _load_keys(folder)
    mine = [k for k in existing if k.name == name]
    use = "sig" if producer else "enc"
    if mine and any(k.use != use for k in mine):
        other = "a producer (signing)" if mine[0].use == "sig" else "a consumer (encryption)"
        raise KeyFileError(f"{folder}: {name!r} already has {other} key; pick another name")
    version = max((k.version for k in mine), default=0) + 1
    kid = f"{name}-{version}"
    if producer:
        key = OKPKey.generate_key("Ed25519", private=True)
        alg, curve = SIG_ALG, "Ed25519"
    elif curve == "P-256":
        key, alg = ECKey.generate_key("P-256", private=True), ENC_ALG
    elif curve == "X25519":
        key, alg = OKPKey.generate_key("X25519", private=True), ENC_ALG
    else:
        raise KeyFileError(f"curve {curve!r} is not supported for consumer keys; use one of {', '.join(CURVES)}")
    created = _now()
    meta = {"kid": kid, "use": use, "alg": alg, "created": created}
    _write_private(folder / f"{kid}{_PRIVATE_SUFFIX}", {**key.as_dict(private=True), **meta})
    _write_public(folder / f"{kid}{_PUBLIC_SUFFIX}", {**key.as_dict(private=False), **meta})
    public = import_key(key.as_dict(private=False))
    return KeyInfo(kid, name, version, use, alg, curve, created, None, public, key, folder / f"{kid}{_PUBLIC_SUFFIX}")


def rotate_key(folder: str | os.PathLike[str], name: str) -> KeyInfo:
    """Add the next version of ``name``'s key, same kind and curve; the old versions stay active."""
    folder = Path(folder)
    mine = KeyRing.load(folder).of(name)
    if not mine:
        raise KeyFileError(f"{folder}: no key of {name!r} to rotate; create one with 'strangler keys new {name}'")
    newest = mine[-1]
    return new_key(folder, name, producer=newest.use == "sig", curve=newest.curve if newest.use == "enc" else "P-256")


def retire_key(folder: str | os.PathLike[str], kid: str) -> KeyInfo:
    """Mark ``kid`` retired: producers stop using it; its private half still decrypts events in flight."""
    folder = Path(folder)
    parse_kid(kid)
    public_path = folder / f"{kid}{_PUBLIC_SUFFIX}"
    private_path = folder / f"{kid}{_PRIVATE_SUFFIX}"
    if not public_path.exists() and not private_path.exists():
        raise KeyFileError(f"{folder}: no key {kid!r}; 'strangler keys list' shows the kids")
    when = _now()
    if public_path.exists():
        doc = _read_json(public_path)
        doc.setdefault("retired", when)
        _write_public(public_path, doc)
    if private_path.exists():
        check_private_mode(private_path)
        doc = _read_json(private_path)
        doc.setdefault("retired", when)
        _write_private(private_path, doc)
    info = KeyRing.load(folder).get(kid)
    assert info is not None
    return info
