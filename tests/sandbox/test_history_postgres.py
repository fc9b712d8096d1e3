"""The history in a real PostgreSQL server (the local restore-tests/postgres:15 image).

The server has no network: it listens only on a unix socket in a host folder, and the tests reach
it with `postgresql+psycopg://postgres@/DATABASE?host=FOLDER`, the URL form a user gives with
the `postgres` install extra. Its time zone is far from UTC (+13:45), so that a time stored or
compared as local time instead of naive UTC shows. Each test gets a new database.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy.engine import make_url

from restore_tests.history import views
from restore_tests.history.models import Base
from restore_tests.history.store import MIGRATIONS, SCHEMA_REVISION, HistoryStore
from restore_tests.results import ERROR, FAIL, PASS, ScenarioResult
from restore_tests.timing import judge
from tests.conftest import PASSWORD, PASSWORD_VARIABLE, assert_no_leftovers, run_cli
from tests.conftest import write_scenario as write_files_scenario
from tests.database_helpers import PG15
from tests.history_helpers import write_concurrently
from tests.integration.test_history_store import STARTED, a_result

pytestmark = pytest.mark.sandbox

SERVER_TIME_ZONE = "Pacific/Chatham"  # UTC+13:45 (+12:45 in its winter)
READY_SECONDS = 30.0
PASSWORD_ROLE, ROLE_PASSWORD = "drill", "pg-Secret-4-history"
# Trust for everyone but one role, which must give its password (the first matching line wins).
SERVER_SCRIPT = (
    "initdb -D /scratch/data -U postgres --auth=trust --no-sync >/dev/null && "
    f"sed -i '1i local all {PASSWORD_ROLE} scram-sha-256' /scratch/data/pg_hba.conf && "
    "exec postgres -D /scratch/data -c listen_addresses='' -c unix_socket_directories=/socket "
    f"-c fsync=off -c timezone={SERVER_TIME_ZONE}"
)


@dataclass
class PostgresServer:
    container: str
    socket_folder: Path

    def connect(self, database: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(
            host=str(self.socket_folder), user="postgres", dbname=database, autocommit=True
        )

    def new_database(self, owner: str = "postgres") -> str:
        """The URL of a new, empty database (for its owner, without a password)."""
        name = f"history_{uuid.uuid4().hex[:12]}"
        with self.connect() as connection:
            connection.execute(f'CREATE DATABASE "{name}" OWNER "{owner}"')
        return f"postgresql+psycopg://{owner}@/{name}?host={self.socket_folder}"

    def query(self, url: str, sql: str) -> list[tuple[object, ...]]:
        """Run sql in the URL's database, as psql would; its rows, if it has any."""
        with self.connect(str(make_url(url).database)) as connection:
            cursor = connection.execute(sql)
            return cursor.fetchall() if cursor.description else []


def image_present(image: str) -> bool:
    found = subprocess.run(["docker", "image", "inspect", image], capture_output=True)
    return found.returncode == 0


