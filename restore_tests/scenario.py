"""Scenario files: YAML -> validated, typed Scenario objects.

Every problem in a file is reported at once, each with its file, line and field path. The models
below are the one place where the format is documented: `restore-tests schema` prints them as JSON
Schema. Each restore kind contributes its own `verify` model from the runner registry.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    create_model,
    model_validator,
)

from restore_tests.errors import Problem, ScenarioError
from restore_tests.model import (
    Duration,
    Size,
    StrictModel,
)
from restore_tests.sources.base import SourceSettings
from restore_tests.timing import DEFAULT_EVERY_SECONDS
from restore_tests.yaml_documents import (
    AliasExpansion,
    ScenarioLoader,
    compose_documents,
    field_path,
    read_text,
    record_lines,
    yaml_problem,
)

SCENARIO_SUFFIXES = (".yaml", ".yml")
# Fields that moved: the error says where they went.
MOVED_FIELDS = {
    "restic_verify": "moved: write `verify: true` in the source section (type: restic): restic "
    "restore --verify belongs to the restic source"
}
NAME_MAX_LENGTH = 64
# Fields that reference a secret: their values are never repeated in a message.
SECRET_REFERENCES = ("password_env", "password_file", "password_command", "env_from")
# Keys that would hold a literal secret. They are never part of the format: a secret is referenced.
SECRET_KEYS = {
    "password",
    "passwd",
    "secret",
    "secret_key",
    "secret_access_key",
    "aws_secret_access_key",
    "access_key",
    "access_key_id",
    "aws_access_key_id",
    "token",
    "session_token",
    "restic_password",
}
SECRET_HINT = (
    "a literal secret is not allowed in a scenario file; reference it instead with "
    "password_env: VARIABLE, password_file: PATH or password_command: [program, args...] "
    "(S3 credentials: env_from: [AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY])"
)


class Objectives(StrictModel):
    """Recovery objectives; each one is judged when given."""

    rto: Duration | None = Field(
        None,
        description="Recovery time objective: fetch + sandbox + "
        "load + verify must take at most this long.",
        examples=["15m"],
    )
    rpo: Duration | None = Field(
        None,
        description="Recovery point objective: the restored snapshot may be at most this old.",
        examples=["26h"],
    )
    rto_applies_to: Literal["restored", "full"] = Field(
        "restored",
        description="What the RTO is held against: the restore as run (`restored`), or, when "
        "`include:` restores a subset, the full restore projected from the measured throughput "
        "and the restore point's total size (`full`; needs `rto`). The projection scales "
        "fetch, load and verify by full size / restored size and adds sandbox and boot "
        "unscaled; without a subset the measured RTO is the full one.",
        examples=["full"],
    )

    @model_validator(mode="after")
    def _full_needs_an_rto(self) -> Objectives:
        if self.rto_applies_to == "full" and self.rto is None:
            raise ValueError("rto_applies_to: full needs an rto to hold the projection against")
        return self


class SandboxSettings(StrictModel):
    """The isolated container the restored data is opened in (no network, no capabilities)."""

    image: str | None = Field(
        None,
        description="Docker image (built locally; the kind's default when omitted).",
        examples=["restore-tests/sandbox:bookworm"],
    )
    memory: Size = Field(512 * 1024**2, description="Memory limit.", examples=["512m", "2g"])
    pids: int = Field(256, ge=16, description="Maximum number of processes.")
    cpus: float = Field(1.0, gt=0, description="CPU limit in cores.")
    commands: list[Annotated[list[str], Field(min_length=1)]] = Field(
        default_factory=list,
        description="Checks run inside the sandbox (argv lists); the "
        "restored data is at /restore, read-only. Each must exit 0.",
        examples=[[["sh", "-c", "find /restore -name '*.zip' -exec unzip -tq {} +"]]],
    )
    command_timeout: Duration = Field(
        600.0, description="Time limit of each command.", examples=["10m"]
    )


class ScenarioBase(StrictModel):
    """What every scenario has, whatever its kind."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        max_length=NAME_MAX_LENGTH,
        description="Unique name, used on the command line and in the history.",
        examples=["file-share"],
    )
    description: str = Field("", description="What this backup is, for the report.")
    kind: str = Field(description="What is restored; decides the verify section.")
    tags: list[Annotated[str, Field(pattern=r"^[^,\s]+$", max_length=64)]] = Field(
        default_factory=list,
        description="Labels to select scenarios with --tag (no commas or spaces).",
        examples=[["quarterly", "client-acme"]],
    )
    client: str = Field(
        "", max_length=128, description="Who the backup belongs to; views group and filter by it."
    )
    owner: str = Field(
        "", max_length=128, description="Who answers for this scenario (a team, a person)."
    )
    every: Duration = Field(
        DEFAULT_EVERY_SECONDS,
        description="How often it must be proven: without a pass within this interval the "
        "scenario is OVERDUE.",
        examples=["92d", "30d", "7d"],
    )
    source: SourceSettings = Field(
        description="Where the backup comes from; `type` decides the other fields."
    )
    objectives: Objectives = Field(default_factory=lambda: Objectives())
    sandbox: SandboxSettings = Field(default_factory=lambda: SandboxSettings())

    _origin: Origin | None = PrivateAttr(None)

    @property
    def origin(self) -> Origin:
        assert self._origin is not None, "scenario was not loaded from a file"
        return self._origin


