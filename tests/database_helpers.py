"""Real dumps made by the engines' own tools, in the same local images the drills use, and the
scenarios that load them. Nothing here fakes a database: each dump is what pg_dump,
mariadb-dump or sqlite3 wrote."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import PASSWORD, restic, run_cli

PG15, PG17, MARIADB = (
    "restore-tests/postgres:15",
    "restore-tests/postgres:17",
    "restore-tests/mariadb:10.11",
)
SANDBOX = "restore-tests/sandbox:bookworm"

# invoices: 2,000 rows, the newest issued an hour ago; customers: 3 rows, one NULL name.
PG_DATA = """
CREATE TABLE customers (id int PRIMARY KEY, name text);
INSERT INTO customers VALUES (1, 'Acme'), (2, 'Globex'), (3, NULL);
CREATE TABLE invoices (id serial PRIMARY KEY, customer int REFERENCES customers,
                       amount numeric(10,2), issued_at timestamptz);
INSERT INTO invoices (customer, amount, issued_at)
  SELECT 1 + g % 3, g * 1.5, now() - interval '1 hour' - g * interval '1 minute'
  FROM generate_series(1, 2000) g;
CREATE INDEX invoices_issued ON invoices (issued_at);
CREATE ROLE billing_app;
ALTER TABLE invoices OWNER TO billing_app;
"""
PG_SCRIPT = """
set -e
initdb -D /scratch/data -U postgres --auth=trust --no-sync >/dev/null
pg_ctl -D /scratch/data -l /scratch/log -w \
  -o "-c listen_addresses='' -c unix_socket_directories=/scratch" start >/dev/null
createdb -h /scratch -U postgres billing
psql -h /scratch -U postgres -d billing -v ON_ERROR_STOP=1 -qf /out/data.sql
for format in c d t p; do
  pg_dump -h /scratch -U postgres -F$format -f /out/billing.$format billing
done
"""
MYSQL_DATA = """
CREATE DATABASE shop; USE shop;
CREATE TABLE orders (id int PRIMARY KEY AUTO_INCREMENT, total decimal(10,2), placed_at datetime);
INSERT INTO orders (total, placed_at)
  SELECT seq * 2, now() - INTERVAL 1 HOUR - INTERVAL seq MINUTE FROM seq_1_to_1500;
CREATE TABLE customers (id int PRIMARY KEY, name varchar(40));
INSERT INTO customers VALUES (1, 'Acme'), (2, NULL);
"""
# A MariaDB server in the container, loaded with /out/data.sql; then a dump command follows.
MYSQL_SERVER = """
set -e
mariadb-install-db --no-defaults --datadir=/scratch/m --auth-root-authentication-method=normal \
  --skip-test-db --user=$(id -un) >/dev/null 2>&1
mariadbd --no-defaults --datadir=/scratch/m --socket=/scratch/s --skip-networking \
  --pid-file=/scratch/p --log-error=/scratch/l --skip-log-bin &
for i in $(seq 100); do
  mariadb --no-defaults --socket=/scratch/s -uroot -e 'select 1' >/dev/null 2>&1 && break
  sleep 0.1
done
mariadb --no-defaults --socket=/scratch/s -uroot < /out/data.sql
"""
MYSQL_SCRIPT = (
    MYSQL_SERVER + "mariadb-dump --no-defaults --socket=/scratch/s -uroot shop > /out/shop.sql\n"
)


def run_in_image(image: str, user: str, script: str, out: Path) -> None:
    """A script in a throwaway container of the image (no network), /out mounted writable."""
    out.chmod(0o777)
    subprocess.run(
        [
            "docker", "run", "--rm", "--network", "none", "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges", "--user", user,
            "--tmpfs", "/scratch:mode=1777", "--tmpfs", "/run:mode=1777",
            "-v", f"{out}:/out", image, "bash", "-c", script,
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )  # fmt: skip


def make_postgres_dumps(out: Path, image: str = PG15) -> Path:
    """billing.c (custom), billing.d (directory), billing.t (tar), billing.p (plain)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "data.sql").write_text(PG_DATA)
    run_in_image(image, "postgres", PG_SCRIPT, out)
    return out


def make_mysql_dump(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "data.sql").write_text(MYSQL_DATA)
    run_in_image(MARIADB, "mysql", MYSQL_SCRIPT, out)
    return out / "shop.sql"


def make_sqlite_file(path: Path) -> Path:
    """crm.sqlite3: 5,000 contacts, the newest made an hour ago, and a notes table."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as database:
        database.execute("CREATE TABLE contacts (id INTEGER PRIMARY KEY, name TEXT, created TEXT)")
        database.executemany(
            "INSERT INTO contacts (name, created) VALUES (?, datetime('now', ?))",
            [(f"contact {index}", f"-{60 + index} minutes") for index in range(5000)],
        )
        database.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    return path


def database_scenario(
    folder: Path, name: str, kind: str, source: str, database: str, verify: str, extra: str = ""
) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(
        f"name: {name}\nkind: {kind}\nsource: {source}\ndatabase: {database}\n"
        f"objectives: {{rto: 10m, rpo: 24h}}\nverify:\n{verify}{extra}"
    )
    return path


def check(scenario: Path, history_url: str, **env: str) -> tuple[int, dict[str, Any]]:
    """The CLI's exit code and its one result."""
    result = run_cli("check", str(scenario), "--db", history_url, "--json", env=env)
    try:
        [record] = json.loads(result.stdout)["results"]
    except (ValueError, KeyError) as error:
        raise AssertionError(f"no JSON result: {result.stdout}\n{result.stderr}") from error
    return result.returncode, record


def checks_by_name(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {check["name"]: check for check in record["checks"]}


def copy(source: Path, target: Path) -> Path:
    """A copy of a dump file or folder at target (its folders made)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copyfile(source, target)
    return target


def local(path: Path) -> str:
    """A local source reading path as it is (no unpacking)."""
    return f"{{type: local, path: {path}, unpack: none}}"


def backed_up_with_restic(binary: str, host: Path, folder: Path) -> str:
    """A restic repository in folder with one snapshot of host's var/ (restored as /var/...)."""
    repository = str(folder / "repo")
    restic(binary, repository, "init")
    subprocess.run(
        [binary, "--no-cache", "-r", repository, "backup", "var"],
        cwd=host,
        check=True,
        capture_output=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(folder), "RESTIC_PASSWORD": PASSWORD},
    )
    return repository
