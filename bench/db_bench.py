"""Database drills by restore-tests against the manual procedure, alternately, in one run.

(a) `restore-tests check --json` on a `local` scenario holding one dump (unpack: none, so it is
    hard-linked into staging): the sandbox (container, server init, ready), the load, the
    queries; its per-phase seconds come from the JSON;
(b) what a technician does by hand with the same image and the same limits: `docker run -d`
    (no network, no capabilities, read-only root, the dump's folder read-only at /restore, a host
    scratch folder at /scratch), `docker exec` the server's start (initdb + pg_ctl, or
    mariadb-install-db + mariadbd until a real query answers), the load (createdb + pg_restore -j
    N --no-owner --no-acl, or `mariadb < dump`), the same queries, then `docker rm -f`.

Cases: pg-j1 and pg-j2 (a pgbench -i -s SCALE database, pg_dump -Fc, restored with -j 1 / -j 2),
mysql (a mariadb-dump of SCALE x 100,000 generated rows), and with --integrity pg-j2-amcheck
(integrity: true against pg_amcheck by hand). "server ready" is the tool's own "server ready"
check (the server answered X s after its container started; the server starts in the background
while the data is fetched) against the manual server step after `docker run`. Goals: tool <= 1.1x
manual; server ready <= 1.5 s.

Usage: python bench/db_bench.py [--scale 70] [--rounds 3] [--work DIR] [--cases pg-j1,mysql]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

PG_IMAGE = "restore-tests/postgres:15"
MARIADB_IMAGE = "restore-tests/mariadb:10.11"
TOOL = Path(sys.executable).parent / "restore-tests"
ROWS_PER_SCALE = 100_000  # pgbench_accounts' rows per scale unit; the MariaDB table's too
MANUAL_CONTAINER = "restore-tests-bench-manual"
GOAL_RATIO, GOAL_READY = 1.1, 1.5
READY = "server ready"  # the tool's check; its seconds are kept with the phases, not shown there

PG_PATH = "for d in /usr/lib/postgresql/*/bin; do PATH=$PATH:$d; done; "
# The same server as runners/postgres.py and runners/mysql.py start: the copy is thrown away.
PG_OPTIONS = (
    "-c listen_addresses='' -c unix_socket_directories=/scratch -c fsync=off "
    "-c full_page_writes=off -c synchronous_commit=off -c max_wal_size=4GB "
    "-c dynamic_shared_memory_type=mmap"
)
PG_START = (
    "initdb -D /scratch/pgdata -U postgres --auth=trust --no-sync -E UTF8 --locale=C.UTF-8 "
    f'>/dev/null && pg_ctl -D /scratch/pgdata -l /scratch/pg.log -w -t 60 -o "{PG_OPTIONS}" '
    "start >/dev/null"
)
PG_CLIENT = "-h /scratch -U postgres"
MY_CLIENT = "mariadb --no-defaults --socket=/scratch/my.sock -uroot"
MY_SERVER = (
    "--no-defaults --datadir=/scratch/mysql --socket=/scratch/my.sock --skip-networking "
    "--pid-file=/scratch/my.pid --log-error=/scratch/my.log --tmpdir=/tmp --skip-log-bin "
    "--innodb-buffer-pool-size=128M --innodb-flush-log-at-trx-commit=0 "
    "--innodb-doublewrite=0 --skip-name-resolve"
)
MY_START = (
    "mariadb-install-db --no-defaults --datadir=/scratch/mysql "
    "--auth-root-authentication-method=normal --skip-test-db --user=$(id -un) >/dev/null 2>&1 "
    f"&& {{ nohup mariadbd {MY_SERVER} </dev/null >/dev/null 2>&1 & }} && "
    f"for i in $(seq 600); do [ \"$({MY_CLIENT} -Nse 'select 1' 2>/dev/null)\" = 1 ] && break; "
    f"sleep 0.1; done; {MY_CLIENT} -e 'select 1' >/dev/null"
)
PG_MAKE = f"""set -e; {PG_PATH}
{PG_START}
createdb {PG_CLIENT} bench
pgbench {PG_CLIENT} -i -q -s "$1" bench 2>&1 | tail -n 1
pg_dump {PG_CLIENT} -Fc -f /out/bench.dump.part bench && mv /out/bench.dump.part /out/bench.dump
"""
MY_MAKE = f"""set -e
{MY_START}
{MY_CLIENT} -e "CREATE DATABASE bench; CREATE TABLE bench.accounts (id int PRIMARY KEY,
  balance int NOT NULL DEFAULT 0, filler varchar(200) NOT NULL)"
