"""Aggregate cells: each new rating added to its day's and month's cell, and to its
centre's hour, as it is stored."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from collector.intake.aggregates import COUNTERS, factor_levels
from collector.intake.aggregates import lock as lock_aggregates
from collector.intake.store.driver import Driver
from collector.models import (
    EXCLUDED_FROM_SCORES,
    ChannelAggregate,
    DailyAggregate,
    FactorAggregate,
    HourlyCount,
    MonthlyAggregate,
)


class AggregateWriter:
    """The aggregate cells of a batch (a part of :class:`collector.intake.store.Store`)."""

    clock: Callable[[], datetime]

    def _lock_aggregates(self, session: Session) -> None:
        lock_aggregates(session)

    @staticmethod
    def agg_key(row: dict[str, Any]) -> tuple[Any, int, int, int]:
        return (row["day"], row["centre_id"], row["employee_id"] or 0, row["service_id"] or 0)

    def _add_to_aggregates(
        self, session: Session, ratings: list[dict[str, Any]], flagged: list[Any]
    ) -> None:
        """Add new ratings to their day's cells; move newly flagged old ones out of scores.

        Increments are atomic upserts, so the cells stay exact with several writers;
        ``collector.intake.aggregates.rebuild`` rebuilds the same numbers from events.
        """
        new_ids = {r["id"] for r in ratings}
        flagged_ids = {f.id for f in flagged}
        deltas: dict[tuple[Any, ...], list[int]] = {}
        hours: dict[tuple[int, Any, int], int] = {}  # (centre, day, UTC hour) -> counted

        def count_hour(centre_id: int, day: Any, pressed_at: datetime, by: int) -> None:
            key = (centre_id, day, pressed_at.astimezone(UTC).hour)
            hours[key] = hours.get(key, 0) + by

        def bump(key: tuple[Any, ...], score: int, counted: int, excluded: int) -> None:
            d = deltas.setdefault(key, [0] * 7)  # n1..n5, n, excluded
            d[score - 1] += counted
            d[5] += counted
            d[6] += excluded

        channels: dict[tuple[Any, ...], list[int]] = {}

        def bump_channel(key: tuple[Any, ...], score: int, counted: int, excluded: int) -> None:
            d = channels.setdefault(key, [0] * 7)
            d[score - 1] += counted
            d[5] += counted
            d[6] += excluded

        for r in ratings:
            key = (*self.agg_key(r), r["scale"])
            ch_key = (r["day"], r["centre_id"], r["service_id"] or 0, r["channel"], r["scale"])
            if r["id"] in flagged_ids or r["flags"] & EXCLUDED_FROM_SCORES:
                bump(key, r["score"], 0, 1)
                bump_channel(ch_key, r["score"], 0, 1)
            else:
                bump(key, r["score"], 1, 0)
                bump_channel(ch_key, r["score"], 1, 0)
                count_hour(r["centre_id"], r["day"], r["pressed_at"], 1)
        for f in flagged:
            if f.id not in new_ids and not f.flags & EXCLUDED_FROM_SCORES:
                # Counted by an earlier batch: take it out of the scores.
                key = (f.day, f.centre_id, f.employee_id or 0, f.service_id or 0, f.scale)
                bump(key, f.score, -1, 1)
                bump_channel(
                    (f.day, f.centre_id, f.service_id or 0, f.channel, f.scale), f.score, -1, 1
                )
                count_hour(f.centre_id, f.day, f.pressed_at, -1)
        if not deltas:
            return
        now = self.clock()
        counters = COUNTERS
        params = [
            {
                "day": k[0],
                "centre_id": k[1],
                "employee_id": k[2],
                "service_id": k[3],
                "scale": k[4],
                **dict(zip(counters, d, strict=True)),
                "changed_at": now,
            }
            for k, d in sorted(deltas.items())
        ]
        Driver(session.connection(), DailyAggregate.__table__).upsert_many(
            ("day", "centre_id", "employee_id", "service_id", "scale", *counters, "changed_at"),
            params,
            "day, centre_id, employee_id, service_id, scale",
            ", ".join(f"{c} = daily_aggregates.{c} + excluded.{c}" for c in counters)
            + ", changed_at = excluded.changed_at",
        )
        Driver(session.connection(), ChannelAggregate.__table__).upsert_many(
            ("day", "centre_id", "service_id", "channel", "scale", *counters, "changed_at"),
            [
                {
                    "day": k[0],
                    "centre_id": k[1],
                    "service_id": k[2],
                    "channel": k[3],
                    "scale": k[4],
                    **dict(zip(counters, d, strict=True)),
                    "changed_at": now,
                }
                for k, d in sorted(channels.items())
            ],
            "day, centre_id, service_id, channel, scale",
            ", ".join(f"{c} = channel_aggregates.{c} + excluded.{c}" for c in counters)
            + ", changed_at = excluded.changed_at",
        )
        months: dict[tuple[Any, ...], list[int]] = {}
        for k, d in deltas.items():
            m = months.setdefault((k[0].replace(day=1), *k[1:]), [0] * 7)
            for i, v in enumerate(d):
                m[i] += v
        Driver(session.connection(), MonthlyAggregate.__table__).upsert_many(
            ("month", "centre_id", "employee_id", "service_id", "scale", *counters, "changed_at"),
            [
                {
                    "month": k[0],
                    "centre_id": k[1],
                    "employee_id": k[2],
                    "service_id": k[3],
                    "scale": k[4],
                    **dict(zip(counters, d, strict=True)),
                    "changed_at": now,
                }
                for k, d in sorted(months.items())
            ],
            "month, centre_id, employee_id, service_id, scale",
            ", ".join(f"{c} = monthly_aggregates.{c} + excluded.{c}" for c in counters)
            + ", changed_at = excluded.changed_at",
        )
        if hours:
            Driver(session.connection(), HourlyCount.__table__).upsert_many(
                ("centre_id", "day", "utc_hour", "n"),
                [
                    {"centre_id": c, "day": d, "utc_hour": h, "n": n}
                    for (c, d, h), n in sorted(hours.items())
                ],
                "centre_id, day, utc_hour",
                "n = hourly_counts.n + excluded.n",
            )

    def _add_factors(self, session: Session, rows: list[dict[str, Any]]) -> None:
        """Count each answered factor of new ``factors`` events in its cell (excluded
        when the event is left out of scores)."""
        cells: dict[tuple[Any, ...], list[int]] = {}
        for r in rows:
            if r["centre_id"] is None:
                continue
            left_out = bool(r["flags"] & EXCLUDED_FROM_SCORES)
            base = (r["day"], r["centre_id"], r["service_id"] or 0, r["channel"])
            for factor, scale, level in factor_levels(r["answers"] or {}, r["scale"]):
                c = cells.setdefault((*base, factor, scale, level), [0, 0])
                c[1 if left_out else 0] += 1
        if not cells:
            return
        now = self.clock()
        Driver(session.connection(), FactorAggregate.__table__).upsert_many(
            ("day", "centre_id", "service_id", "channel", "factor", "scale", "level", "n",
             "excluded", "changed_at"),
            [
                {"day": k[0], "centre_id": k[1], "service_id": k[2], "channel": k[3],
                 "factor": k[4], "scale": k[5], "level": k[6], "n": v[0], "excluded": v[1],
                 "changed_at": now}
                for k, v in sorted(cells.items())
            ],
            "day, centre_id, service_id, channel, factor, scale, level",
            "n = factor_aggregates.n + excluded.n, "
            "excluded = factor_aggregates.excluded + excluded.excluded, "
            "changed_at = excluded.changed_at",
        )  # fmt: skip
