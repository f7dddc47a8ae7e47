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