@dataclass(frozen=True)
class Origin:
    """Where a scenario came from: its file, line, and a hash of its content."""

    path: Path
    line: int
    content_sha256: str

    @property
    def folder(self) -> Path:
        return self.path.parent


Scenario = ScenarioBase  # a scenario of any kind; runners narrow `verify`


def scenario_model(kind: str) -> type[ScenarioBase]:
    """The model of one kind: the common fields, the runner's own verify section, and the
    union of every registered source's settings (discriminated by `type`)."""
    from restore_tests.sources import SOURCES
    from runners import RUNNERS

    runner = RUNNERS[kind]
    key = (kind, runner, *SOURCES.values())
    if key not in _scenario_model_cache:
        fields: dict[str, Any] = {
            "kind": (Literal[kind], Field(description="What is restored.")),
            "source": (_union([source.settings_model for source in SOURCES.values()], "type"), ...),
            "verify": (runner.verify_model, Field(description="Checks run on the restored data.")),
            **runner.sections,  # the kind's own sections (a database's `database:`)
        }
        _scenario_model_cache[key] = create_model(
            f"{runner.__name__.removesuffix('Runner')}Scenario",
            __base__=ScenarioBase,
            __doc__=runner.__doc__,
            **fields,
        )
    return _scenario_model_cache[key]


_scenario_model_cache: dict[tuple[Any, ...], type[ScenarioBase]] = {}


def _union(models: list[Any], discriminator: str) -> Any:
    """One model, or a union of them told apart by the discriminator field."""
    if len(models) == 1:
        return models[0]
    return Annotated[Union[tuple(models)], Field(discriminator=discriminator)]  # noqa: UP007


def json_schema() -> dict[str, Any]:
    """JSON Schema of one scenario document, every kind and every source included."""
    from runners import RUNNERS

    union = _union([scenario_model(kind) for kind in RUNNERS], "kind")
    schema = TypeAdapter(union).json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "restore-tests scenario"
    return schema


# ---------------------------------------------------------------------------------------------
# Loading


