"""What one scenario run produced: checks, phases, objectives and the verdict."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from restore_tests.timing import NOT_CONFIGURED, Objective

PASS, FAIL, ERROR = "pass", "fail", "error"
CHECK_PASSED, CHECK_FAILED, CHECK_ERROR = "passed", "failed", "error"
# Why a result is an error, when it is: environment errors make the whole command exit 3.
CAUSE_ENVIRONMENT, CAUSE_INTERRUPTED = "environment", "interrupted"
# Whatever a check or a result says may come from restored data or a sandboxed program: it is
# bounded here, once, for every runner and every output (terminal, JSON, history).
REASON_LIMIT = 300
FIRST_NAMES = 5  # names shown in a reason before "... (+N more)"
DETAIL_LIMIT = 4096
_ONE_LINE_FIELDS = {"reason": REASON_LIMIT, "expected": REASON_LIMIT, "observed": REASON_LIMIT}


def one_line(text: str, limit: int = REASON_LIMIT) -> str:
    """Text as one line of at most limit characters (control characters made visible)."""
    flat = " ".join(text.split())
    flat = "".join(c if c.isprintable() else "?" for c in flat)
    return flat if len(flat) <= limit else flat[: limit - 3].rstrip() + "..."


def head_and_tail(text: str, limit: int = DETAIL_LIMIT) -> str:
    """At most limit characters: the beginning and the end, and how much was cut between."""
    if len(text) <= limit:
        return text
    half = (limit - 40) // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half:,} characters cut ...]\n{text[-half:]}"


def name_list(names: list[str], limit: int = FIRST_NAMES, total: int | None = None) -> str:
    """'a, b, c' or 'a, b, c, ... (+12 more)'; total when names holds only the first few."""
    shown = ", ".join(names[:limit])
    more = (len(names) if total is None else total) - min(limit, len(names))
    return shown + (f", ... (+{more:,} more)" if more > 0 else "")


class _Bounded:
    """Every assignment of a free-text field is bounded, whoever makes it."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, str):
            if name in _ONE_LINE_FIELDS:
                value = one_line(value, _ONE_LINE_FIELDS[name])
            elif name == "detail":
                value = head_and_tail(value)
        super().__setattr__(name, value)


@dataclass
class Check(_Bounded):
    """One verification: what was expected, what was observed, and whether it proved data.

    `proves_data` is true only for checks that compared restored content against an expectation
    (hashes, counts); a scenario passes only if at least one such check passed.
    """

    name: str
    status: str
    reason: str = ""
    expected: str = ""
    observed: str = ""
    detail: str = ""
    proves_data: bool = False
    seconds: float | None = None

    @classmethod
    def passed(cls, name: str, **fields: Any) -> Check:
        return cls(name, CHECK_PASSED, **fields)

    @classmethod
    def failed(cls, name: str, reason: str, **fields: Any) -> Check:
        return cls(name, CHECK_FAILED, reason, **fields)

    @classmethod
    def error(cls, name: str, reason: str, **fields: Any) -> Check:
        return cls(name, CHECK_ERROR, reason, **fields)


def _not_configured(name: str) -> Objective:
    return Objective(name, NOT_CONFIGURED, None, None, "")


@dataclass
class ScenarioResult(_Bounded):
    scenario: str
    kind: str
    scenario_path: str
    scenario_sha256: str
    started_at: datetime
    status: str = ERROR
    reason: str = ""
    cause: str = ""
    finished_at: datetime | None = None
    snapshot_id: str | None = None
    snapshot_time: datetime | None = None
    source_version: str | None = None
    files: int | None = None
    bytes: int | None = None
    rto: Objective = field(default_factory=lambda: _not_configured("rto"))
    rpo: Objective = field(default_factory=lambda: _not_configured("rpo"))
    phases: dict[str, float] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    kept: str = ""
    # From the scenario, so that the history can be filtered and grouped without its file.
    client: str = ""
    owner: str = ""
    tags: list[str] = field(default_factory=list)
    every_seconds: float | None = None
    # RTO projection: a subset restore (include:) measures throughput; the full restore's RTO
    # is projected from the restore point's total size. rto_applies_to says which one is judged.
    full_bytes: int | None = None
    throughput_bytes_per_second: float | None = None
    projected_rto_seconds: float | None = None
    rto_applies_to: str = "restored"

    @classmethod
    def begin(cls, scenario: Any, started_at: datetime, **fields: Any) -> ScenarioResult:
        """A result for a scenario (a ScenarioBase), before anything ran."""
        origin = scenario.origin
        fields.setdefault("client", scenario.client)
        fields.setdefault("owner", scenario.owner)
        fields.setdefault("tags", list(scenario.tags))
        fields.setdefault("every_seconds", scenario.every)
        fields.setdefault("rto_applies_to", scenario.objectives.rto_applies_to)
        return cls(
            scenario.name,
            scenario.kind,
            str(origin.path),
            origin.content_sha256,
            started_at,
            **fields,
        )

    @property
    def rto_seconds(self) -> float | None:
        return self.rto.measured_seconds

    @property
    def rpo_seconds(self) -> float | None:
        return self.rpo.measured_seconds

    def conclude(self) -> None:
        """Set status and reason from the checks and objectives (errors win, then failures)."""
        if self.status == ERROR and self.reason:
            return
        errors = [check for check in self.checks if check.status == CHECK_ERROR]
        failures = [check for check in self.checks if check.status == CHECK_FAILED]
        proofs = [
            check for check in self.checks if check.proves_data and check.status == CHECK_PASSED
        ]
        objective_reasons = [
            reason for reason in (self.rto.failure_reason(), self.rpo.failure_reason()) if reason
        ]
        if errors:
            self.status, self.reason = ERROR, "; ".join(check.reason for check in errors[:2])
        elif failures or objective_reasons:
            reasons = [check.reason for check in failures] + objective_reasons
            self.status, self.reason = FAIL, "; ".join(reasons[:3])
        elif not proofs:
            self.status, self.reason = (
                FAIL,
                (
                    "no check proved the data: configure a manifest, checksums, a source "
                    "digest or verify, or an expectation above zero"
                ),
            )
        else:
            self.status, self.reason = PASS, ""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["rto_seconds"] = self.rto_seconds
        data["rpo_seconds"] = self.rpo_seconds
        for name in ("started_at", "finished_at", "snapshot_time"):
            value = data[name]
            data[name] = value.isoformat() if value else None
        return data