for i in $(seq 0 $(($1 - 1))); do
  lo=$((i * {ROWS_PER_SCALE} + 1)); hi=$(((i + 1) * {ROWS_PER_SCALE}))
  {MY_CLIENT} -D bench -e "INSERT INTO accounts (id, filler) SELECT seq, concat_ws(' ', md5(seq),
    sha1(seq), md5(seq + 1), sha1(seq + 1)) FROM seq_${{lo}}_to_${{hi}}"
done
mariadb-dump --no-defaults --socket=/scratch/my.sock -uroot bench > /out/bench.sql.part
mv /out/bench.sql.part /out/bench.sql
"""


@dataclass(frozen=True)
class Case:
    """One comparison: a scenario for the tool, the same work by hand."""

    name: str
    image: str
    user: str  # the engine's user in the image
    dump: Path
    scenario: Path
    start: str  # manual: the server's start, until it answers
    load: str  # manual: the dump (at /restore/NAME) into database bench
    queries: dict[str, str]  # manual: the client command per query -> its expected answer


@dataclass
class Timing:
    """One procedure's wall seconds in each round, and its parts (phases or steps)."""

    walls: list[float] = field(default_factory=list)
    parts: dict[str, list[float]] = field(default_factory=dict)

    def add(self, wall: float, parts: dict[str, float]) -> None:
        self.walls.append(wall)
        for name, seconds in parts.items():
            self.parts.setdefault(name, []).append(seconds)

    def median(self, part: str | None = None) -> float:
        return statistics.median(self.walls if part is None else self.parts.get(part, [0.0]))


def run_in_image(image: str, user: str, script: str, out: Path, *args: str) -> None:
    """A script in a throwaway container of the image (no network), /out mounted writable,
    a tmpfs /scratch: how tests/database_helpers.py makes its dumps."""
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o777)
    subprocess.run(
        [
            "docker", "run", "--rm", "--network", "none", "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges", "--user", user,
            "--tmpfs", "/scratch:mode=1777", "--tmpfs", "/run:mode=1777",
            "-v", f"{out}:/out", image, "bash", "-c", script, "make", *args,
        ],
        check=True,
    )  # fmt: skip


def make_dump(image: str, user: str, script: str, dump: Path, scale: int) -> Path:
    """The dump, made once per scale and reused while it exists."""
    if not dump.exists():
        print(f"making {dump} (scale {scale}) ...", flush=True)
        started = time.perf_counter()
        run_in_image(image, user, script, dump.parent, str(scale))
        size = dump.stat().st_size / 1024**2
        print(f"  {size:.0f} MiB in {time.perf_counter() - started:.0f} s", flush=True)
    return dump


def write_scenario(
    path: Path, kind: str, dump: Path, database: str, verify: str, sandbox: str
) -> Path:
    path.write_text(
        f"name: {path.stem}\nkind: {kind}\n"
        f"source: {{type: local, path: {dump}, unpack: none}}\n"
        f"database: {database}\nobjectives: {{rto: 2h}}\nverify:\n{verify}"
        f"sandbox: {sandbox}\n"
    )
    return path


def sandbox_yaml(image: str, options: argparse.Namespace) -> str:
    return f"{{image: '{image}', memory: {options.memory}, cpus: {options.cpus}}}"


def database_yaml(name: str, options: argparse.Namespace, jobs: int | None = None) -> str:
    scratch = f", scratch: {options.scratch}" if options.scratch else ""
    return f"{{name: {name}{', jobs: ' + str(jobs) if jobs else ''}{scratch}}}"