def load_paths(paths: Iterable[str | Path]) -> list[ScenarioBase]:
    """Load every scenario from files and folders (recursively *.yaml / *.yml).

    Raises ScenarioError listing every problem in every file, and for duplicate names.
    """
    problems: list[Problem] = []
    scenarios: list[ScenarioBase] = []
    for file in _scenario_files(paths, problems):
        try:
            scenarios.extend(load_file(file))
        except ScenarioError as error:
            problems.extend(error.problems)
    seen: dict[str, ScenarioBase] = {}
    for scenario in scenarios:
        first = seen.setdefault(scenario.name, scenario)
        if first is not scenario:
            problems.append(
                Problem(
                    str(scenario.origin.path),
                    scenario.origin.line,
                    "name",
                    f"duplicate scenario name {scenario.name!r} (also in "
                    f"{first.origin.path}:{first.origin.line})",
                )
            )
    if problems:
        raise ScenarioError(problems)
    return scenarios


def _scenario_files(paths: Iterable[str | Path], problems: list[Problem]) -> list[Path]:
    files: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*") if p.suffix in SCENARIO_SUFFIXES and p.is_file()
            )
            if not found:
                problems.append(Problem(str(path), None, "", "no scenario files (*.yaml) here"))
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            problems.append(Problem(str(path), None, "", "no such file or folder"))
    return files


