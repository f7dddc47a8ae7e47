"""The registry: centres, services, employees and their badges, units and their
assignments to desks; and the key-value meta table."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Float,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from collector.models.base import Base, UTCDateTime

# ---------------------------------------------------------------- registry


class Centre(Base):
    __tablename__ = "centres"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name_hy: Mapped[str] = mapped_column(String(200))
    name_en: Mapped[str] = mapped_column(String(200))
    marz: Mapped[str] = mapped_column(String(8))
    community: Mapped[str] = mapped_column(String(200))
    address: Mapped[str] = mapped_column(String(300), default="")
    latitude: Mapped[float | None] = mapped_column(Float, nullable=True)
    longitude: Mapped[float | None] = mapped_column(Float, nullable=True)
    hours: Mapped[str | None] = mapped_column(String(200), nullable=True)
    """Opening hours (:mod:`collector.hours`); empty: the usual office hours."""


class Service(Base):
    __tablename__ = "services"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name_hy: Mapped[str] = mapped_column(String(200))
    name_en: Mapped[str] = mapped_column(String(200))


class Employee(Base):
    __tablename__ = "employees"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    centre_id: Mapped[int] = mapped_column(ForeignKey("centres.id"))
    name: Mapped[str] = mapped_column(String(200))
    position: Mapped[str] = mapped_column(String(200), default="")


class Badge(Base):
    __tablename__ = "badges"
    __table_args__ = (UniqueConstraint("badge", "valid_from"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    badge: Mapped[str] = mapped_column(String(32), index=True)
    employee_id: Mapped[int] = mapped_column(ForeignKey("employees.id"))
    valid_from: Mapped[datetime] = mapped_column(UTCDateTime())
    valid_to: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Device(Base):
    __tablename__ = "devices"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), default="buttons")
    scale: Mapped[int] = mapped_column(Integer, default=4)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Assignment(Base):
    """Where a unit stands over time: centre, desk, default employee and service."""

    __tablename__ = "assignments"
    __table_args__ = (UniqueConstraint("device_id", "valid_from"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), index=True)
    centre_id: Mapped[int] = mapped_column(ForeignKey("centres.id"))
    desk: Mapped[str] = mapped_column(String(32))
    default_employee_id: Mapped[int | None] = mapped_column(
        ForeignKey("employees.id"), nullable=True
    )
    service_id: Mapped[int | None] = mapped_column(ForeignKey("services.id"), nullable=True)
    valid_from: Mapped[datetime] = mapped_column(UTCDateTime())
    valid_to: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Meta(Base):
    """Small key/value facts, e.g. ``registry_version`` (bumped by every registry edit)."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(200))
