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
from dataclasses import dataclass
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
        except BrokenPipeError:  # the reader left (`history | head`): nothing more to say
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nor at exit
            raise SystemExit(EXIT_FAILED) from None
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
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Configuration file ([tool.restore-tests] table). Default: $RESTORE_TESTS_CONFIG, "
    "./restore-tests.toml, /etc/restore-tests/config.toml.",
)
@click.pass_context
def main(ctx: click.Context, debug: bool, verbose: int, config_file: Path | None) -> None:
    """Prove that backups can be restored: restore, verify, time, record."""
    level = logging.DEBUG if debug or verbose > 1 else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    from restore_tests import config

    found = config.find(config_file)
    if found is not None:
        parameters = {
            name: {parameter.name for parameter in command.params if parameter.name}
            for name, command in main.commands.items()
        }
        ctx.default_map = config.default_map(config.read(found), parameters)


def db_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--db",
        "db_url",
        envvar="RESTORE_TESTS_DB",
        metavar="URL",
        help="History database: a SQLAlchemy URL or a SQLite file path. Default: results.db "
        "in the current directory; env RESTORE_TESTS_DB; `db` in the configuration file.",
    )(function)


def json_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout."
    )(function)


def run_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """The options shared by check and drill; contradictory output options are refused before
    anything runs."""

    @functools.wraps(function)
    def checked(*arguments: Any, **options: Any) -> Any:
        _refuse_conflicts(options["quiet"], options["as_json"], options["json_lines"])
        return function(*arguments, **options)

    decorators = [
        db_option,
        json_option,
        click.option(
            "--json-lines",
            is_flag=True,
            help="Print one JSON object per scenario as it finishes, then a summary object "
            "(docs/json-format.md).",
        ),
        click.option(
            "--quiet",
            "-q",
            count=True,
            help="Verdict lines and the drill's summary line only (no progress, no table); "
            "-qq: nothing on stdout, only errors and the verdicts of scenarios that did not "
            "pass, on stderr.",
        ),
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
    return functools.reduce(lambda wrapped, decorate: decorate(wrapped), decorators, checked)


def _refuse_conflicts(quiet: int, as_json: bool, json_lines: bool) -> None:
    """Two output options that cannot both be honoured are a usage error, never a choice."""
    if as_json and json_lines:
        raise click.UsageError("--json and --json-lines ask for two formats on stdout: give one")
    if quiet > 1 and (as_json or json_lines):
        wanted = "--json" if as_json else "--json-lines"
        raise click.UsageError(
            f"--quiet --quiet (nothing on stdout) contradicts {wanted} (JSON on stdout); "
            f"a single --quiet with {wanted} prints the JSON without progress"
        )


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
@click.option(
    "--random",
    "random_count",
    type=click.IntRange(1),
    metavar="K",
    help="Run K of the scenarios, chosen at random, weighted toward the least recently "
    "proven (one that never passed weighs most).",
)
@click.option("--seed", type=int, help="Seed of the --random choice, to repeat a draw.")
@run_options
def drill(
    paths: tuple[str, ...], random_count: int | None, seed: int | None, **options: Any
) -> None:
    """Run every scenario in the given folders or files (default: ./scenarios)."""
    from restore_tests.scenario import load_paths

    scenarios = load_paths(list(paths) or ["scenarios"])
    if seed is not None and random_count is None:
        raise click.UsageError("--seed goes with --random")
    if random_count is not None:
        scenarios = _random_choice(scenarios, random_count, seed, options)
    _run(scenarios, "drill", **options)


def _random_choice(
    scenarios: list[Any], count: int, seed: int | None, options: dict[str, Any]
) -> list[Any]:
    import random

    from restore_tests.history.store import HistoryStore, resolve_url
    from restore_tests.selection import choose_from_history

    tags = set(options["tags"])
    tagged = [scenario for scenario in scenarios if not tags or tags & set(scenario.tags)]
    store = HistoryStore(resolve_url(options["db_url"]))
    weighed = choose_from_history(tagged, store, count, random.Random(seed))
    chosen = [each.scenario for each in weighed]
    if not options.get("quiet"):
        names = ", ".join(scenario.name for scenario in chosen)
        click.echo(f"random choice: {len(chosen)} of {len(tagged)}: {names}", err=True)
    return chosen


def _run(
    scenarios: list[Any],
    trigger: str,
    *,
    db_url: str | None,
    as_json: bool,
    json_lines: bool,
    quiet: int,
    keep: bool,
    no_cache: bool,
    work_dir: Path | None,
    jobs: int,
    tags: tuple[str, ...],
) -> NoReturn:
    if tags:
        scenarios = [s for s in scenarios if set(tags) & set(s.tags)]
        if not scenarios:
            raise click.UsageError(f"no scenario has the tag(s) {', '.join(tags)}")
    _prepare(scenarios[: max(1, jobs)])
    from restore_tests.drill import new_run_id, run_drill
    from restore_tests.history.store import HistoryStore, resolve_url
    from restore_tests.pipeline import RunOptions
    from restore_tests.report.progress import progress_display

    store = HistoryStore(resolve_url(db_url))
    run_id = new_run_id()
    started = time.monotonic()
    output = RunOutput(run_id, as_json, json_lines, quiet)
    with progress_display(sys.stderr, sys.stdout, started, shown=not quiet) as display:
        options = RunOptions(
            run_id=run_id,
            work_dir=(work_dir or Path(tempfile.gettempdir()) / "restore-tests"),
            keep=keep,
            no_cache=no_cache,
            progress=display.step,
            fetch_progress=display.transfer,
        )

        def announce(result: Any) -> None:
            display.finished(result.scenario)
            output.announce(result)

        outcome = run_drill(
            scenarios,
            options,
            store,
            trigger,
            jobs=jobs,
            on_result=announce,
            on_history_failure=lambda message: _say(f"restore-tests: {message}", err=True),
        )
    output.conclude(outcome, time.monotonic() - started, store.display_url)
    raise SystemExit(outcome.exit_code())


def _prepare(scenarios: list[Any]) -> None:
    """Let the first scenarios' sources start what they can (a restic listing) while the
    history, Docker and the rest of the tool are loaded."""
    from restore_tests.sources import SOURCES

    for scenario in scenarios:
        SOURCES[scenario.source.type].prepare(scenario.source)


@dataclass(frozen=True)
class RunOutput:
    """What check and drill print on stdout: a verdict line per scenario (-qq: none, and those
    that did not pass go to stderr), or a JSON line each, or one JSON document at the end; then
    the table (not with -q) and the summary line."""

    run_id: str
    as_json: bool
    json_lines: bool
    quiet: int

    def announce(self, result: Any) -> None:
        from restore_tests.report import records, table

        if self.json_lines:
            _say(json.dumps(records.result_line(result, self.run_id), default=str))
        elif not self.as_json:
            line = table.verdict_line(records.from_result(result, self.run_id))
            if self.quiet < 2:
                _say(line)
            elif result.status != "pass":
                _say(line, err=True)

    def conclude(self, outcome: Any, seconds: float, history: str) -> None:
        from restore_tests.report import records, table

        if self.as_json:
            click.echo(table.to_json(records.drill_document(outcome)))
        elif self.json_lines:
            click.echo(json.dumps(records.summary_line(outcome, seconds, history)))
        elif self.quiet < 2 and (outcome.trigger == "drill" or len(outcome.results) > 1):
            if not self.quiet:
                rendered = [records.from_result(result, self.run_id) for result in outcome.results]
                click.echo(f"\n{table.drill_table(rendered)}\n")
            click.echo(outcome.summary_line(seconds, history))


def _say(text: str, err: bool = False) -> None:
    """A line on the stream of the moment: while the progress bars run, rich stands in for
    stdout and stderr to print it above them (click would find the terminal underneath)."""
    click.echo(text, file=sys.stderr if err else sys.stdout)


def read_store(db_url: str | None) -> Any:
    """The history for a read-only command: never creates one at a mistyped location."""
    from restore_tests.errors import UsageError
    from restore_tests.history.store import HistoryStore, resolve_url

    url = resolve_url(db_url)
    store = HistoryStore.open_existing(url)
    if store is None:
        raise UsageError(
            f"no history database at {url} (nothing was created): give its location with "
            "--db, RESTORE_TESTS_DB or `db` in the configuration file"
        )
    try:
        store.mark_abandoned()
    except EnvironmentUnusable as error:  # a read-only copy, say: show it as it is
        click.echo(f"restore-tests: {error} (shown as recorded)", err=True)
    return store


def filter_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """--client and --tag, for the views."""
    decorators = [
        click.option("--client", "clients", multiple=True, help="Only this client (repeatable)."),
        click.option("--tag", "tags", multiple=True, help="Only this tag (repeatable: any)."),
    ]
    return functools.reduce(lambda wrapped, decorate: decorate(wrapped), decorators, function)


def period_options(function: Callable[..., Any]) -> Callable[..., Any]:
    decorators = [
        click.option("--since", help="From this date or time (2026-07-01, or 90d ago)."),
        click.option("--until", help="Before this date or time."),
    ]
    return functools.reduce(lambda wrapped, decorate: decorate(wrapped), decorators, function)


@main.command()
@db_option
@json_option
@filter_options
@period_options
@click.option("--scenario", help="Only this scenario.")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(["pass", "fail", "error", "running", "abandoned"]),
    help="Only results with this status (repeatable).",
)
@click.option("--trigger", "triggers", multiple=True, type=click.Choice(["check", "drill"]))
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "csv", "json"]),
    help="Output format (default: table).",
)
def history(
    db_url: str | None,
    as_json: bool,
    scenario: str | None,
    limit: int,
    output_format: str | None,
    **filters: Any,
) -> None:
    """The measured RTO history, newest first."""
    from restore_tests.history import views
    from restore_tests.report import records, table

    if as_json and output_format not in (None, "json"):
        raise click.UsageError(f"--json and --format {output_format} ask for two formats")
    where = _result_filter(scenario, **filters)
    store = read_store(db_url)
    rows = [records.from_row(row) for row in views.results(store, where, limit)]
    if scenario and not rows and scenario not in views.scenario_names(store):
        raise click.UsageError(f"scenario {scenario!r} has no runs in {store.display_url}")
    if as_json or output_format == "json":
        click.echo(table.to_json(rows))
    elif output_format == "csv":
        click.echo(table.to_csv(rows), nl=False)
    else:
        click.echo(table.history_table(rows))


