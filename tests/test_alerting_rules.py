"""The Prometheus alerting rules shipped in docs/ parse, are complete, and name only
metrics the collector exports."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from collector.metrics import Metrics

RULES = Path(__file__).resolve().parent.parent / "docs" / "alerting" / "gnahat.rules.yml"


def exported() -> set[str]:
    names = set()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    for metric in Metrics().registry.collect():
        names.add(metric.name)
        names.update(metric.name + s for s in suffixes.get(metric.type, ()))
    return names


def test_the_rules_parse_and_name_exported_metrics() -> None:
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    rules = [r for g in doc["groups"] for r in g["rules"]]
    assert len(rules) >= 8
    names = exported()
    covered = set()
    for r in rules:
        assert set(r) == {"alert", "expr", "for", "labels", "annotations"}, r["alert"]
        assert r["labels"]["severity"] in ("warning", "critical")
        assert r["annotations"]["summary"] and r["annotations"]["description"]
        assert re.fullmatch(r"\d+[smh]", r["for"]), r["for"]
        for metric in re.findall(r"\b(gnahat_[a-z_]+)", r["expr"]):
            assert metric in names, f"{r['alert']}: {metric} is not exported"
            covered.add(metric)
    # The operators' side the issue names: collector down, ingest lag, forwarding backlog.
    assert {"GnahatCollectorDown", "GnahatIngestLag", "GnahatForwardingBacklog"} <= {
        r["alert"] for r in rules
    }
    assert "gnahat_ingest_queue_depth" in covered
