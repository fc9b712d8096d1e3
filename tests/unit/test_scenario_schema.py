"""The JSON Schema printed by `restore-tests schema` agrees with the loader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from restore_tests.scenario import json_schema, load_file
from runners import RUNNERS

# jsonschema is not among the project's test dependencies: without it these tests are skipped
# (and say so in the -ra summary) rather than failing on an import.
jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is not installed")

# Every field of the format, each written the way the documentation shows it.
COMPLETE_EXAMPLE = """\
name: file-share
description: The accounting share of fs01
kind: files
tags: [quarterly, client-acme]
source:
  type: restic
  repository: s3:https://s3.example.net/acme-backups/fileshare
  password_env: SHARE_RESTIC_PASSWORD
  env_from: [AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY]
  snapshot:
    tags: [nightly]
    host: fs01
    path: /srv/share
  include: [/data/compta]
  restic_binary: /usr/local/bin/restic-0.18
  verify: true
objectives:
  rto: 15m
  rpo: 26h
sandbox:
  image: restore-tests/sandbox:bookworm
  memory: 2g
  pids: 128
  cpus: 2
  commands:
    - [sh, -c, "find /restore -name '*.zip' -exec unzip -tq {} +"]
  command_timeout: 10m
verify:
  manifest: /data/compta/SHA256SUMS
  checksums:
    /data/compta/ledger.xlsx: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
  expect:
    min_files: 1000
    min_bytes: 1g
    paths: [/data/compta/ledger.xlsx]
"""


def validator() -> Any:
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def kinds_in(schema: dict[str, Any]) -> set[str]:
    """The `kind` constants of a one-kind schema or of each branch of a many-kind schema."""
    branches = [schema, *schema.get("oneOf", []), *schema.get("$defs", {}).values()]
    return {
        branch["properties"]["kind"]["const"]
        for branch in branches
        if "const" in branch.get("properties", {}).get("kind", {})
    }


def test_the_schema_lists_every_registered_kind() -> None:
    assert kinds_in(json_schema()) == set(RUNNERS)


def test_the_schema_documents_the_fields_with_their_descriptions() -> None:
    schema = json_schema()
    definitions = schema["$defs"]

    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["discriminator"]["propertyName"] == "kind"
    assert definitions["FilesScenario"]["properties"]["name"]["description"] == (
        "Unique name, used on the command line and in the history."
    )
    assert definitions["ResticSettings"]["properties"]["repository"]["description"].startswith(
        "Repository location: a local path (relative to the scenario file's folder)"
    )
    assert definitions["Objectives"]["properties"]["rto"]["description"].startswith(
        "Recovery time objective"
    )
    assert definitions["FilesVerify"]["properties"]["manifest"]["description"].startswith(
        "A sha256sum-format file inside the snapshot"
    )
    assert definitions["SqliteScenario"]["properties"]["database"]["$ref"] == (
        "#/$defs/SqliteDatabase"
    )
    assert definitions["Query"]["properties"]["fresher_than"]["description"].startswith(
        "It returns a time"
    )


def test_a_complete_example_scenario_is_valid_for_both_the_loader_and_the_schema(
    tmp_path: Path,
) -> None:
    path = tmp_path / "file-share.yaml"
    path.write_text(COMPLETE_EXAMPLE)

    [scenario] = load_file(path)
    errors = [error.message for error in validator().iter_errors(yaml.safe_load(COMPLETE_EXAMPLE))]

    assert scenario.name == "file-share"
    assert errors == []


def test_a_minimal_scenario_with_a_snapshot_id_is_valid_against_the_schema() -> None:
    document = {
        "name": "share",
        "kind": "files",
        "source": {
            "type": "restic",
            "repository": "repos/share",
            "password_file": "share.pass",
            "snapshot": "4f2c1a9e",
        },
        "verify": {"manifest": "/data/compta/SHA256SUMS"},
    }

    assert [error.message for error in validator().iter_errors(document)] == []


def test_the_schema_rejects_a_misspelled_field_as_the_loader_does() -> None:
    document = yaml.safe_load(COMPLETE_EXAMPLE)
    document["verify"]["expect"]["min_filez"] = document["verify"]["expect"].pop("min_files")

    errors = list(validator().iter_errors(document))

    # One error: no kind's branch accepts it; the files branch says why.
    assert len(errors) == 1
    assert jsonschema.exceptions.best_match(errors).message == (
        "Additional properties are not allowed ('min_filez' was unexpected)"
    )


def test_a_duration_given_in_seconds_is_accepted_by_the_schema_as_by_the_loader(
    tmp_path: Path,
) -> None:
    text = COMPLETE_EXAMPLE.replace("rto: 15m", "rto: 900")
    path = tmp_path / "file-share.yaml"
    path.write_text(text)

    [scenario] = load_file(path)
    assert scenario.objectives.rto == 900

    assert [error.message for error in validator().iter_errors(yaml.safe_load(text))] == []