def verify_yaml(integrity: bool, tables: int, queries: dict[str, str]) -> str:
    asked = "".join(
        f"    - {{sql: '{sql}', expect: '{answer}'}}\n" for sql, answer in queries.items()
    )
    return (
        f"  integrity: {str(integrity).lower()}\n  tables: {{min: {tables}}}\n  queries:\n{asked}"
    )


def pg_cases(options: argparse.Namespace, names: list[str]) -> list[Case]:
    """pgbench -i -s SCALE, pg_dump -Fc; restored with -j 1 and -j 2 (and with pg_amcheck)."""
    if not any(name.startswith("pg-") for name in names):
        return []
    dump = make_dump(
        PG_IMAGE, "postgres", PG_MAKE, options.work / f"pg-s{options.scale}" / "bench.dump",
        options.scale,
    )  # fmt: skip
    queries = {
        "SELECT count(*) FROM pgbench_accounts": str(options.scale * ROWS_PER_SCALE),
        "SELECT sum(abalance) FROM pgbench_accounts": "0",
    }
    cases = []
    for name, jobs, integrity in (
        ("pg-j1", 1, False),
        ("pg-j2", 2, False),
        ("pg-j2-amcheck", 2, True),
    ):
        amcheck = f" && pg_amcheck {PG_CLIENT} --install-missing -d bench" if integrity else ""
        scenario = write_scenario(
            options.work / f"{name}.yaml", "postgres", dump, database_yaml("bench", options, jobs),
            verify_yaml(integrity, 4, queries), sandbox_yaml(PG_IMAGE, options),
        )  # fmt: skip
        load = (
            f"{PG_PATH}createdb {PG_CLIENT} bench && pg_restore {PG_CLIENT} -d bench "
            f"--no-owner --no-acl -j {jobs} /restore/{dump.name}{amcheck}"
        )
        asked = {
            f"{PG_PATH}psql {PG_CLIENT} -d bench -XAtqc '{sql}'": a for sql, a in queries.items()
        }
        cases.append(
            Case(name, PG_IMAGE, "postgres", dump, scenario, PG_PATH + PG_START, load, asked)
        )
    return [case for case in cases if case.name in names]


def mysql_cases(options: argparse.Namespace, names: list[str]) -> list[Case]:
    """SCALE x 100,000 generated rows (~16 MB of SQL each), mariadb-dump, loaded with the client."""
    if "mysql" not in names:
        return []
    dump = make_dump(
        MARIADB_IMAGE, "mysql", MY_MAKE, options.work / f"mysql-s{options.scale}" / "bench.sql",
        options.scale,
    )  # fmt: skip
    queries = {
        "SELECT count(*) FROM accounts": str(options.scale * ROWS_PER_SCALE),
        "SELECT sum(balance) FROM accounts": "0",
    }
    scenario = write_scenario(
        options.work / "mysql.yaml", "mysql", dump, database_yaml("bench", options),
        verify_yaml(False, 1, queries), sandbox_yaml(MARIADB_IMAGE, options),
    )  # fmt: skip
    load = f"{MY_CLIENT} -e 'CREATE DATABASE bench' && {MY_CLIENT} bench < /restore/{dump.name}"
    asked = {f"{MY_CLIENT} -D bench -Nse '{sql}'": answer for sql, answer in queries.items()}
    return [Case("mysql", MARIADB_IMAGE, "mysql", dump, scenario, MY_START, load, asked)]


def run_tool(case: Case, work: Path) -> tuple[float, dict[str, float]]:
    """restore-tests check --json: wall seconds and the phases it records."""
    argv = [
        str(TOOL), "check", str(case.scenario), "--json", "--db",
        f"sqlite:///{work / 'history.db'}", "--work-dir", str(work / "staging"),
    ]  # fmt: skip
    started = time.perf_counter()
    completed = subprocess.run(argv, capture_output=True, text=True)
    wall = time.perf_counter() - started
    try:
        [record] = json.loads(completed.stdout)["results"]
    except (ValueError, KeyError):
        record = {}
    if completed.returncode != 0 or record.get("status") != "pass":
        sys.exit(
            f"FAILED: {' '.join(argv)}\nexit {completed.returncode}, after {wall:.1f} s\n"
            f"{completed.stdout[-6000:]}\n{completed.stderr[-3000:]}"
        )
    phases = {name: float(seconds) for name, seconds in record["phases"].items()}
    phases["outside"] = wall - sum(phases.values())  # process start, imports, history, exit
    # "answered 1.23s after its container started (1.71s after the sandbox was asked for)"
    observed = [c["observed"] for c in record["checks"] if c["name"] == READY] or [""]
    found = re.search(r"answered ([\d.]+)s", observed[0])
    if found is None:
        sys.exit(f"{case.name}: no {READY!r} check with 'answered X.XXs' in the tool's JSON")
    phases[READY] = float(found.group(1))
    return wall, phases


