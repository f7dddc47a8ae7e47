"""Registry CSV: all-or-nothing import with precise errors, export round trip, history."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from collector.demo_data import SHIPPED, generate
from collector.intake.store import Store
from collector.models import Centre, Employee, Event
from collector.registry import (
    COLUMNS,
    RegistryImportError,
    count_rows,
    export_registry,
    import_registry,
)
from tests.collector.helpers import DEV, T0, event, msg

ROOT = Path(__file__).resolve().parents[2]


def test_demo_registry_shape(sessions: sessionmaker[Session]) -> None:
    with sessions() as s:
        counts = count_rows(s)
        assert counts["centres"] == 18 and counts["services"] == 4
        marz = s.scalar(select(func.count()).select_from(Centre).where(Centre.marz != "AM-ER"))
        assert marz == 13
        per_centre = (
            s.execute(select(func.count()).select_from(Employee).group_by(Employee.centre_id))
            .scalars()
            .all()
        )
        assert all(4 <= n <= 12 for n in per_centre)
        gyumri = s.scalars(select(Centre).where(Centre.code == "SH-GYUMRI1")).one()
        assert gyumri.name_hy == "Տարածքային կենտրոն «Գյումրի 1»"


def test_shipped_demo_files_are_current(tmp_path: Path) -> None:
    from collector.demo_data import write

    write(tmp_path)
    for name in COLUMNS:
        assert (tmp_path / f"{name}.csv").read_text("utf-8") == (SHIPPED / f"{name}.csv").read_text(
            "utf-8"
        ), name
    assert generate() == generate()


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"centres": "code,name_hy\nX,Y\n"}, "centres.csv line 1, column name_en: required column"),
        (
            {"centres": "code,name_hy,name_en,marz,community\nC1,Ա,A,AM-XX,Ա\n"},
            "centres.csv line 2, column marz: 'AM-XX' is not an ISO 3166-2:AM code",
        ),
        (
            {"employees": "code,centre,name\nE1,NOPE,Ա\n"},
            "employees.csv line 2, column centre: no centre 'NOPE'",
        ),
        (
            {"badges": "badge,employee,valid_from\nB1,SH-GYUMRI1-E01,yesterday\n"},
            "badges.csv line 2, column valid_from: 'yesterday'",
        ),
        ({"devices": "device,scale\nam-x-d01,7\n"}, "devices.csv line 2, column scale"),
        ({"devices": "device\nBad Id\n"}, "devices.csv line 2, column device"),
        (
            {"assignments": "device,centre,desk,valid_from\nam-none,SH-GYUMRI1,1,2026-01-01\n"},
            "assignments.csv line 2, column device: no device 'am-none'",
        ),
        (
            {"assignments": f"device,centre,desk,valid_from\n{DEV},SH-GYUMRI1,1,2026-03-01\n"},
            "periods overlap",
        ),
        (
            {"services": "code,name_hy,name_en,colour\nS,Ա,A,red\n"},
            "services.csv line 1, column colour: unknown column",
        ),
        (
            {"services": "code,name_hy,name_en\nS,,A\n"},
            "services.csv line 2, column name_hy: value is required",
        ),
        ({"people": "a\n"}, "people.csv line 0: unknown file"),
    ],
)
def test_import_errors_name_file_line_column_and_change_nothing(
    sessions: sessionmaker[Session], files: dict[str, str], expected: str
) -> None:
    good = {"services": "code,name_hy,name_en\nNEW,Նոր,New\n"}
    with sessions() as s, pytest.raises(RegistryImportError) as info, s.begin():
        import_registry(s, {**good, **files})
    assert expected in str(info.value)
    with sessions() as s:
        assert count_rows(s)["services"] == 4  # the good file was not applied either


def test_export_import_round_trip_is_stable(sessions: sessionmaker[Session]) -> None:
    with sessions() as s:
        first = export_registry(s)
    with sessions() as s, s.begin():
        import_registry(s, first)
    with sessions() as s:
        assert export_registry(s) == first
    assert "Բժշկասոցիալական փորձաքննություն" in first["services"]


def test_reassignment_does_not_rewrite_history(
    store: Store, sessions: sessionmaker[Session]
) -> None:
    store.process([msg(event(1))])
    moved = (T0 + timedelta(days=1)).isoformat()
    with sessions() as s, s.begin():
        import_registry(
            s,
            {
                "assignments": (
                    "device,centre,desk,default_employee,service,valid_from,valid_to\n"
                    f"{DEV},SH-GYUMRI1,03,SH-GYUMRI1-E03,SOC_ASSISTANCE,2026-01-01,{moved}\n"
                    f"{DEV},ER-AVAN,07,,EMPLOYMENT,{moved},\n"
                )
            },
        )
    store.process([msg(event(2, at=T0 + timedelta(days=2)))])
    store.process([msg(event(3))])  # late event from before the move
    with sessions() as s:
        rows = s.execute(
            select(Event.seq, Centre.code)
            .join(Centre, Centre.id == Event.centre_id)
            .order_by(Event.seq)
        ).all()
        assert [tuple(r) for r in rows] == [(1, "SH-GYUMRI1"), (2, "ER-AVAN"), (3, "SH-GYUMRI1")]


def test_cli_migrate_import_token_and_quarantine(tmp_path: Path) -> None:
    env = {"GNAHAT_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}", "PATH": "/usr/bin:/bin"}
    exe = [sys.executable, "-m", "collector.cli"]

    def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([*exe, *args], env=env, cwd=ROOT, capture_output=True, text=True)
        assert (r.returncode == 0) == ok, r.stderr
        return r

    run("migrate")
    assert '"centres": 18' in run("registry", "import", "--demo").stdout
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "centres.csv").write_text("code,name_hy,name_en,marz,community\nC,Ա,A,AM-ZZ,Ա\n")
    r = run("registry", "import", str(bad), ok=False)
    assert "centres.csv line 2, column marz" in r.stderr
    tok = run("token", "create", "--role", "analyst", "--name", "M&E").stdout.strip()
    assert tok.startswith("gnh_")
    listing = run("token", "list").stdout
    assert "analyst" in listing and tok not in listing
    run("token", "revoke", "1")
    assert "revoked" in run("token", "list").stdout
    assert run("quarantine", "list").stdout == ""
    assert run("quarantine", "replay").stdout.strip() == "{}"
    run("registry", "export", str(tmp_path / "out"))
    assert (tmp_path / "out" / "centres.csv").read_text("utf-8").count("\n") == 19


def test_migrations_match_the_models(database_url: str) -> None:
    """Alembic's autogenerate finds nothing to add: models and migrations agree."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from collector.db import make_engine, migrate
    from collector.models import Base

    migrate(database_url)
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    assert diff == []


@pytest.mark.parametrize("model", ["centres", "employees", "services"])
def test_the_registry_refuses_to_lose_a_row(
    store: Store, sessions: sessionmaker[Session], model: str
) -> None:
    """Events name registry rows by id without foreign keys: no registry row may go."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    store.process([msg(event(1))])
    with sessions() as s:
        before = s.scalar(text(f"SELECT count(*) FROM {model}"))
    assert before
    with (
        pytest.raises(DBAPIError, match="the registry keeps every row"),
        sessions() as s,
        s.begin(),
    ):
        s.execute(text(f"DELETE FROM {model}"))
    with sessions() as s:
        assert s.scalar(text(f"SELECT count(*) FROM {model}")) == before
        ev = s.scalars(select(Event)).one()
        assert s.get(Centre, ev.centre_id) is not None
        assert s.get(Employee, ev.employee_id) is not None
