"""restore-tests: the command line. Thin: parse, call one library function, render, exit code."""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from restore_tests import __version__
from restore_tests.errors import (
    EXIT_ENVIRONMENT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EnvironmentUnusable,
    RestoreTestsError,
    ScenarioError,
)

WORK_DIR_VARIABLE = "RESTORE_TESTS_WORK_DIR"


class Group(click.Group):
    """One handler at the edge: library errors become one line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        debug = "--debug" in sys.argv[1:] or bool(os.environ.get("RESTORE_TESTS_DEBUG"))
        try:
            return super().invoke(ctx)
        except ScenarioError as error:
            for problem in error.problems:
                click.echo(f"invalid scenario: {problem}", err=True)
            _leave(error, debug)
        except RestoreTestsError as error:
            click.echo(f"restore-tests: {error}", err=True)
            _leave(error, debug)
        except KeyboardInterrupt:
            click.echo("restore-tests: interrupted", err=True)
            raise SystemExit(EXIT_INTERRUPTED) from None
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as error:  # a bug: still one line, the traceback only on --debug
            if debug:
                raise
            click.echo(
                f"restore-tests: internal error: {type(error).__name__}: {error} "
                "(run with --debug for the traceback)",
                err=True,
            )
            raise SystemExit(EXIT_FAILED) from None


def _leave(error: RestoreTestsError, debug: bool) -> NoReturn:
    if debug:
        import traceback

        traceback.print_exception(error)
    raise SystemExit(error.exit_code)


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="restore-tests")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.option("-v", "--verbose", count=True, help="More detail (-vv: every command run).")
def main(debug: bool, verbose: int) -> None:
    """Prove that backups can be restored: restore, verify, time, record."""
    level = logging.DEBUG if debug or verbose > 1 else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)


def db_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--db",
        "db_url",
        envvar="RESTORE_TESTS_DB",
        metavar="URL",
        help="History database (SQLAlchemy URL). Default: sqlite:///results.db "
        "in the current directory; env RESTORE_TESTS_DB.",
    )(function)


def json_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout."
    )(function)


def run_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """The options shared by check and drill."""
    decorators = [
        db_option,
        json_option,
        click.option(
            "--keep", is_flag=True, help="Keep the sandbox and staging directory for inspection."
        ),
        click.option(
            "--no-cache",
            is_flag=True,
            help="Run restic with --no-cache (default: a fresh cache per run).",
        ),
        click.option(
            "--work-dir",
            type=click.Path(file_okay=False, path_type=Path),
            envvar=WORK_DIR_VARIABLE,
            help="Where staging directories are created (default: $TMPDIR/restore-tests).",
        ),
        click.option(
            "--jobs",
            "-j",
            type=click.IntRange(1, 64),
            default=1,
            show_default=True,
            help="Scenarios run at the same time.",
        ),
        click.option(
            "--tag",
            "tags",
            multiple=True,
            help="Only scenarios with this tag (repeatable: any of them).",
        ),
    ]
    return functools.reduce(lambda wrapped, decorate: decorate(wrapped), decorators, function)


@main.command()
@click.argument("scenarios", nargs=-1, required=True)
@click.option(
    "--scenarios-dir",
    type=click.Path(path_type=Path),
    default=Path("scenarios"),
    show_default=True,
    help="Where a scenario given by name is looked up.",
)
@run_options
def check(scenarios: tuple[str, ...], scenarios_dir: Path, **options: Any) -> None:
    """Run one or more scenarios now (a file, or a name found in --scenarios-dir)."""
    from restore_tests.scenario import find_scenarios

    selected = find_scenarios(list(scenarios), scenarios_dir)
    _run(selected, "check", **options)


@main.command()
@click.argument("paths", nargs=-1)
@run_options
def drill(paths: tuple[str, ...], **options: Any) -> None:
    """Run every scenario in the given folders or files (default: ./scenarios)."""
    from restore_tests.scenario import load_paths

    _run(load_paths(list(paths) or ["scenarios"]), "drill", **options)


def _run(
    scenarios: list[Any],
    trigger: str,
    *,
    db_url: str | None,
    as_json: bool,
    keep: bool,
    no_cache: bool,
    work_dir: Path | None,
    jobs: int,
    tags: tuple[str, ...],
) -> NoReturn:
    from restore_tests.drill import new_run_id, run_drill
    from restore_tests.history.store import HistoryStore, resolve_url
    from restore_tests.pipeline import RunOptions
    from restore_tests.report import records, table

    if tags:
        scenarios = [s for s in scenarios if set(tags) & set(s.tags)]
        if not scenarios:
            raise click.UsageError(f"no scenario has the tag(s) {', '.join(tags)}")
    store = HistoryStore(resolve_url(db_url))
    run_id = new_run_id()
    started = time.monotonic()
    options = RunOptions(
        run_id=run_id,
        work_dir=(work_dir or Path(tempfile.gettempdir()) / "restore-tests"),
        keep=keep,
        no_cache=no_cache,
        progress=_progress_printer(started),
    )

    def announce(result: Any) -> None:
        if not as_json:
            click.echo(table.verdict_line(records.from_result(result, run_id)))

    outcome = run_drill(
        scenarios,
        options,
        store,
        trigger,
        jobs=jobs,
        on_result=announce,
        on_history_failure=lambda message: click.echo(f"restore-tests: {message}", err=True),
    )
    if as_json:
        click.echo(table.to_json(records.drill_document(outcome)))
    elif trigger == "drill" or len(outcome.results) > 1:
        rendered = [records.from_result(result, run_id) for result in outcome.results]
        click.echo("")
        click.echo(table.drill_table(rendered))
        click.echo(f"\n{outcome.summary()}; run {run_id}, history in {store.display_url}")
    raise SystemExit(outcome.exit_code())


def _progress_printer(started: float) -> Callable[[str, str], None]:
    def show(scenario: str, message: str) -> None:
        click.echo(f"[{time.monotonic() - started:6.1f}s] {scenario}: {message}", err=True)

    return show


@main.command()
@db_option
@json_option
@click.option("--scenario", help="Only this scenario.")
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
)
def history(
    db_url: str | None, as_json: bool, scenario: str | None, limit: int, output_format: str
) -> None:
    """The measured RTO history, newest first."""
    from restore_tests.history.store import HistoryStore, resolve_url
    from restore_tests.report import records, table

    store = HistoryStore(resolve_url(db_url))
    try:
        store.mark_abandoned()
    except EnvironmentUnusable as error:  # a read-only copy, say: show it as it is
        click.echo(f"restore-tests: {error} (shown as recorded)", err=True)
    rows = [records.from_row(row) for row in store.results(scenario, limit)]
    if as_json or output_format == "json":
        click.echo(table.to_json(rows))
    elif output_format == "csv":
        click.echo(table.to_csv(rows), nl=False)
    else:
        click.echo(table.history_table(rows))


@main.command()
@click.argument("paths", nargs=-1, required=True)
def validate(paths: tuple[str, ...]) -> None:
    """Check scenario files without running them."""
    from restore_tests.scenario import load_paths

    scenarios = load_paths(list(paths))
    for scenario in scenarios:
        click.echo(
            f"ok  {scenario.name} ({scenario.kind}) {scenario.origin.path}:{scenario.origin.line}"
        )


@main.command()
def schema() -> None:
    """Print the scenario format as JSON Schema (for editors)."""
    from restore_tests.scenario import json_schema

    click.echo(json.dumps(json_schema(), indent=2))


@main.command()
@db_option
@click.option(
    "--all", "everything", is_flag=True, help="Remove every managed sandbox, not only expired ones."
)
@click.option("--run", "run_id", help="Remove what this run left (e.g. after --keep).")
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
@click.option(
    "--work-dir", type=click.Path(file_okay=False, path_type=Path), envvar=WORK_DIR_VARIABLE
)
def prune(
    db_url: str | None, everything: bool, run_id: str | None, dry_run: bool, work_dir: Path | None
) -> None:
    """Remove sandboxes and staging left by killed or --keep runs (found by label).

    Runs whose process has ended (killed) are cleaned at once and marked abandoned in the
    history; other leftovers only past their expiry, unless --all or --run.
    """
    from restore_tests.cleanup import prune_leftovers
    from restore_tests.history.store import resolve_url

    report = prune_leftovers(
        work_dir or Path(tempfile.gettempdir()) / "restore-tests",
        everything=everything,
        run_id=run_id,
        dry_run=dry_run,
        history_url=resolve_url(db_url),
    )
    verb = "would remove" if dry_run else "removed"
    for leftover in report.removed:
        click.echo(f"{verb} {leftover}")
    if not report.removed:
        click.echo("nothing to remove")
    for problem in report.problems:
        click.echo(f"restore-tests: {problem}", err=True)
    raise SystemExit(EXIT_ENVIRONMENT if report.problems else EXIT_OK)


if __name__ == "__main__":
    main()
