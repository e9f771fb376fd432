"""The walkthrough: a legacy shop migrated to its first extracted service, end to end.

Every step is run as the command a person would type, printed with what it
shows, then checked. The run exits 0 only if every check held. The same
journey, for a person to follow by hand, is ``docs/walkthrough.md``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, TextIO

import sample_monolith

#: How many customers and orders the shop simulation places, before and after.
ORDERS = 5
#: Lines of a command's output shown before it is cut (the whole output is in the work folder's logs).
SHOWN_LINES = 14
#: The checks a run makes, held or not: the summary counts against this, so the total is the same
#: whether checks hold, a command fails, or the run stops early.
EXPECTED_CHECKS = 15


class WalkthroughError(Exception):
    """A step could not run at all (as opposed to a check that did not hold)."""


@dataclasses.dataclass
class Check:
    """One thing the walkthrough verified."""

    what: str
    ok: bool
    detail: str = ""


def policy_text(readers: dict[str, list[str]], producer: str) -> str:
    """The policy file the walkthrough writes: who may read which events, whom consumers trust."""
    lines = ["# Who may read which events (strangler-policy.toml); docs/security.md.", "[readers]"]
    lines += [f'"{pattern}" = {json.dumps(services)}' for pattern, services in readers.items()]
    consumers = sorted({s for services in readers.values() for s in services})
    lines += ["", "[trust]"] + [f'{consumer} = ["{producer}"]' for consumer in consumers]
    return "\n".join(lines) + "\n"


class Walkthrough:
    """Runs the journey in ``workdir``; ``run()`` returns the exit code."""

    def __init__(self, workdir: Path, router: str, out: TextIO, *, orders: int = ORDERS):
        self.workdir = workdir.resolve()
        self.router = router
        self.out = out
        self.orders = orders
        self.checks: list[Check] = []
        self.logs = self.workdir / "logs"
        self.step_no = 0
        self._background: list[tuple[str, subprocess.Popen]] = []
        #: Commands of this step that exited with an unexpected code: the step's next check fails with them.
        self._failed_commands: list[str] = []
        #: Why the run stopped before its end, if it did.
        self.stopped: str = ""

    # -- output ---------------------------------------------------------------------------

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def step(self, title: str, why: str) -> None:
        self.step_no += 1
        self.say()
        self.say(f"── Step {self.step_no}: {title}")
        self.say(f"   {why}")

    def check(self, what: str, ok: bool, detail: str = "") -> bool:
        """Record one check. A command of the step that exited unexpectedly since the last check fails
        this one (the command and its exit code as the detail): it is not a check of its own, so the
        number of checks does not depend on what fails."""
        if self._failed_commands:
            ok = False
            detail = "; ".join(self._failed_commands + ([detail] if detail else []))
            self._failed_commands = []
        self.checks.append(Check(what, ok, detail))
        mark = "✓" if ok else "✗"
        self.say(f"   {mark} {what}" + (f" — {detail}" if detail else ""))
        return ok

    # -- commands -------------------------------------------------------------------------

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        # The work folder's copy of the shop comes first on the path: it is the code we change.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.workdir), env.get("PYTHONPATH")]))
        env.pop("STRANGLER_CRYPTO_POLICY", None)
        env.update(extra)
        return env

    def argv(self, display: list[str]) -> list[str]:
        """Turn a displayed command into what runs: ``strangler``/``python`` from this interpreter."""
        if display[0] == "strangler":
            return [sys.executable, "-m", "toolkit", *display[1:]]
        if display[0] in ("python", "python3"):
            return [sys.executable, *display[1:]]
        if display[0] == "alembic":
            return [sys.executable, "-m", "alembic", *display[1:]]
        return display

    def show(self, display: list[str], env_note: dict[str, str] | None = None, *, suffix: str = "") -> None:
        """Print a command as a shell takes it; ``suffix`` is shell syntax (a redirection, ``&``), unquoted."""
        prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env_note or {}).items())
        self.say(f"   $ {prefix + ' ' if prefix else ''}{shlex.join(display)}{' ' + suffix if suffix else ''}")

    def run(
        self, display: list[str], *, env: dict[str, str] | None = None, expect: tuple[int, ...] = (0,),
        shown: int = SHOWN_LINES, log: str | None = None,
    ) -> subprocess.CompletedProcess:
        """Run a command in the work folder, print it and the head of its output; check its exit code."""
        self.show(display, env)
        proc = subprocess.run(
            self.argv(display), cwd=self.workdir, env=self.env(**(env or {})),
            capture_output=True, text=True, timeout=300,
        )
        output = (proc.stdout + ("\n" + proc.stderr if proc.stderr.strip() else "")).rstrip()
        if log:
            (self.logs / log).write_text(output + "\n")
        lines = output.splitlines()
        for line in lines[:shown]:
            self.say(f"     {line}")
        if len(lines) > shown:
            where = f" (all of it in logs/{log})" if log else ""
            self.say(f"     … {len(lines) - shown} more lines{where}")
        if proc.returncode not in expect:
            last = lines[-1].strip() if lines else ""
            self._failed_commands.append(
                f"`{shlex.join(display)}` exited {proc.returncode}" + (f": {last}" if last else "")
            )
            self.say(f"     (exit code {proc.returncode}, expected {' or '.join(map(str, expect))})")
        return proc

    def start(self, name: str, display: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start a long-running process (relay, service) in the background, its output to logs/NAME.log."""
        self.show(display, env, suffix=f"> logs/{name}.log 2>&1 &")
        handle = open(self.logs / f"{name}.log", "w")
        proc = subprocess.Popen(
            self.argv(display), cwd=self.workdir, env=self.env(**(env or {})),
            stdout=handle, stderr=subprocess.STDOUT,
        )
        self._background.append((name, proc))
        return proc

    def stop_all(self) -> dict[str, int | None]:
        """SIGTERM every background process and wait for it; return the exit codes."""
        codes: dict[str, int | None] = {}
        for name, proc in self._background:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in self._background:
            try:
                codes[name] = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = None
        self._background.clear()
        return codes

    def wait_for(self, condition: Callable[[], bool], seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if condition():
                return True
            if any(proc.poll() is not None for _, proc in self._background):
                return condition()
            time.sleep(0.2)
        return condition()

    # -- the journey ----------------------------------------------------------------------

    def run_all(self) -> int:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        self.say(f"strangler walkthrough: the legacy shop, strangled step by step, in {self.workdir}")
        self.say(f"router: {self.router}")
        try:
            self.copy_and_exercise()
            self.scan()
            self.rewrite()
            self.migrate()
            self.keys_and_policy()
            self.start_relay_and_service()
            self.strangle_and_compare()
        except WalkthroughError as exc:
            self.stopped = "; ".join([f"stopped at step {self.step_no}: {exc}", *self._failed_commands])
            self._failed_commands = []
            self.say(f"   ✗ the walkthrough {self.stopped}")
        finally:
            self.stop_all()
        return self.summary()

    def copy_and_exercise(self) -> None:
        self.step("The legacy shop, as it is", "Copy it, run its tests, and record the e-mails checkout sends inline.")
        source = Path(sample_monolith.__file__).resolve().parent
        target = self.workdir / "sample_monolith"
        self.show(["cp", "-r", str(source), "sample_monolith"])
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        # The extracted service is not part of the monolith: it runs from strangler's own copy.
        self.show(["rm", "-rf", "sample_monolith/services"])
        shutil.rmtree(target / "services", ignore_errors=True)
        tests = self.run(["python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "sample_monolith/tests"],
                         shown=3, log="tests-before.log")
        self.check("the shop's own tests pass", tests.returncode == 0)
        self.run(["alembic", "-c", "sample_monolith/alembic.ini", "-x", "db=sqlite:///legacy.db", "upgrade", "heads"])
        sim = self.run(
            ["python", "-m", "sample_monolith.shop.simulate", "--orders", str(self.orders),
             "--db", "sqlite:///legacy.db", "--mail-spool", "mail/inline.jsonl"], shown=0, log="simulate-before.log",
        )
        self.inline_mail = read_jsonl(self.workdir / "mail" / "inline.jsonl")
        self.check(f"{self.orders} orders placed, {len(self.inline_mail)} confirmations sent inline",
                   sim.returncode == 0 and len(self.inline_mail) == self.orders)

    def scan(self) -> None:
        self.step("Find the state changes", "Read-only: every write the shop makes, by module and aggregate.")
        self.write_config()
        proc = self.run(["strangler", "scan", "sample_monolith/shop"], shown=40, log="scan.log",
                        expect=(0, 1))
        report = self.run(["strangler", "scan", "sample_monolith/shop", "--format", "json"], shown=0,
                          log="scan.json", expect=(0, 1))
        try:
            found = json.loads(report.stdout)
        except ValueError:
            raise WalkthroughError("scan --format json did not print JSON") from None
        sites = found.get("sites", found) if isinstance(found, dict) else found
        self.check(f"scan found {len(sites)} state changes", proc.returncode in (0, 1) and len(sites) > 0)

    def write_config(self) -> None:
        config = self.workdir / "strangler.toml"
        config.write_text(
            "# strangler.toml of the walkthrough's shop\n"
            'source = "/shop"\n'
            'db = "sqlite:///shop.db"\n'
            f'router = "{self.router}"\n\n'
            "[codemods]\n"
            'event_prefix = "shop"\n'
            'exclude = ["*/migrations/*"]\n\n'
            "[crypto]\n"
            'encrypt_at = "emit"\n'
            'keys_dir = "keys"\n'
            'policy = "strangler-policy.toml"\n'
        )
        self.say("   (wrote strangler.toml: source /shop, event prefix shop, keys in keys/)")

    def rewrite(self) -> None:
        self.step("Insert emit() where the state changes", "Each event in the same transaction as its change.")
        diff = self.run(["strangler", "rewrite", "sample_monolith/shop", "--diff"], shown=30, log="rewrite.diff",
                        expect=(0, 1))
        self.check("rewrite --diff shows the inserted emit calls", "+" in diff.stdout and "emit(" in diff.stdout)
        self.run(["strangler", "rewrite", "sample_monolith/shop", "--write", "--force"], shown=8,
                 log="rewrite.log", expect=(0, 1))
        again = self.run(["strangler", "rewrite", "sample_monolith/shop", "--diff"], shown=0, expect=(0, 1))
        self.check("a second rewrite changes nothing", "emit(" not in again.stdout)
        tests = self.run(["python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "sample_monolith/tests"],
                         shown=3, log="tests-after.log")
        self.check("the shop's tests still pass after the rewrite", tests.returncode == 0)

    def migrate(self) -> None:
        self.step("Add the outbox to the shop's own migration history",
                  "One more version location in alembic.ini, then the shop's usual upgrade.")
        ini = self.workdir / "sample_monolith" / "alembic.ini"
        text = ini.read_text()
        if "outbox:migrations/versions" not in text:
            text = text.replace(
                "version_locations = %(here)s/shop/migrations/versions",
                "version_locations = %(here)s/shop/migrations/versions outbox:migrations/versions",
            )
            ini.write_text(text)
        self.say("   (sample_monolith/alembic.ini: version_locations += outbox:migrations/versions)")
        self.run(["strangler", "outbox", "migrate", "--alembic-ini", "sample_monolith/alembic.ini",
                  "--db", "sqlite:///shop.db"])
        self.run(["alembic", "-c", "sample_monolith/alembic.ini", "-x", "db=sqlite:///shop.db", "upgrade", "heads"])
        heads = self.run(["alembic", "-c", "sample_monolith/alembic.ini", "-x", "db=sqlite:///shop.db", "current"])
        from outbox.migrate import head_revision

        self.check("shop.db is at both heads: the shop's and strangler_outbox",
                   f"{head_revision()} (head)" in heads.stdout)

    def keys_and_policy(self) -> None:
        self.step("Keys and the access policy", "Only the notifications service may read order events.")
        for args in (["--producer", "shop"], ["notifications"], ["crm"]):
            self.run(["strangler", "keys", "new", *args], shown=2)
        readers = {"shop.order.*": ["notifications"], "shop.*": ["crm"]}
        policy = policy_text(readers, "shop")
        (self.workdir / "strangler-policy.toml").write_text(policy)
        self.say("   wrote strangler-policy.toml:")
        for line in policy.splitlines():
            self.say(f"     {line}")
        self.run(["strangler", "keys", "list"], shown=8)
        private = self.workdir / "keys" / "notifications-1.private.jwk"
        self.check("the service's private key is mode 0600",
                   private.exists() and (private.stat().st_mode & 0o777) == 0o600)

    def start_relay_and_service(self) -> None:
        self.step("Start the relay and the notifications service", "Two processes beside the monolith.")
        self.start("relay", ["strangler", "relay", "--db", "sqlite:///shop.db", "--router", self.router])
        self.start("notifications", [
            "python", "-m", "sample_monolith.services.notifications", "--db", "sqlite:///notifications.db",
            "--router", self.router, "--keys-dir", "keys", "--policy", "strangler-policy.toml",
            "--spool", "mail/notifications.jsonl",
        ])
        time.sleep(1.0)
        alive = all(proc.poll() is None for _, proc in self._background)
        self.check("relay and notifications service are running", alive,
                   "" if alive else "see logs/relay.log and logs/notifications.log")
        if not alive:
            raise WalkthroughError("a background process exited at start")

    def strangle_and_compare(self) -> None:
        self.step("Strangle the inline e-mail", "Checkout stops sending it; the service sends it from the events.")
        sim = self.run(
            ["python", "-m", "sample_monolith.shop.simulate", "--orders", str(self.orders), "--db", "sqlite:///shop.db",
             "--mail-spool", "mail/monolith-after.jsonl", "--no-inline-email"],
            shown=0, log="simulate-after.log",  # emit seals per strangler.toml's [crypto]
        )
        self.check("the shop placed the same orders with inline e-mail off", sim.returncode == 0)
        self.check("the shop itself sent no e-mail", not read_jsonl(self.workdir / "mail" / "monolith-after.jsonl"))
        spool = self.workdir / "mail" / "notifications.jsonl"
        self.wait_for(lambda: len(read_jsonl(spool)) >= len(self.inline_mail), 60)
        self.run(["strangler", "outbox", "status", "--db", "sqlite:///shop.db"], shown=4, expect=(0, 1))
        codes = self.stop_all()
        self.check("relay and service stop cleanly on SIGTERM (exit 0)", all(c == 0 for c in codes.values()),
                   ", ".join(f"{n} {c}" for n, c in codes.items()))

        self.step("Parity and privacy", "What the service sent against what the monolith sent; no plaintext anywhere.")
        sent = read_jsonl(spool)
        key = lambda m: json.dumps(m, sort_keys=True)  # noqa: E731
        self.check(f"the service sent the same {len(self.inline_mail)} e-mails the monolith sent inline",
                   sorted(map(key, sent)) == sorted(map(key, self.inline_mail)),
                   f"{len(sent)} sent")
        self.check("no e-mail sent twice", len(set(map(key, sent))) == len(sent))
        addresses = sorted({m["to"] for m in self.inline_mail})
        leaks = self.plaintext_leaks(addresses)
        self.check("no customer e-mail address in plaintext in the outbox table, the router or the logs",
                   not leaks, "; ".join(leaks))

    def plaintext_leaks(self, needles: list[str]) -> list[str]:
        found = []
        conn = sqlite3.connect(self.workdir / "shop.db")
        try:
            for (payload,) in conn.execute("SELECT payload FROM strangler_outbox"):
                blob = bytes(payload or b"")
                if any(n.encode() in blob for n in needles):
                    found.append("outbox table")
                    break
            count = conn.execute("SELECT count(*) FROM strangler_outbox").fetchone()[0]
        finally:
            conn.close()
        if not count:
            found.append("the outbox is empty: nothing was emitted")
        places = self.router_files() + sorted(self.logs.glob("relay*.log"))
        for path in places:
            data = path.read_bytes()
            if any(n.encode() in data for n in needles):
                found.append(str(path.relative_to(self.workdir)))
        return found

    def router_files(self) -> list[Path]:
        if not self.router.startswith("file://"):
            return []
        from outbox.routers.file import folder_of

        folder = folder_of(self.router)
        folder = folder if folder.is_absolute() else self.workdir / folder
        return sorted(folder.glob("*.jsonl"))

    def summary(self) -> int:
        if self._failed_commands:  # a command after the last check (not so in this journey): one more check
            self.check("every command exited as expected", False)
        failed = [c for c in self.checks if not c.ok]
        total = max(EXPECTED_CHECKS, len(self.checks))
        self.say()
        self.say("── Summary")
        self.say(f"   {len(self.checks) - len(failed)} of {total} checks held.")
        if self.stopped:
            self.say(f"   The walkthrough {self.stopped} ({total - len(self.checks)} checks not made).")
        self.say(f"   work folder: {self.workdir}")
        for name, what in (
            ("sample_monolith/", "the shop, rewritten (rewrite.diff in logs/ shows how)"),
            ("shop.db", "the shop's database with its outbox"),
            ("strangler.toml, strangler-policy.toml, keys/", "configuration, policy and keys"),
            ("mail/inline.jsonl, mail/notifications.jsonl", "e-mails before and after"),
            ("notifications.db", "the service's own database with its inbox"),
            ("logs/", "every command's full output"),
        ):
            self.say(f"   {name:48s} {what}")
        if failed or self.stopped:
            self.say("   Failed: " + "; ".join([c.what for c in failed] + ([self.stopped] if self.stopped else [])))
            return 1
        self.say("   The order e-mail now lives in its own service. Next: docs/walkthrough.md, 'Where to go next'.")
        return 0


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_walkthrough(workdir: str | None, router: str, out: TextIO, *, keep: bool) -> int:
    """Run the walkthrough; a temporary work folder (no ``workdir``) is removed afterwards unless ``keep``."""
    temporary = workdir is None
    folder = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="strangler-walkthrough-"))
    try:
        return Walkthrough(folder, router, out).run_all()
    finally:
        if temporary and not keep:
            shutil.rmtree(folder, ignore_errors=True)
            print("   (the temporary work folder is removed; --keep or --workdir DIR keeps it)", file=out)