def docker(*args: str) -> str:
    completed = subprocess.run(["docker", *args], capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)[:300]}: exit {completed.returncode}: "
                           f"{completed.stderr.strip()[-1000:]}")  # fmt: skip
    return completed.stdout


def start_manual(case: Case, scratch: Path, options: argparse.Namespace) -> None:
    """docker run -d with the tool's isolation and limits (restore_tests/sandbox.py)."""
    docker(
        "run", "-d", "--name", MANUAL_CONTAINER, "--network", "none", "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges", "--read-only", "--user", case.user,
        "--memory", options.memory, "--memory-swap", options.memory, "--cpus", str(options.cpus),
        "--pids-limit", "256", "--tmpfs", "/tmp:rw,nosuid,nodev,size=256m",
        "--tmpfs", "/run:rw,nosuid,nodev,size=16m", "-v", f"{scratch}:/scratch",
        "-v", f"{case.dump.parent}:/restore:ro", "-w", "/scratch",
        "-e", "HOME=/scratch", "-e", "LC_ALL=C.UTF-8", case.image, "sleep", "infinity",
    )  # fmt: skip


def ask(case: Case) -> None:
    for command, expected in case.queries.items():
        answer = docker("exec", MANUAL_CONTAINER, "bash", "-c", command).strip()
        if answer != expected:
            raise RuntimeError(
                f"manual {case.name}: {command!r} answered {answer!r}, not {expected}"
            )


def run_manual(
    case: Case, work: Path, options: argparse.Namespace
) -> tuple[float, dict[str, float]]:
    """The technician's procedure, step by step; the container is removed even on failure."""
    scratch = work / "manual-scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    scratch.chmod(0o1777)
    steps: dict[str, Callable[[], object]] = {
        "container": lambda: start_manual(case, scratch, options),
        "server": lambda: docker("exec", MANUAL_CONTAINER, "bash", "-c", case.start),
        "load": lambda: docker("exec", MANUAL_CONTAINER, "bash", "-c", case.load),
        "queries": lambda: ask(case),
    }
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    try:
        for name, step in steps.items():
            began = time.perf_counter()
            step()
            seconds[name] = time.perf_counter() - began
    finally:
        began = time.perf_counter()
        subprocess.run(["docker", "rm", "-f", MANUAL_CONTAINER], capture_output=True)
        seconds["remove"] = time.perf_counter() - began
    wall = time.perf_counter() - started
    shutil.rmtree(scratch)  # untimed, as the tool's detached cleanup is
    return wall, seconds


def settle(work: Path, limit: float = 300.0) -> None:
    """Before each measurement: the tool's detached cleanup done, dirty pages written."""
    deadline = time.monotonic() + limit
    staging = work / "staging"
    while staging.exists() and any(staging.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.2)
    subprocess.run(["sync"], check=True)


Results = dict[str, dict[str, Timing]]


def measure(cases: list[Case], options: argparse.Namespace) -> Results:
    """Each round: every case, tool then manual in odd rounds, manual then tool in even ones."""
    procedures = {
        "tool": lambda case: run_tool(case, options.work),
        "manual": lambda case: run_manual(case, options.work, options),
    }
    results: Results = {case.name: {"tool": Timing(), "manual": Timing()} for case in cases}
    for round_number in range(1, options.rounds + 1):
        for case in cases:
            order = list(procedures) if round_number % 2 else list(reversed(procedures))
            for name in order:
                settle(options.work)
                results[case.name][name].add(*procedures[name](case))
            tool, manual = (results[case.name][name].walls[-1] for name in procedures)
            ready = results[case.name]["tool"].parts[READY][-1]
            print(
                f"round {round_number} {case.name:<14} tool {tool:7.2f} s  manual {manual:7.2f} s"
                f"  ratio {tool / manual:.3f}  ready {ready:.2f} s  ({' then '.join(order)})",
                flush=True,
            )
    return results


