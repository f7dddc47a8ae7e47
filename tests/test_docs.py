"""The docs cannot drift: every setting, CLI command, API route, registry column, fault
action and MQTT topic is documented."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def doc(*parts: str) -> str:
    return (ROOT.joinpath(*parts)).read_text(encoding="utf-8")


def all_docs() -> str:
    pages = [*ROOT.glob("docs/*.md"), *ROOT.glob("hardware/*.md"), ROOT / "README.md"]
    return "\n".join(p.read_text(encoding="utf-8") for p in pages)


def test_every_setting_is_in_the_operations_table() -> None:
    from collector.config import Settings

    text = doc("docs", "operations.md")
    for name, field in Settings.model_fields.items():
        row = re.search(rf"^\| `GNAHAT_{name.upper()}` \| `([^`]*)` \| (.+) \|$", text, re.M)
        assert row, f"GNAHAT_{name.upper()} is not documented"
        default = "" if field.default is None else str(field.default)
        assert row.group(1) == default, name


def _commands(parser: argparse.ArgumentParser, prefix: str) -> list[str]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                nested = _commands(sub, f"{prefix} {name}")
                out.extend(nested or [f"{prefix} {name}"])
    return out


@pytest.mark.parametrize(
    ("module", "prog"),
    [
        ("device.cli", "gnahat-device"),
        ("collector.cli", "gnahat-collector"),
        ("provisioning.cli", "gnahat-provision"),
        ("simulator.cli", "gnahat-sim"),
    ],
)
def test_every_cli_command_is_documented(module: str, prog: str) -> None:
    import importlib

    parser = importlib.import_module(module).build_parser()
    text = all_docs()
    for command in _commands(parser, prog):
        words = command.split()
        # "gnahat-collector registry import" may appear as "registry import" in a table.
        assert command in text or " ".join(words[1:]) in text, f"{command} is undocumented"


def test_every_api_route_is_documented() -> None:
    from collector.config import Settings
    from collector.main import create_app

    app = create_app(Settings(database_url="sqlite://"))
    text = doc("docs", "api.md")
    schema = app.openapi()
    paths = set(schema["paths"])
    assert paths
    for path in paths:
        assert f"`{path}`" in text, f"{path} is not in docs/api.md"


def test_every_registry_column_is_documented() -> None:
    from collector.registry import COLUMNS, REQUIRED

    text = doc("docs", "registry.md")
    for name, cols in COLUMNS.items():
        for col in cols:
            need = "yes" if col in REQUIRED[name] else "no"
            assert f"| {name}.csv | `{col}` | {need} |" in text, f"{name}.{col}"


def test_every_fault_action_is_documented() -> None:
    from simulator.scenarios import ACTIONS

    text = doc("docs", "simulator.md")
    for action in ACTIONS:
        assert f"| `{action}` |" in text, action


def test_readme_has_the_two_commands_and_links() -> None:
    text = doc("README.md")
    assert "make demo" in text and "make test" in text
    for link in re.findall(r"\]\(([^)#]+\.md)\)", all_docs()):
        candidates = [ROOT / link, ROOT / "docs" / link, ROOT / "hardware" / link]
        assert any(c.exists() for c in candidates) or link.startswith("../"), link


def test_shipped_systemd_units_run_real_commands() -> None:
    """Every ExecStart/ExecStartPre of the shipped units is a command our CLIs accept."""
    import configparser
    import shlex

    from collector.cli import build_parser as collector_parser
    from device.cli import build_parser as device_parser
    from provisioning.cli import build_parser as provision_parser

    parsers = {
        "gnahat-collector": collector_parser(),
        "gnahat-device": device_parser(),
        "gnahat-provision": provision_parser(),
    }
    units = sorted(ROOT.glob("*/systemd/*.service")) + sorted(ROOT.glob("*/systemd/*.timer"))
    assert any(u.name == "gnahat-retention.timer" for u in units)
    checked = 0
    for unit in units:
        ini = configparser.ConfigParser(strict=False, interpolation=None)
        ini.optionxform = str  # type: ignore[assignment,method-assign]
        ini.read_string(unit.read_text(encoding="utf-8"))
        if unit.suffix == ".timer":
            assert ini["Timer"]["OnCalendar"], unit
            assert (unit.with_suffix(".service")).exists(), f"{unit} has no service"
            continue
        for key in ("ExecStartPre", "ExecStart"):
            cmd = ini["Service"].get(key)
            if not cmd:
                continue
            argv = shlex.split(cmd.replace("%i", "1"))
            prog = Path(argv[0]).name
            if prog in parsers:
                parsers[prog].parse_args(argv[1:])  # exits (fails the test) on a bad command
                checked += 1
    assert checked >= 4


def test_every_quarantine_reason_is_listed_in_the_protocol() -> None:
    """Every reason the code can write into quarantine is in docs/protocol.md's tables."""
    from collector.intake.store import Reason
    from device.protocol import ErrorCode

    text = doc("docs", "protocol.md")
    listed = set(re.findall(r"^\| `([a-z_0-9]+)` \|", text, re.M))
    code = {c.value for c in ErrorCode} | {
        v for k, v in vars(Reason).items() if k.isupper() and isinstance(v, str)
    }
    assert code <= listed, f"undocumented: {sorted(code - listed)}"