def _result_filter(scenario: str | None, **filters: Any) -> Any:
    from restore_tests.history import views

    since = views.parse_moment(filters["since"], "--since") if filters["since"] else None
    until = views.parse_moment(filters["until"], "--until") if filters["until"] else None
    if since and until and until <= since:
        raise click.UsageError("--until must come after --since")
    return views.ResultFilter(
        scenarios=[scenario] if scenario else (),
        since=since,
        until=until,
        tags=filters["tags"],
        statuses=filters["statuses"],
        clients=filters["clients"],
        triggers=filters["triggers"],
    )


@main.command()
@click.argument("folder", required=False, type=click.Path(path_type=Path))
@db_option
@json_option
@filter_options
def status(
    folder: Path | None,
    db_url: str | None,
    as_json: bool,
    clients: tuple[str, ...],
    tags: tuple[str, ...],
) -> NoReturn:
    """Per scenario: last verdict, age of the proof, RTO trend, what is OVERDUE or NEVER TESTED.

    Exit 1 when anything is failing, overdue or never tested (for monitoring).
    """
    from restore_tests.report import table
    from restore_tests.report.status import build_status, status_document, status_table

    scenarios = _scenario_folder(folder)
    report = build_status(read_store(db_url), scenarios, clients, tags)
    click.echo(table.to_json(status_document(report)) if as_json else status_table(report))
    raise SystemExit(report.exit_code)