def load_file(path: Path) -> list[ScenarioBase]:
    """Every scenario document in one YAML file, validated."""
    documents = compose_documents(path, read_text(path))
    problems: list[Problem] = []
    scenarios: list[ScenarioBase] = []
    for node in documents:
        if node is None or (isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")):
            continue  # an empty document (a trailing or doubled ---)
        scenario = _load_document(node, path, problems)
        if scenario is not None:
            scenarios.append(scenario)
    if problems:
        raise ScenarioError(sorted(problems, key=lambda problem: problem.line or 0))
    if not scenarios:
        raise ScenarioError([Problem(str(path), None, "", "the file holds no scenario")])
    return scenarios


def _load_document(node: yaml.Node, path: Path, problems: list[Problem]) -> ScenarioBase | None:
    lines: dict[tuple[Any, ...], int] = {}
    try:
        AliasExpansion(node).check()  # before any walk that would follow aliases
        record_lines(node, (), lines, problems, path)
        data = ScenarioLoader("").construct_document(node)  # plain data, same node tree
    except yaml.YAMLError as error:
        problems.append(yaml_problem(path, error))
        return None
    return _validate(data, path, lines, problems)


def _validate(
    data: Any, path: Path, lines: dict[tuple[Any, ...], int], problems: list[Problem]
) -> ScenarioBase | None:
    from runners import RUNNERS

    def problem(at: tuple[Any, ...], message: str) -> None:
        problems.append(Problem(str(path), _line(lines, at), field_path(at), message))

    if not isinstance(data, dict):
        problem((), "a scenario is a mapping of fields (name, kind, source, ...)")
        return None
    secrets = _literal_secrets(data, ())
    for at in secrets:
        problem(at, SECRET_HINT)
    kind = data.get("kind")
    if kind not in RUNNERS:
        problem(
            ("kind",) if "kind" in data else (),
            f"unknown kind {kind!r}; expected one of: {', '.join(RUNNERS)}"
            if kind
            else f"required field 'kind' is missing; expected one of: {', '.join(RUNNERS)}",
        )
        return None
    try:
        scenario = scenario_model(kind).model_validate(data)
    except ValidationError as error:
        for item in error.errors():
            at = _data_path(data, item["loc"], item["type"] in ("missing", "extra_forbidden"))
            if item["type"] == "extra_forbidden" and at in secrets:
                continue
            problem(at, _message(item, data, at))
        return None
    scenario._origin = Origin(path.resolve(), _line(lines, ()) or 1, _content_hash(data))
    return resolve_paths(scenario)


def _literal_secrets(data: Any, at: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    found: list[tuple[Any, ...]] = []
    if isinstance(data, dict):
        for key, value in data.items():
            if isinstance(key, str) and key.lower() in SECRET_KEYS:
                found.append((*at, key))
            found.extend(_literal_secrets(value, (*at, key)))
    elif isinstance(data, list):
        for index, item in enumerate(data):
            found.extend(_literal_secrets(item, (*at, index)))
    return found


def _data_path(data: Any, loc: tuple[Any, ...], names_a_field: bool) -> tuple[Any, ...]:
    """Pydantic's error location minus union tags: the path as written in the file.

    The last element is kept when it is absent from the data only if it names a field (a
    missing or an unknown one); otherwise it is a union tag such as `restic`.
    """
    at: list[Any] = []
    current = data
    for index, part in enumerate(loc):
        if (isinstance(current, dict) and part in current) or (
            isinstance(current, list) and isinstance(part, int) and part < len(current)
        ):
            current = current[part]
            at.append(part)
        elif names_a_field and index == len(loc) - 1 and isinstance(part, str):
            at.append(part)  # a missing field: name it
    return tuple(at)


def _message(item: Any, data: Any, at: tuple[Any, ...]) -> str:
    kind = item["type"]
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return MOVED_FIELDS.get(at[-1] if at else "", "unknown field")
    message = str(item["msg"])
    if kind == "string_type" and isinstance(item.get("input"), (int, float)):
        if _references_a_secret(at):
            return "expected text; write it in quotes (not shown: it may be a secret)"
        return f"expected text; write it in quotes: '{item['input']}'"
    return message.removeprefix("Value error, ")


def _references_a_secret(at: tuple[Any, ...]) -> bool:
    return len(at) >= 2 and at[0] == "source" and at[1] in SECRET_REFERENCES


def _line(lines: dict[tuple[Any, ...], int], at: tuple[Any, ...]) -> int | None:
    while at not in lines and at:
        at = at[:-1]
    return lines.get(at)


def _content_hash(data: Any) -> str:
    canonical = yaml.safe_dump(data, sort_keys=True).encode()
    return hashlib.sha256(canonical).hexdigest()


def resolve_paths(scenario: ScenarioBase) -> ScenarioBase:
    """Relative local paths resolve against the scenario file's folder, not the cwd (each
    source knows which of its fields are paths)."""
    source = scenario.source.resolved(scenario.origin.folder)
    if source is scenario.source:
        return scenario
    resolved = scenario.model_copy(update={"source": source})
    resolved._origin = scenario._origin
    return resolved


def find_scenarios(arguments: list[str], folder: Path) -> list[ScenarioBase]:
    """Scenarios named on the command line: a file or folder path, or a scenario name in folder.

    A broken file elsewhere in the folder does not stop a lookup by name that it does not hold.
    """
    found: list[ScenarioBase] = []
    by_name: dict[str, ScenarioBase] | None = None
    problems: list[Problem] = []
    for argument in arguments:
        if Path(argument).exists():
            found.extend(load_paths([argument]))
            continue
        if by_name is None:
            by_name = {}
            for file in _scenario_files([folder], problems) if folder.is_dir() else []:
                try:
                    for scenario in load_file(file):
                        first = by_name.setdefault(scenario.name, scenario)
                        if first is not scenario:
                            problems.append(
                                Problem(
                                    str(file),
                                    scenario.origin.line,
                                    "name",
                                    f"duplicate scenario name {scenario.name!r} (also in "
                                    f"{first.origin.path}:{first.origin.line})",
                                )
                            )
                except ScenarioError as error:
                    problems.extend(error.problems)
        duplicated = [
            p for p in problems if p.message.startswith(f"duplicate scenario name {argument!r}")
        ]
        if duplicated:
            raise ScenarioError(duplicated)
        if argument not in by_name:
            known = ", ".join(sorted(by_name)) or "none"
            raise ScenarioError(
                [
                    *problems,
                    Problem(
                        argument,
                        None,
                        "",
                        f"no such file, and no scenario of that name in {folder} (known: {known})",
                    ),
                ]
            )
        found.append(by_name[argument])
    return found
