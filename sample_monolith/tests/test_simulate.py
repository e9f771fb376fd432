import json
from pathlib import Path

from sample_monolith.shop import simulate
from sample_monolith.shop.mailer import read_spool

from .conftest import make_app


def test_sample_orders_are_placed_paid_and_cancelled(app, client):
    report = simulate.place_sample_orders(app, 4)

    assert len(report["customers"]) == 4 and len(report["orders"]) == 4
    statuses = [client.get(f"/orders/{o['id']}").get_json()["status"] for o in report["orders"]]
    assert statuses == ["paid", "cancelled", "placed", "placed"]
    assert report["paid"] == [report["orders"][0]["id"]]
    assert report["cancelled"] == [report["orders"][1]["id"]]
    mails = read_spool(app.config["MAIL_SPOOL"])
    assert [(m["to"], m["order_id"]) for m in mails] == [
        (o["email"], o["id"]) for o in report["orders"]
    ]


def test_simulation_is_deterministic_and_repeatable(tmp_path, app):
    first = simulate.place_sample_orders(app, 3)
    other = simulate.place_sample_orders(make_app(tmp_path / "other"), 3)
    again = simulate.place_sample_orders(app, 3)

    assert first["orders"] == other["orders"]
    assert again["customers"] == first["customers"]
    totals = [o["total_cents"] for o in first["orders"]]
    assert [o["total_cents"] for o in again["orders"]] == totals
    assert len(read_spool(app.config["MAIL_SPOOL"])) == 6


def test_no_mail_when_inline_email_is_off(tmp_path):
    app = make_app(tmp_path, INLINE_EMAIL=False)
    report = simulate.place_sample_orders(app, 2)
    assert report["inline_email"] is False
    assert read_spool(app.config["MAIL_SPOOL"]) == []


def test_command_line(tmp_path, capsys):
    spool = tmp_path / "mail.jsonl"
    argv = ["--orders", "2", "--db", f"sqlite:///{tmp_path / 'cli.db'}", "--mail-spool", str(spool),
            "--instance", str(tmp_path / "instance"), "--create-schema"]

    assert simulate.main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["orders"]) == 2 and report["inline_email"] is True
    assert len(read_spool(str(spool))) == 2

    assert simulate.main(argv[:-1] + ["--no-inline-email"]) == 0
    assert json.loads(capsys.readouterr().out)["inline_email"] is False
    assert len(read_spool(str(spool))) == 2


def test_an_empty_database_is_one_line_naming_the_migration(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(Path(simulate.__file__).resolve().parents[2])  # where sample_monolith/ is
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    argv = ["--orders", "2", "--db", url, "--mail-spool", str(tmp_path / "mail.jsonl"),
            "--instance", str(tmp_path / "instance")]

    assert simulate.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.splitlines()) == 1, captured.err
    assert f"no table customers in {url} (and 7 more of the shop's tables)" in captured.err
    assert f"alembic -c sample_monolith/alembic.ini -x db={url} upgrade heads" in captured.err
    assert "Traceback" not in captured.err and "<html" not in captured.err
    assert not (tmp_path / "mail.jsonl").exists()


def test_a_database_behind_the_models_names_the_missing_tables(tmp_path, capsys):
    from sqlalchemy import create_engine, text

    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE products (id INTEGER PRIMARY KEY)"))
    engine.dispose()
    argv = ["--db", f"sqlite:///{tmp_path / 'old.db'}", "--instance", str(tmp_path / "instance")]

    assert simulate.main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "no table customers in " in err and "(and 6 more" in err and "upgrade heads" in err