@main.command()
@click.argument("folder", required=False, type=click.Path(path_type=Path))
@db_option
@filter_options
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The .prom file to write (atomically: the collector never reads half of it), "
    "or - for stdout.",
)
def metrics(
    folder: Path | None,
    db_url: str | None,
    clients: tuple[str, ...],
    tags: tuple[str, ...],
    output: Path,
) -> None:
    """Write the status as a Prometheus textfile-collector file (for node_exporter)."""
    from restore_tests.report import metrics as prometheus
    from restore_tests.report.status import build_status

    report = build_status(read_store(db_url), _scenario_folder(folder), clients, tags)
    if str(output) == "-":
        click.echo(prometheus.exposition(report), nl=False)
        return
    _write_atomically(output, prometheus.exposition(report))
    click.echo(f"wrote {output} ({len(report.rows)} scenarios)")


@main.command()
@click.argument("folder", required=False, type=click.Path(path_type=Path))
@db_option
@filter_options
@period_options
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["html", "md", "json", "junit"]),
    help="Default: from the -o file's suffix (.html .md .json .xml), else html.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The file to write (atomically). Default: stdout (html only when not a terminal).",
)
def report(
    folder: Path | None,
    db_url: str | None,
    clients: tuple[str, ...],
    tags: tuple[str, ...],
    since: str | None,
    until: str | None,
    output_format: str | None,
    output: Path | None,
) -> None:
    """The report for a client or an auditor: coverage, RTO trends against targets, where the
    time goes, failures with their reasons, RPO, what is never tested or overdue.

    The period is --since (default: 92 days ago) to --until (default: now); the scenarios are
    FOLDER's (default ./scenarios when it exists, else those in the history). docs/report.md.
    """
    from restore_tests.errors import UsageError
    from restore_tests.history import views
    from restore_tests.report import document as report_document

    output_format = output_format or report_document.format_for(output)
    if output is None and output_format == "html" and sys.stdout.isatty():
        raise UsageError("the HTML report is a page for a browser: write it with -o report.html")
    document = report_document.build_document(
        read_store(db_url),
        _scenario_folder(folder),
        views.parse_moment(since or "92d", "--since"),
        views.parse_moment(until, "--until") if until else None,
        clients,
        tags,
    )
    rendered = report_document.render(document, output_format)
    if output is None:
        click.echo(rendered, nl=False)
        return
    _write_atomically(output, rendered)
    click.echo(f"wrote {output} ({output_format}, {document.status.summary()})")


