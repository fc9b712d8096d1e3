"""Tables of the history. Times are stored as naive UTC. Secrets are never stored."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Statuses beside a verdict (pass, fail, error): a drill or a result under way, and one whose
# process ended without finishing it (killed, the machine restarted).
RUNNING, ABANDONED = "running", "abandoned"


class Base(DeclarativeBase):
    pass


class Drill(Base):
    """One invocation of check or drill."""

    __tablename__ = "drills"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(String(64), unique=True)
    trigger: Mapped[str] = mapped_column(String(16))
    host: Mapped[str] = mapped_column(String(255))
    tool_version: Mapped[str] = mapped_column(String(32))
    docker_version: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    # The process that ran it (schema 0002): a "running" drill whose process has ended on this
    # host is abandoned. Start time in clock ticks since boot, and the boot, tell a reused pid.
    pid: Mapped[int | None] = mapped_column(Integer)
    boot_id: Mapped[str | None] = mapped_column(String(64))
    process_start_ticks: Mapped[int | None] = mapped_column(BigInteger)
    results: Mapped[list[Result]] = relationship(
        back_populates="drill", cascade="all, delete-orphan"
    )


class Result(Base):
    """One scenario's outcome within a drill."""

    __tablename__ = "results"
    __table_args__ = (Index("ix_results_scenario_started", "scenario", "started_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    drill_id: Mapped[int] = mapped_column(ForeignKey("drills.id"), index=True)
    scenario: Mapped[str] = mapped_column(String(255), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    scenario_path: Mapped[str] = mapped_column(Text)
    scenario_sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    cause: Mapped[str] = mapped_column(String(32), default="")
    started_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    snapshot_id: Mapped[str | None] = mapped_column(String(128))
    snapshot_time: Mapped[datetime | None] = mapped_column(DateTime)
    source_version: Mapped[str | None] = mapped_column(String(64))
    files: Mapped[int | None] = mapped_column(BigInteger)
    bytes: Mapped[int | None] = mapped_column(BigInteger)
    rto_seconds: Mapped[float | None] = mapped_column(Float)
    rto_target_seconds: Mapped[float | None] = mapped_column(Float)
    rto_status: Mapped[str] = mapped_column(String(16))
    rpo_seconds: Mapped[float | None] = mapped_column(Float)
    rpo_target_seconds: Mapped[float | None] = mapped_column(Float)
    rpo_status: Mapped[str] = mapped_column(String(16))
    rpo_basis: Mapped[str] = mapped_column(String(32), default="")
    kept: Mapped[str] = mapped_column(Text, default="")
    # Schema 0003: who and how often (from the scenario), and the RTO projection.
    client: Mapped[str] = mapped_column(String(128), default="", index=True)
    owner: Mapped[str] = mapped_column(String(128), default="")
    tags: Mapped[str] = mapped_column(Text, default="")  # ",a,b,": one LIKE finds a tag
    every_seconds: Mapped[float | None] = mapped_column(Float)
    full_bytes: Mapped[int | None] = mapped_column(BigInteger)
    throughput_bytes_per_second: Mapped[float | None] = mapped_column(Float)
    projected_rto_seconds: Mapped[float | None] = mapped_column(Float)
    rto_applies_to: Mapped[str] = mapped_column(String(16), default="restored")
    drill: Mapped[Drill] = relationship(back_populates="results")
    phases: Mapped[list[Phase]] = relationship(
        cascade="all, delete-orphan", order_by="Phase.position"
    )
    checks: Mapped[list[CheckRow]] = relationship(
        cascade="all, delete-orphan", order_by="CheckRow.position"
    )


class Phase(Base):
    __tablename__ = "phases"

    id: Mapped[int] = mapped_column(primary_key=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("results.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(32))
    seconds: Mapped[float] = mapped_column(Float)


class CheckRow(Base):
    __tablename__ = "checks"

    id: Mapped[int] = mapped_column(primary_key=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("results.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    expected: Mapped[str] = mapped_column(Text, default="")
    observed: Mapped[str] = mapped_column(Text, default="")
    detail: Mapped[str] = mapped_column(Text, default="")
    proves_data: Mapped[bool] = mapped_column(Boolean, default=False)
    seconds: Mapped[float | None] = mapped_column(Float)
