"""The building blocks of the scenario format, shared by the scenario, every source and every
runner: strict models, durations, sizes, snapshot paths, variable names.

It imports nothing of the project but timing, so that sources and runners can define their own
models without an import circle through scenario.py.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from restore_tests.timing import parse_duration, parse_size

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
NOT_A_VARIABLE_NAME = (
    "holds something that is not an environment variable name (not shown: it may be a "
    "secret); write the name of the variable that holds the value, like SHARE_RESTIC_PASSWORD"
)


def _duration(value: Any) -> Any:
    return parse_duration(value) if isinstance(value, str) else value


def _size(value: Any) -> Any:
    return (
        parse_size(value)
        if isinstance(value, (str, int)) and not isinstance(value, bool)
        else value
    )


Duration = Annotated[
    float,
    BeforeValidator(_duration),
    Field(gt=0),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^(\d+(\.\d+)?[smhdw])+$"},
                {"type": "number", "exclusiveMinimum": 0},
            ],
            "description": "A duration: 90s, 15m, 4h, 7d, 1h30m, or seconds.",
            "examples": ["90s", "15m", "4h", "7d"],
        }
    ),
]
Size = Annotated[
    int,
    BeforeValidator(_size),
    Field(ge=0),
    WithJsonSchema({"type": ["string", "integer"], "examples": ["512m", "2g", 1048576]}),
]


def snapshot_path(value: str) -> str:
    """A path inside the snapshot, as restic shows it: absolute and without `..`.

    `.` and empty components (`//`, a trailing `/`) are dropped: `/data//./compta/` is
    `/data/compta`. A `..` could reach outside the restore root, so it is refused.
    """
    if not value.startswith("/"):
        raise ValueError(f"{value!r}: give the path as it is in the snapshot, starting with /")
    if "\0" in value:
        raise ValueError(f"{value!r}: a NUL character is not allowed in a snapshot path")
    parts = value.split("/")
    if ".." in parts:
        raise ValueError(f"{value!r}: '..' is not allowed in a snapshot path")
    return "/" + "/".join(part for part in parts if part not in ("", "."))


SnapshotPath = Annotated[
    str,
    AfterValidator(snapshot_path),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^/",
            "description": "A path as in the snapshot (restic ls), starting with /; `..` is "
            "not allowed, `.` and empty components are dropped.",
        }
    ),
]


def _variable_name(value: str) -> str:
    if not ENV_NAME.match(value):
        raise ValueError(NOT_A_VARIABLE_NAME)  # the value is not repeated: it may be the secret
    return value


VariableName = Annotated[
    str,
    AfterValidator(_variable_name),
    WithJsonSchema({"type": "string", "pattern": ENV_NAME.pattern}),
]


class StrictModel(BaseModel):
    """Unknown fields are errors: a typo must not silently disable a check."""

    model_config = ConfigDict(extra="forbid", frozen=True)
