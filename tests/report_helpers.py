"""A populated history for the report's tests and its README screenshot.

Six scenarios of three clients drilled over three quarters through the real HistoryStore: weekly
and monthly passes with slowly growing RTOs, a subset restore with its projected full RTO, an RTO
over its target, a wrong password (an error), a damaged disk image (a failure whose reason can be
hostile), one scenario overdue, one never tested, and one whose file changed since its last pass.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from restore_tests.history.store import HistoryStore
from restore_tests.results import ERROR, FAIL, PASS, Check, ScenarioResult
from restore_tests.scenario import ScenarioBase, load_paths
from restore_tests.timing import judge

DAY = timedelta(days=1)
DAMAGED_DISK = "qemu-img check found 312 corruptions in erp-vm.qcow2 (refcount block 3)"
WRONG_PASSWORD = "restic: wrong password or no key found for repository s3:https://s3.local/crm"


@dataclass(frozen=True)
class Plan:
    """How a scenario is described and drilled."""

    name: str
    client: str
    owner: str
    description: str
    rto: str  # target, as written in the scenario
    every_days: int  # drilled every this many days ...
    first_day: int  # ... from this many days ago ...
    last_day: int = 0  # ... until this many days ago
    typical_rto: float = 60.0  # seconds, at the start of the history


PLANS = (
    Plan(
        "accounting-db",
        "Acme",
        "finance IT",
        "Ledger database, nightly pg_dump",
        "15m",
        7,
        266,
        typical_rto=420.0,
    ),
    Plan(
        "file-share",
        "Acme",
        "it-ops",
        "Team file share (a 2% sample restored)",
        "10m",
        28,
        260,
        typical_rto=70.0,
    ),
    Plan("erp-vm", "Globex", "infra", "ERP server disk image", "30m", 28, 250, typical_rto=900.0),
    Plan(
        "crm-sqlite",
        "Globex",
        "sales-ops",
        "CRM database file on the NAS",
        "5m",
        7,
        180,
        typical_rto=35.0,
    ),
    Plan(
        "mail-archive",
        "Initech",
        "it-ops",
        "Mail archive (yearly)",
        "2h",
        45,
        270,
        150,
        typical_rto=2400.0,
    ),
    Plan("billing-mysql", "Initech", "finance IT", "Billing database (new)", "20m", 0, 0),
)
TARGETS = {"5m": 300.0, "10m": 600.0, "15m": 900.0, "20m": 1200.0, "30m": 1800.0, "2h": 7200.0}


def write_scenarios(folder: Path) -> list[ScenarioBase]:
    """The plans as scenario files (restic sources that are never opened: only loaded)."""
    folder.mkdir(parents=True, exist_ok=True)
    for plan in PLANS:
        (folder / f"{plan.name}.yaml").write_text(
            f"name: {plan.name}\ndescription: {plan.description}\nkind: files\n"
            f"client: {plan.client}\nowner: {plan.owner}\nevery: {plan.every_days or 30}d\n"
            f"source:\n  type: restic\n  repository: /srv/restic/{plan.name}\n"
            f"  password_env: RESTIC_PASSWORD\n"
            f"objectives:\n  rto: {plan.rto}\n  rpo: 26h\n"
            f"verify:\n  manifest: /data/SHA256SUMS\n"
        )
    return load_paths([folder])


def fill_history(
    url: str, scenarios: list[ScenarioBase], now: datetime, hostile: str = ""
) -> HistoryStore:
    """Weekly drills over the plans' days; hostile is appended to the damaged disk's reason."""
    store = HistoryStore(url)
    by_name = {scenario.name: scenario for scenario in scenarios}
    randomness = random.Random(7)
    for days_ago in range(max(plan.first_day for plan in PLANS), -1, -1):
        started = (now - days_ago * DAY).replace(hour=2, minute=0, second=0, microsecond=0)
        due = [plan for plan in PLANS if _due(plan, days_ago)]
        if due and started < now:
            results = [
                _result(by_name[plan.name], plan, started, days_ago, randomness, hostile)
                for plan in due
            ]
            _record(store, f"drill-{started:%Y%m%d}", started, results)
    return store


def _due(plan: Plan, days_ago: int) -> bool:
    if not plan.every_days or not plan.last_day <= days_ago <= plan.first_day:
        return False
    return (plan.first_day - days_ago) % plan.every_days == 0


def _record(
    store: HistoryStore, run_id: str, started: datetime, results: list[ScenarioResult]
) -> None:
    store.start_drill(run_id, "drill", "backup01", "0.1.0", "27.3.1", started)
    for result in results:
        store.record_result(run_id, result)
    worst = FAIL if any(result.status != PASS for result in results) else PASS
    store.finish_drill(run_id, worst, "", started + timedelta(hours=1))


def _result(
    scenario: ScenarioBase,
    plan: Plan,
    started: datetime,
    days_ago: int,
    randomness: random.Random,
    hostile: str,
) -> ScenarioResult:
    growth = 1 + 0.25 * (plan.first_day - days_ago) / plan.first_day  # data grows: slower
    rto = plan.typical_rto * growth * randomness.uniform(0.9, 1.1)
    if plan.name == "accounting-db" and days_ago == 35:
        rto = 965.0  # one drill over its 15 m target
    result = ScenarioResult.begin(scenario, started, finished_at=started + timedelta(seconds=rto))
    if plan.name == "crm-sqlite":  # its file was edited after its last pass
        result.scenario_sha256 = "0" * 64
    _measure(result, plan, rto, randomness)
    _conclude(result, plan, days_ago, hostile)
    return result


def _measure(result: ScenarioResult, plan: Plan, rto: float, randomness: random.Random) -> None:
    result.phases = {
        "preflight": 0.4,
        "select": 0.8,
        "sandbox": 1.5,
        "fetch": rto * 0.6 - 1.5,
        "load": rto * 0.25,
        "verify": rto * 0.15,
        "teardown": 0.6,
    }
    age = randomness.uniform(3, 14) * 3600
    result.snapshot_id, result.snapshot_time = (
        f"{plan.name[:4]}5a7e",
        result.started_at - timedelta(seconds=age),
    )
    result.files, result.bytes = 12_000, 8 * 1024**3
    result.rto = judge("rto", rto, TARGETS[plan.rto], "measured")
    result.rpo = judge("rpo", age, 26 * 3600.0, "snapshot_time")
    if plan.name == "file-share":  # a 2% sample: the full restore is projected
        result.full_bytes = 50 * result.bytes
        result.projected_rto_seconds = rto * 7.2
        result.rto_applies_to = "full"
    result.checks = [
        Check.passed(
            "manifest /data/SHA256SUMS",
            expected="12,000 files",
            observed=f"12,000 match ({result.bytes:,} bytes hashed)",
            proves_data=True,
        )
    ]


def _conclude(result: ScenarioResult, plan: Plan, days_ago: int, hostile: str) -> None:
    if plan.name == "crm-sqlite" and days_ago == 19:
        result.status, result.reason, result.rto = (
            ERROR,
            WRONG_PASSWORD,
            judge("rto", None, 300.0, "measured"),
        )
        result.checks = [Check.error("restic snapshots", WRONG_PASSWORD)]
    elif plan.name == "erp-vm" and days_ago < 28:
        reason = f"{DAMAGED_DISK} {hostile}".strip()
        result.checks.append(Check.failed("qemu-img check", reason, expected="0 corruptions"))
        result.conclude()
    else:
        result.conclude()