def ratio(timings: dict[str, Timing]) -> float:
    """The median of the rounds' ratios (each measured back to back)."""
    pairs = zip(timings["tool"].walls, timings["manual"].walls, strict=True)
    return statistics.median(tool / manual for tool, manual in pairs)


def parts_text(timing: Timing) -> str:
    return " ".join(f"{name} {timing.median(name):.2f}" for name in timing.parts if name != READY)


def print_table(results: Results) -> None:
    print(f"\n{'case':<14} {'tool s':>8} {'manual s':>9} {'ratio':>6}  goal <= {GOAL_RATIO}")
    for name, timings in results.items():
        tool, manual, value = timings["tool"].median(), timings["manual"].median(), ratio(timings)
        verdict = "ok" if value <= GOAL_RATIO else "OVER"
        print(f"{name:<14} {tool:8.2f} {manual:9.2f} {value:6.3f}  {verdict}")
        print(f"{'':<14} tool phases (median s): {parts_text(timings['tool'])}")
        print(f"{'':<14} manual steps (median s): {parts_text(timings['manual'])}")
    print(f"\n{'server ready':<14} {'tool s':>8} {'manual s':>9}  goal <= {GOAL_READY} s")
    for name, timings in results.items():
        tool = timings["tool"].median(READY)
        manual = timings["manual"].median("server")
        verdict = "ok" if tool <= GOAL_READY else "OVER"
        print(f"{name:<14} {tool:8.2f} {manual:9.2f}  {verdict}")
    print("(tool: its 'server ready' check = from its container's start until the server "
          "answered, while the data was fetched; manual: from `docker run` returning until a "
          "query answers)")  # fmt: skip


def print_jobs_gain(results: Results) -> None:
    if "pg-j1" not in results or "pg-j2" not in results:
        return
    for who, part in (("tool", "load"), ("manual", "load")):
        one, two = (results[name][who].median(part) for name in ("pg-j1", "pg-j2"))
        change = (two / one - 1) * 100
        print(f"-j 2 vs -j 1, {who} load: {one:.2f} s -> {two:.2f} s ({change:+.0f}% time)")


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=70, help="pgbench scale; 100,000 rows each")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/restore-tests-bench-db"))
    parser.add_argument(
        "--cases", default="pg-j1,pg-j2,mysql", help="pg-j1,pg-j2,pg-j2-amcheck,mysql"
    )
    parser.add_argument("--integrity", action="store_true", help="add the pg-j2-amcheck case")
    parser.add_argument("--memory", default="512m", help="sandbox memory, both sides (tool: 512m)")
    parser.add_argument("--cpus", type=float, default=2.0, help="sandbox CPUs, both sides")
    parser.add_argument("--scratch", default="", help="database.scratch (default: the tool's)")
    options = parser.parse_args()
    options.work = options.work.resolve()
    options.work.mkdir(parents=True, exist_ok=True)
    return options


def main() -> int:
    options = arguments()
    names = options.cases.split(",") + (["pg-j2-amcheck"] if options.integrity else [])
    cases = pg_cases(options, names) + mysql_cases(options, names)
    print(f"scale {options.scale}, {options.rounds} rounds, memory {options.memory}, "
          f"cpus {options.cpus}, work {options.work}", flush=True)  # fmt: skip
    subprocess.run(["docker", "rm", "-f", MANUAL_CONTAINER], capture_output=True)
    results = measure(cases, options)
    print_table(results)
    print_jobs_gain(results)
    summary = {
        name: {who: {"walls": t.walls, "parts": t.parts} for who, t in timings.items()}
        for name, timings in results.items()
    }
    (options.work / f"results-s{options.scale}.json").write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