def _write_atomically(path: Path, text: str) -> None:
    """A reader sees the old file or the new one, never half of it."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise EnvironmentUnusable(f"could not write {path}: {error.strerror or error}") from error


def _scenario_folder(folder: Path | None) -> list[Any] | None:
    """The scenarios a view holds the history against: FOLDER, else ./scenarios if it exists."""
    if folder is None:
        folder = Path("scenarios")
        if not folder.is_dir():
            return None
    from restore_tests.scenario import load_paths  # the models import every runner: only now

    return load_paths([folder])


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


@main.command()
@click.option(
    "--every",
    type=click.Choice(["quarter", "month", "week"]),
    required=True,
    help="How often the drill runs.",
)
@click.option(
    "--scenarios-dir",
    type=click.Path(path_type=Path),
    default=Path("scenarios"),
    show_default=True,
    help="The folder of scenarios the drill runs.",
)
@db_option
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar=WORK_DIR_VARIABLE,
    help="Where the scheduled drill stages restores (its --work-dir; default: the drill's own).",
)
@click.option("--name", default="restore-tests-drill", show_default=True, help="Unit name.")
@click.option("--at", default="03:30", show_default=True, metavar="HH:MM", help="Time of day.")
@click.option(
    "--environment-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="KEY=value file of secrets the drill needs (restic passwords, S3 keys): the units "
    "name it, never its values.",
)
@click.option(
    "--random",
    "random_count",
    type=click.IntRange(1),
    metavar="K",
    help="Each run drills K scenarios, weighted toward the least recently proven.",
)
@click.option("--install", is_flag=True, help="Install and start it (as root) instead of printing.")
@click.option(
    "--unit-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where --install writes the units. Default: /etc/systemd/system.",
)
@click.option(
    "--cron-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where --install writes the cron file without systemd. Default: /etc/cron.d.",
)
def schedule(install: bool, unit_dir: Path | None, cron_dir: Path | None, **options: Any) -> None:
    """Print (or --install) a systemd timer and service, and the equivalent cron job, that
    run the drill unattended, in the current directory."""
    from restore_tests import schedule as scheduling
    from restore_tests.history.store import resolve_url

    options["db_url"] = resolve_url(options["db_url"])
    program = scheduling.program_command()
    request = scheduling.ScheduleRequest(directory=Path.cwd(), program=program, **options)
    plan = scheduling.plan_schedule(request)
    for note in plan.notes:
        click.echo(f"note: {note}", err=True)
    if not install:
        click.echo(scheduling.as_text(plan, unit_dir, cron_dir), nl=False)
        return
    for line in scheduling.install(plan, scheduling.systemd_is_init(), unit_dir, cron_dir):
        click.echo(line)


if __name__ == "__main__":
    main()
