"""Figures collected by the benchmarks and written to bench-results.json."""

from __future__ import annotations

import json
import statistics
from pathlib import Path


class Results:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.figures: dict[str, dict[str, float | str]] = {}

    def add(self, name: str, value: float, unit: str, goal: str | None = None) -> None:
        self.figures[name] = {"value": round(float(value), 3), "unit": unit}
        note = f"   (goal {goal})" if goal else ""
        print(f"{name:45s} {value:14.3f} {unit}{note}", flush=True)

    def missing(self, name: str, why: str) -> None:
        """A figure that could not be measured: said, never silently dropped."""
        self.figures[name] = {"value": "missing", "unit": why}
        print(f"{name:45s} {'MISSING':>14s} ({why})", flush=True)

    def write(self) -> None:
        self.path.write_text(json.dumps(self.figures, indent=2) + "\n", encoding="utf-8")


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[int(pct * 10) - 1]
