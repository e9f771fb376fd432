"""A router URL the CLI echoes in an error never shows the URL's password.

Nothing listens on port 1, so each command fails at once, with the URL in its
message; what reaches the terminal must say ``***`` where the password was.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from toolkit.cli import cli

SECRET = "s3cretpw"

RULES = """
[[rule]]
name = "shop-only"
kind = "source"
type = "shop.*"
sources = ["/shop"]
"""


@pytest.mark.parametrize(
    "args",
    [
        ["events", "tail", "--router", f"redis://:{SECRET}@127.0.0.1:1/0", "--destination", "order"],
        ["events", "tail", "--router", f"redis://:{SECRET}@127.0.0.1:1/0?max_len=10", "--destination", "order"],
        ["events", "trace", "some-id", "--router", f"redis://:{SECRET}@127.0.0.1:1/0"],
        ["events", "trace", "some-id", "--router", f"amqp://guest:{SECRET}@127.0.0.1:1/%2F"],
        ["events", "replay", "--all", "--db", "sqlite:///{tmp}/shop.db",
         "--router", f"mqtt://relay:{SECRET}@127.0.0.1:1?bogus=1"],
        ["watch", "--router", f"nats://relay:{SECRET}@127.0.0.1:1?bogus=1", "--rules", "{tmp}/rules.toml",
         "--destination", "order", "--once"],
    ],
    ids=["tail", "tail-unknown-option", "trace-redis", "trace-unsupported", "replay", "watch"],
)
def test_a_router_url_in_an_error_shows_stars_for_its_password(args, tmp_path):
    (tmp_path / "rules.toml").write_text(RULES)
    (tmp_path / "shop.db").touch()  # an empty SQLite database: the router is what is wrong
    result = CliRunner().invoke(cli, [arg.format(tmp=tmp_path) for arg in args])
    assert result.exit_code == 2, result.output
    assert SECRET not in result.output
    assert ":***@127.0.0.1:1" in result.output
