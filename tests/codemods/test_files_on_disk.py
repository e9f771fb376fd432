"""What ``rewrite --write`` does to the files themselves, and which files a scan of part of a tree reads.

A rewrite replaces each file whole, through a temporary file: one that cannot
be written is reported and left as it was while the rest of the run goes on;
the owner, the mode and symbolic links survive; a read-only file is not
touched. A scan of one file or one subfolder still knows the package around it.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

import pytest

from .helpers import MODELS, SIGN_UP, invoke, write_tree

#: SIGN_UP with a long docstring: rewritten, it is too big for the file size limit below.
BIG_SIGN_UP = SIGN_UP.replace("def sign_up(name):", 'def sign_up(name):\n    """' + "x" * 6000 + '"""')


def leftovers(folder) -> list[str]:
    """Temporary files a rewrite left behind."""
    return [name for name in os.listdir(folder) if name.endswith(".strangler")]


def test_a_file_that_cannot_be_written_is_reported_and_the_run_goes_on(tmp_path):
    write_tree(tmp_path, {"app/models.py": MODELS, "app/a.py": SIGN_UP, "app/b.py": BIG_SIGN_UP,
                          "app/c.py": SIGN_UP})
    big_before = (tmp_path / "app/b.py").read_text()

    def limit_file_size():  # a full disk, for this process only: writes past 4 KiB fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    result = subprocess.run(
        [sys.executable, "-m", "toolkit", "rewrite", str(tmp_path), "--write", "--jobs", "1"],
        capture_output=True, text=True, preexec_fn=limit_file_size, cwd=os.getcwd(),
    )

    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "b.py:1: cannot write: File too large; the file is as it was" in result.stderr
    assert (tmp_path / "app/b.py").read_text() == big_before
    assert "emit(db.session" in (tmp_path / "app/a.py").read_text()
    assert "emit(db.session" in (tmp_path / "app/c.py").read_text()  # after the failure: the run went on
    assert leftovers(tmp_path / "app") == []


def test_a_read_only_file_is_left_alone_and_named(tmp_path):
    write_tree(tmp_path, {"app/models.py": MODELS, "app/code.py": SIGN_UP})
    code = tmp_path / "app/code.py"
    code.chmod(0o444)

    result = invoke("rewrite", str(tmp_path), "--write")

    assert result.exit_code == 1
    assert "code.py:1: read-only: left as it was; make it writable (chmod u+w) to rewrite it" in result.stderr
    assert "emit(" not in code.read_text()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root may give a file to another user")
def test_the_rewritten_file_keeps_its_owner_group_and_mode(tmp_path):
    write_tree(tmp_path, {"app/models.py": MODELS, "app/code.py": SIGN_UP})
    code = tmp_path / "app/code.py"
    os.chown(code, 65534, 65534)
    code.chmod(0o640)

    assert invoke("rewrite", str(tmp_path), "--write").exit_code == 0

    after = code.stat()
    assert "emit(db.session" in code.read_text()
    assert (after.st_uid, after.st_gid, after.st_mode & 0o777) == (65534, 65534, 0o640)


def test_a_symbolic_link_stays_a_link_and_its_target_is_rewritten_once(tmp_path):
    write_tree(tmp_path, {"app/models.py": MODELS, "app/shared_code.py": SIGN_UP})
    link = tmp_path / "app" / "code.py"
    link.symlink_to("shared_code.py")

    assert invoke("rewrite", str(tmp_path), "--write").exit_code == 0

    assert link.is_symlink()
    assert (tmp_path / "app/shared_code.py").read_text().count("emit(db.session") == 1


def test_a_scan_of_one_file_reads_the_rest_of_its_package_for_names(tmp_path):
    """The session factory and the model live in sibling modules, as in most monoliths."""
    write_tree(tmp_path, {
        "shop/db.py": "from sqlalchemy.orm import sessionmaker\n\nSessionLocal = sessionmaker()\n",
        "shop/models.py": MODELS,
        "shop/views/orders.py": """
            from ..db import SessionLocal
            from ..models import Order


            def place(status):
                with SessionLocal() as s, s.begin():
                    s.add(Order(status=status))
        """,
    })

    alone = json.loads(invoke("scan", str(tmp_path / "shop/views/orders.py"), "--format", "json").stdout)

    [site] = alone["sites"]  # only the file given is reported on: its siblings were read, not scanned
    assert (site["path"], site["kind"], site["event_type"]) == ("orders.py", "session-add", "app.order.created")
    assert site["action"] == "rewrite"


@pytest.mark.parametrize("content, expected", [
    (b"# -*- coding: klingon -*-\nx = 1\n", "code.py:1: bad encoding declaration"),
    (b"x = 1\ny = '\xe9t\xe9'\n", "code.py:2: not valid utf-8"),
])
def test_a_file_in_an_unreadable_encoding_is_skipped_with_its_line_and_what_to_do(tmp_path, content, expected):
    write_tree(tmp_path, {"app/models.py": MODELS, "app/code.py": ""})
    (tmp_path / "app/code.py").write_bytes(content)

    result = invoke("scan", str(tmp_path))

    assert expected in result.output
    assert "# -*- coding:" in result.output and "save the file as" in result.output


def test_a_module_linked_into_the_package_resolves_its_imports_where_the_link_is(tmp_path):
    """Python imports a linked module by the link's place: `from .models import Order` names shop.models."""
    write_tree(tmp_path, {"shop/models.py": MODELS})
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared/orders.py").write_text(
        "from .models import db, Order\n\n\ndef place():\n    db.session.add(Order())\n    db.session.commit()\n"
    )
    (tmp_path / "shop/orders.py").symlink_to("../shared/orders.py")

    doc = json.loads(invoke("scan", str(tmp_path / "shop"), "--format", "json").stdout)

    [site] = [s for s in doc["sites"] if s["path"].endswith("orders.py")]
    assert (site["event_type"], site["action"]) == ("app.order.created", "rewrite")