def server_labels() -> list[str]:
    """Labelled like a sandbox of a live run (so no prune removes it under the tests)."""
    expires = (datetime.now(UTC) + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    labels = {
        "restore-tests.managed": "true",
        "restore-tests.run": f"tests-history-postgres-{uuid.uuid4().hex[:8]}",
        "restore-tests.scenario": "history-postgres",
        "restore-tests.expires-at": expires,
        "restore-tests.host": socket.gethostname(),
        "restore-tests.pid": str(os.getpid()),
    }
    return [argument for key, value in labels.items() for argument in ("--label", f"{key}={value}")]


def wait_until_ready(server: PostgresServer) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while True:
        try:
            server.connect().close()
            return
        except psycopg.OperationalError as error:
            if time.monotonic() > deadline:
                logs = subprocess.run(
                    ["docker", "logs", "--tail", "30", server.container],
                    capture_output=True,
                    text=True,
                )
                pytest.fail(
                    f"PostgreSQL did not answer within {READY_SECONDS:.0f} s ({error}):\n"
                    f"{logs.stdout}{logs.stderr}"
                )
            time.sleep(0.05)


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """One server for the session; removed at the end, also when it failed to start."""
    if not image_present(PG15):
        message = f"image {PG15} is absent (scripts/setup.sh builds it)"
        if os.environ.get("CI") and os.environ.get("RESTORE_TESTS_SKIP_DB_IMAGES") != "1":
            pytest.fail(message)
        pytest.skip(f"{message}; RESTORE_TESTS_SKIP_DB_IMAGES=1 skips it")
    socket_folder = tmp_path_factory.mktemp("pg-socket")
    socket_folder.chmod(0o777)  # the server runs as the image's postgres user
    server = PostgresServer(f"restore-tests-history-pg-{uuid.uuid4().hex[:8]}", socket_folder)
    try:
        started = subprocess.run(
            [
                "docker", "run", "-d", "--name", server.container, *server_labels(),
                "--network", "none", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
                "--user", "postgres", "--tmpfs", "/scratch:mode=1777",
                "--tmpfs", "/run:mode=1777", "-v", f"{socket_folder}:/socket",
                PG15, "bash", "-c", SERVER_SCRIPT,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )  # fmt: skip
        if started.returncode != 0:
            pytest.fail(f"docker run {PG15} failed: {started.stderr.strip()}")
        wait_until_ready(server)
        with server.connect() as connection:
            connection.execute(
                f"CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD '{ROLE_PASSWORD}'"  # not a superuser
            )
        yield server
    finally:
        subprocess.run(
            ["docker", "rm", "-f", "-v", server.container], capture_output=True, timeout=120
        )


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    return postgres_server.new_database()


def record(store: HistoryStore, run_id: str, trigger: str, *results: ScenarioResult) -> None:
    started = min(result.started_at for result in results)
    store.start_drill(run_id, trigger, "fs01", "0.1.0", "27.3.1", started)
    for result in results:
        store.record_result(run_id, result)
    store.finish_drill(run_id, PASS, f"{len(results)} recorded", started + timedelta(minutes=1))


def labelled(
    scenario: str,
    started_at: datetime,
    status: str = PASS,
    client: str = "",
    tags: tuple[str, ...] = (),
    rto: float = 41.25,
) -> ScenarioResult:
    result = a_result(scenario, started_at, status)
    result.client, result.tags = client, list(tags)
    result.rto = judge("rto", rto, 900.0, "measured")
    result.phases = {"fetch": rto - 10, "verify": 10.0}
    return result


# --- the schema -----------------------------------------------------------------------------


def test_an_empty_postgresql_database_is_migrated_to_head_and_matches_the_models(
    postgres_server, postgres_url
):
    store = HistoryStore(postgres_url)
    assert store.revision() == SCHEMA_REVISION
    tables = postgres_server.query(
        postgres_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
    )
    assert {name for (name,) in tables} == {
        "alembic_version",
        "drills",
        "results",
        "phases",
        "checks",
    }
    indexes = postgres_server.query(postgres_url, "SELECT indexname FROM pg_indexes")
    assert {"ix_results_scenario_started", "ix_results_client"} <= {name for (name,) in indexes}
    [(started_type,)] = postgres_server.query(
        postgres_url,
        "SELECT data_type FROM information_schema.columns "
        "WHERE table_name = 'results' AND column_name = 'started_at'",
    )
    assert started_type == "timestamp without time zone"  # naive UTC, as on SQLite
    with store.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_a_postgresql_history_at_schema_0002_is_upgraded_in_place(postgres_server, postgres_url):
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", postgres_url)
    command.upgrade(config, "0002")
    postgres_server.query(
        postgres_url,
        "INSERT INTO drills (id, run_id, trigger, host, tool_version, started_at, status, reason) "
        "VALUES (1, 'old-run', 'drill', 'fs01', '0.0.9', '2026-03-14 09:26:53', 'pass', '')",
    )
    postgres_server.query(
        postgres_url,
        "INSERT INTO results (drill_id, scenario, kind, scenario_path, scenario_sha256, status, "
        "reason, cause, started_at, rto_seconds, rto_status, rpo_status, rpo_basis, kept) "
        "VALUES (1, 'share', 'files', '/s.yaml', '', 'pass', '', '', '2026-03-14 09:26:53', "
        "12.5, 'passed', 'passed', '', '')",
    )
    store = HistoryStore(postgres_url)
    assert store.revision() == SCHEMA_REVISION
    [row] = store.results()
    assert (row.scenario, row.client, row.tags, row.rto_applies_to) == ("share", "", "", "restored")
    assert row.started_at == datetime(2026, 3, 14, 9, 26, 53)


# --- the real command line ------------------------------------------------------------------


@pytest.mark.parametrize("restic_binary", ["0.18"], indirect=True)
def test_a_real_check_is_recorded_in_postgresql_and_read_back_by_every_view(
    repository, tmp_path, postgres_server, postgres_url
):
    folder = tmp_path / "scenarios"
    folder.mkdir()
    labels = "client: acme\nowner: it-ops\ntags: [quarterly, pci_dss]\nevery: 30d\n"
    write_files_scenario(folder, "share", str(repository.path), extra=labels)
    write_files_scenario(
        folder,
        "share-broken",
        str(repository.path),
        verify="  manifest: /data/compta/MISSING.sums\n",
        extra="client: acme\ntags: [pci-dss]\n",
    )
    write_files_scenario(folder, "never-run", str(repository.path), extra="client: globex\n")
    environment = {PASSWORD_VARIABLE: PASSWORD, "RESTIC_BINARY": repository.binary}

    checked = run_cli(
        "check", str(folder / "share.yaml"), str(folder / "share-broken.yaml"),
        "--db", postgres_url, env=environment,
    )  # fmt: skip
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert checked.stdout.startswith("PASS  share  RTO "), checked.stdout
    assert "FAIL  share-broken  manifest /data/compta/MISSING.sums" in checked.stdout
    assert_no_leftovers()
    assert postgres_server.query(postgres_url, "SELECT version_num FROM alembic_version") == [
        (SCHEMA_REVISION,)
    ]
    stored = postgres_server.query(
        postgres_url, "SELECT scenario, status, client, tags FROM results ORDER BY scenario"
    )
    assert stored == [
        ("share", PASS, "acme", ",quarterly,pci_dss,"),
        ("share-broken", FAIL, "acme", ",pci-dss,"),
    ]
    [(trigger, drill_status)] = postgres_server.query(
        postgres_url, "SELECT trigger, status FROM drills"
    )
    assert (trigger, drill_status) == ("check", FAIL)

    shown = run_cli("history", "--db", postgres_url)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].split()[:2] == ["scenario", "when"] and "status" in lines[0]
    assert sorted((line.split()[0], line.split()[3]) for line in lines[2:]) == [
        ("share", "PASS"),
        ("share-broken", "FAIL"),
    ]
    as_json = json.loads(run_cli("history", "--db", postgres_url, "--json").stdout)
    assert {(row["scenario"], row["status"]) for row in as_json} == {
        ("share", PASS),
        ("share-broken", FAIL),
    }
    by_tag = json.loads(
        run_cli("history", "--db", postgres_url, "--tag", "pci_dss", "--json").stdout
    )
    assert [row["scenario"] for row in by_tag] == ["share"]  # not share-broken's pci-dss
    failing = run_cli("history", "--db", postgres_url, "--status", "fail", "--since", "1h")
    assert [line.split()[0] for line in failing.stdout.splitlines()[2:]] == ["share-broken"]

    # A password in the URL (ignored by this trust-auth server) is never shown.
    with_password = postgres_url.replace("postgres@", "postgres:s3cret-pw@")
    status = run_cli("status", str(folder), "--db", with_password, "--json")
    assert status.returncode == 1, status.stderr  # a fail and a never tested
    assert "s3cret-pw" not in status.stdout + status.stderr
    document = json.loads(status.stdout)
    assert document["history"].startswith("postgresql+psycopg://postgres:***@/history_")
    rows = {row["scenario"]: row for row in document["scenarios"]}
    assert rows["share"]["last_status"] == PASS and rows["share"]["problems"] == []
    assert rows["share-broken"]["last_status"] == FAIL
    assert rows["never-run"]["problems"] == ["never tested"]
    table = run_cli("status", str(folder), "--db", postgres_url)
    assert "NEVER TESTED" in table.stdout and "share-broken" in table.stdout, table.stdout

    # RESTORE_TESTS_DB, as a timer's EnvironmentFile gives it
    exposition = run_cli("metrics", str(folder), "-o", "-", env={"RESTORE_TESTS_DB": postgres_url})
    assert exposition.returncode == 0, exposition.stderr
    samples = dict(
        line.rsplit(" ", 1) for line in exposition.stdout.splitlines() if not line.startswith("#")
    )
    assert samples['restore_tests_last_pass{client="acme",kind="files",scenario="share"}'] == "1.0"
    assert samples['restore_tests_failing{client="acme",kind="files",scenario="share-broken"}'] == (
        "1.0"
    )
    assert samples[
        'restore_tests_never_tested{client="globex",kind="files",scenario="never-run"}'
    ] == ("1.0")
    rto = float(samples['restore_tests_rto_seconds{client="acme",kind="files",scenario="share"}'])
    assert 0 < rto < 900
    pass_time = float(
        samples[
            'restore_tests_last_success_timestamp_seconds{client="acme",kind="files",scenario="share"}'
        ]
    )
    assert abs(pass_time - time.time()) < 600  # stored as UTC, not the server's +13:45

    report = run_cli(
        "report", str(folder), "--db", postgres_url, "--since", "1d", "--format", "json"
    )
    assert report.returncode == 0, report.stderr
    reported = {row["scenario"]: row for row in json.loads(report.stdout)["scenarios"]}
    assert [point["status"] for point in reported["share"]["period"]["rto_points"]] == [PASS]
    assert set(reported["share"]["period"]["phase_means_seconds"]) >= {"fetch", "verify"}
    assert reported["share"]["last_pass_proved"]
    assert [failure["scenario"] for failure in json.loads(report.stdout)["failures"]] == [
        "share-broken"
    ]


def test_a_role_with_a_password_gets_it_from_pgpassword_or_a_pgpass_file(postgres_server, tmp_path):
    """The URL holds no password (it would end up in units and logs); libpq finds it. The role
    is no superuser: owning the database is enough to create the history's tables."""
    url = postgres_server.new_database(owner=PASSWORD_ROLE)
    refused = run_cli("history", "--db", url)
    assert refused.returncode == 3
    assert refused.stderr.startswith(
        f"restore-tests: history database {make_url(url)} is unusable: "
    )
    assert "password" in refused.stderr

    shown = run_cli("history", "--db", url, env={"PGPASSWORD": ROLE_PASSWORD})
    assert shown.returncode == 0, shown.stderr
    assert postgres_server.query(url, "SELECT version_num FROM alembic_version") == [
        (SCHEMA_REVISION,)
    ]
    password_file = tmp_path / "pgpass"
    password_file.write_text(f"*:*:*:{PASSWORD_ROLE}:{ROLE_PASSWORD}\n")
    password_file.chmod(0o600)  # libpq ignores a .pgpass that others can read
    status = run_cli(
        "status", "--db", url, "--json", env={"PGPASSFILE": str(password_file)}, cwd=tmp_path
    )
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["scenarios"] == []
    assert ROLE_PASSWORD not in status.stdout + status.stderr + shown.stdout + refused.stderr


# --- concurrent writers ---------------------------------------------------------------------


def test_two_threads_writing_to_a_new_postgresql_database_are_both_recorded(
    postgres_server, postgres_url
):
    results_per_writer = 20
    write_concurrently(postgres_url, results_per_writer, a_result, STARTED, timeout=60)
    store = HistoryStore(postgres_url)
    assert sorted((drill.run_id, drill.status) for drill in store.drills()) == [
        ("run-1", PASS),
        ("run-2", PASS),
    ]
    assert len(store.results(limit=None)) == 2 * results_per_writer
    assert postgres_server.query(postgres_url, "SELECT count(*) FROM checks") == [
        (3 * 2 * results_per_writer,)
    ]


def test_two_processes_opening_a_new_postgresql_database_at_once_both_succeed(postgres_url):
    """Two drills of a team starting together on an empty shared history: one migrates."""
    at = time.time() + 2  # both past their imports, then released at the same moment
    program = (
        "import sys, time\n"
        "from restore_tests.history.store import HistoryStore\n"
        f"while time.time() < {at}: pass\n"
        "print(HistoryStore(sys.argv[1]).revision())\n"
    )
    openers = [
        subprocess.Popen(
            [sys.executable, "-c", program, postgres_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outcomes = [(opener.wait(timeout=60), *opener.communicate()) for opener in openers]
    assert outcomes == [(0, f"{SCHEMA_REVISION}\n", "")] * 2


# --- the views ------------------------------------------------------------------------------


@pytest.fixture(params=["postgresql", "sqlite"])
def history(request: pytest.FixtureRequest, tmp_path: Path) -> HistoryStore:
    """Three drills (share and erp, tags and clients chosen to trip a loose LIKE), in PostgreSQL
    and in SQLite: every view must read the same from both."""
    if request.param == "sqlite":
        store = HistoryStore(f"sqlite:///{tmp_path / 'history.db'}")
    else:
        store = HistoryStore(request.getfixturevalue("postgres_url"))
    hour = timedelta(hours=1)
    record(
        store,
        "run-1",
        "check",
        labelled("share", STARTED, client="acme", tags=("quarterly", "pci_dss"), rto=40.0),
        labelled("erp", STARTED + hour, client="acme_eu", tags=("pci-dss",), rto=100.0),
    )
    record(
        store,
        "run-2",
        "drill",
        labelled("share", STARTED + 2 * hour, FAIL, client="acme", tags=("quarterly",), rto=50.0),
        labelled(
            "erp", STARTED + 3 * hour, client="acme_eu", tags=("Quarterly", "1000"), rto=120.0
        ),
    )
    record(
        store,
        "run-3",
        "drill",
        labelled("share", STARTED + 4 * hour, client="acme", tags=("quarterly",), rto=60.0),
        labelled("erp", STARTED + 5 * hour, ERROR, client="acme_eu", tags=("100%",), rto=0.0),
    )
    return store


def test_latest_gives_the_newest_verdict_and_the_newest_pass_per_scenario(history):
    found = views.latest(history)
    assert set(found) == {"share", "erp"}
    assert found["share"].last is not None and found["share"].last_pass is not None
    assert found["share"].last.drill.run_id == "run-3" and found["share"].last.status == PASS
    assert found["share"].last_pass.started_at == (STARTED + timedelta(hours=4)).replace(
        tzinfo=None
    )
    assert found["erp"].last is not None and found["erp"].last_pass is not None
    assert (found["erp"].last.status, found["erp"].last_pass.drill.run_id) == (ERROR, "run-2")
    only_checks = views.latest(history, views.ResultFilter(triggers=["check"]))
    assert {name: entry.last.drill.run_id for name, entry in only_checks.items() if entry.last} == {
        "share": "run-1",
        "erp": "run-1",
    }


def test_rto_points_are_oldest_first_in_aware_utc(history):
    points = views.rto_points(history, views.ResultFilter())
    assert [point.started_at for point in points["share"]] == [
        STARTED + timedelta(hours=hours) for hours in (0, 2, 4)
    ]
    assert [point.rto_seconds for point in points["erp"]] == [100.0, 120.0, 0.0]
    assert all(point.started_at.tzinfo is not None for point in points["share"])
    assert set(views.rto_points(history, views.ResultFilter(), ["erp"])) == {"erp"}


def test_phase_totals_average_the_passes_per_scenario_and_phase(history):
    totals = views.phase_totals(history, views.ResultFilter())
    assert totals == {
        "share": {"fetch": 40.0, "verify": 10.0},  # passes at rto 40 and 60
        "erp": {"fetch": 100.0, "verify": 10.0},  # passes at rto 100 and 120
    }
    drills_only = views.phase_totals(history, views.ResultFilter(triggers=["drill"]))
    assert drills_only == {
        "share": {"fetch": 50.0, "verify": 10.0},
        "erp": {"fetch": 110.0, "verify": 10.0},
    }


def test_a_tag_filter_matches_whole_tags_exactly(history):
    def scenarios_run(*tags: str) -> list[tuple[str, str]]:
        rows = views.results(history, views.ResultFilter(tags=tags), limit=None)
        return [(row.scenario, row.drill.run_id) for row in rows]

    assert scenarios_run("pci_dss") == [("share", "run-1")]  # "_" is no wildcard: not pci-dss
    assert scenarios_run("quarterly") == [
        ("share", "run-3"),
        ("share", "run-2"),
        ("share", "run-1"),
    ]
    assert scenarios_run("Quarterly") == [("erp", "run-2")]  # case counts, as in a scenario folder
    assert scenarios_run("100%") == [("erp", "run-3")]  # "%" is no wildcard: not 1000
    assert scenarios_run("100") == []
    assert scenarios_run("pci-dss", "100%") == [("erp", "run-3"), ("erp", "run-1")]


def test_results_narrowed_by_every_filter_field_at_once(history):
    paris = timezone(timedelta(hours=2))
    where = views.ResultFilter(
        scenarios=["share", "erp"],
        since=(STARTED + timedelta(hours=1)).astimezone(paris),  # inclusive: erp of run-1
        until=STARTED + timedelta(hours=5),  # exclusive: not erp of run-3
        tags=["quarterly", "Quarterly", "pci-dss"],
        statuses=[PASS, FAIL],
        clients=["acme", "acme_eu"],
        triggers=["drill"],
    )
    rows = views.results(history, where, limit=None)
    assert [(row.scenario, row.status, row.drill.run_id) for row in rows] == [
        ("share", PASS, "run-3"),
        ("erp", PASS, "run-2"),
        ("share", FAIL, "run-2"),
    ]
    assert rows[0].started_at == (STARTED + timedelta(hours=4)).replace(tzinfo=None)
    since_only = views.ResultFilter(since=(STARTED + timedelta(hours=1)).astimezone(paris))
    assert len(views.results(history, since_only, limit=None)) == 5
    assert [row.scenario for row in views.results(history, views.ResultFilter(), 2)] == [
        "erp",
        "share",
    ]
    assert views.scenario_names(history) == ["erp", "share"]
    assert views.client_names(history) == ["acme", "acme_eu"]
    assert history.last_passes() == {
        "share": STARTED + timedelta(hours=4),
        "erp": STARTED + timedelta(hours=3),
    }


def test_newest_passes_come_with_their_checks_phases_and_drill(history):
    found = views.newest_passes(history, ["share", "erp", "nothing"])
    assert {name: row.drill.run_id for name, row in found.items()} == {
        "share": "run-3",
        "erp": "run-2",
    }
    assert [check.status for check in found["share"].checks] == ["passed", "failed", "error"]
    assert [phase.name for phase in found["erp"].phases] == ["fetch", "verify"]


def test_rpo_figures_count_per_scenario(history):
    figures = views.rpo_figures(history, views.ResultFilter(clients=["acme"]))
    assert set(figures) == {"share"}
    assert (figures["share"].results, figures["share"].missed) == (3, 0)
    assert figures["share"].worst_seconds == 11520.0
