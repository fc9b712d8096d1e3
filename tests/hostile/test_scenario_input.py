"""Hostile or broken scenario files: refused quickly with file:line, never a crash, never a leak.

An alias bomb, a file nested tens of thousands deep, a huge file, a value the YAML loader cannot
build, a secret typed where a reference belonged, a path that climbs out of the restore root:
each is one line "invalid scenario: FILE:LINE: field: reason", exit code 2, and nothing is run.
"""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest

from restore_tests.errors import ScenarioError
from restore_tests.model import NOT_A_VARIABLE_NAME, snapshot_path
from restore_tests.scenario import load_file, load_paths
from restore_tests.yaml_documents import FILE_TOO_LARGE, TOO_DEEP, TOO_MANY_NODES
from tests.conftest import run_cli

SCENARIO = """\
name: share
kind: files
source:
  type: restic
  repository: repos/share
  password_env: SHARE_RESTIC_PASSWORD
verify:
  manifest: /data/compta/SHA256SUMS
"""
# A "billion laughs": 9 lists of 9 aliases to the list above, 9**9 strings once expanded.
ALIAS_BOMB = 'lol1: &lol1 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"lol{level}: &lol{level} [{', '.join([f'*lol{level - 1}'] * 9)}]\n" for level in range(2, 10)
)


def write(folder: Path, text: str, file_name: str = "scenario.yaml") -> Path:
    path = folder / file_name
    path.write_text(text)
    return path


def problems_of(error: pytest.ExceptionInfo[ScenarioError]) -> list[tuple[int | None, str, str]]:
    return [(problem.line, problem.field, problem.message) for problem in error.value.problems]


def refused(path: Path, within: float = 2.0) -> list[tuple[int | None, str, str]]:
    """The problems load_file reports, after checking that it took at most `within` seconds
    (each case takes under half a second here; the margin is for a busy machine)."""
    started = time.monotonic()
    with pytest.raises(ScenarioError) as error:
        load_file(path)
    assert time.monotonic() - started < within
    return problems_of(error)


# -- alias bombs and their neighbours ---------------------------------------------------------


def test_an_alias_bomb_is_refused_within_a_second_at_the_line_where_it_explodes(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, SCENARIO + ALIAS_BOMB)

    # lol5 is the first list larger than the bound once expanded (9**4 strings): its line.
    assert refused(path, within=1.0) == [(13, "", TOO_MANY_NODES)]
    assert TOO_MANY_NODES == (
        "this document holds more than 10,000 YAML nodes once its aliases are expanded "
        "(an alias bomb?); a scenario needs a few dozen"
    )


def test_an_alias_bomb_made_of_merge_keys_is_refused_as_well(tmp_path: Path) -> None:
    levels = "".join(
        f"m{level}: &m{level} {{<<: [*m{level - 1}, *m{level - 1}], k{level}: {level}}}\n"
        for level in range(1, 40)
    )
    path = write(tmp_path, SCENARIO + "m0: &m0 {a: 1, b: 2}\n" + levels)

    # Each level doubles: m9 (line 18, 5,115 nodes once merged) takes the document past 10,000.
    assert refused(path, within=1.0) == [(18, "", TOO_MANY_NODES)]


def test_an_alias_to_the_node_that_holds_it_is_refused_rather_than_recursing_forever(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, SCENARIO + "loop: &loop [1, *loop]\n")

    assert refused(path) == [
        (9, "", "an alias refers to a node that holds it: it would expand forever")
    ]


def test_a_few_aliases_that_stay_small_are_still_allowed(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        SCENARIO.replace("name: share", "name: first").replace(
            "kind: files\n", "kind: files\ntags: &tags [quarterly, client-acme]\n"
        )
        + "sandbox: &sandbox {memory: 1g, pids: 64}\n",
    )

    [scenario] = load_file(path)

    assert scenario.tags == ["quarterly", "client-acme"]
    assert scenario.sandbox.pids == 64


def test_a_document_of_more_than_10000_nodes_is_refused_even_without_aliases(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, SCENARIO + "tags: [" + "t, " * 10_000 + "t]\n")

    assert refused(path) == [(9, "", TOO_MANY_NODES)]


def test_a_file_of_more_than_20000_nodes_is_refused_while_it_is_read(tmp_path: Path) -> None:
    document = SCENARIO + "tags: [" + "t, " * 5_000 + "t]\n"
    path = write(tmp_path, "---\n".join([document] * 5))

    # Documents of ~5,000 nodes: the fourth one's list (line 39) passes 20,000.
    assert refused(path, within=5.0) == [(39, "", FILE_TOO_LARGE)]
    assert FILE_TOO_LARGE == (
        "the file holds more than 20,000 YAML nodes; a scenario needs a few dozen: split the file"
    )


# -- nesting, size --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nested", "line"),
    [
        ("deep: " + "[" * 50_000 + "]" * 50_000 + "\n", 9),
        ("deep: " + "{a: " * 50_000 + "}" * 50_000 + "\n", 9),
        ("deep:\n" + "".join(" " * (indent + 2) + "- \n" for indent in range(60)), 59),
    ],
    ids=["flow lists", "flow mappings", "block lists"],
)
def test_yaml_nested_tens_of_thousands_deep_is_refused_as_too_deep_not_a_crash(
    tmp_path: Path, nested: str, line: int
) -> None:
    path = write(tmp_path, SCENARIO + nested)

    assert refused(path) == [(line, "", TOO_DEEP)]
    assert TOO_DEEP == "nested more than 50 levels deep; a scenario needs far fewer"


def test_nesting_that_only_aliases_make_deep_is_refused_as_too_deep(tmp_path: Path) -> None:
    forty = "[" * 40 + "1" + "]" * 40
    path = write(tmp_path, SCENARIO + f"a: &a {forty}\nb: &b {forty.replace('1', '*a')}\nc: *b\n")

    assert refused(path) == [(10, "", TOO_DEEP)]


def test_a_file_larger_than_1_mib_is_refused_before_parsing_with_its_size(tmp_path: Path) -> None:
    path = tmp_path / "scenario.yaml"
    path.write_bytes(SCENARIO.encode().ljust(2 * 1024**2, b"#"))

    assert refused(path, within=1.0) == [
        (
            None,
            "",
            "the file holds 2,097,152 bytes, more than the 1,048,576 (1 MiB) a scenario file "
            "may hold; it was not read",
        )
    ]


def test_a_huge_file_in_a_folder_of_scenarios_is_refused_without_being_read(
    tmp_path: Path,
) -> None:
    write(tmp_path, SCENARIO, "share.yaml")
    huge = tmp_path / "huge.yaml"
    with open(huge, "wb") as stream:
        stream.truncate(50 * 1024**3)  # sparse: reading it would take minutes and 50 GiB

    started = time.monotonic()
    with pytest.raises(ScenarioError) as error:
        load_paths([tmp_path])

    assert time.monotonic() - started < 1.0
    assert [str(problem) for problem in error.value.problems] == [
        f"{huge}: the file holds 53,687,091,200 bytes, more than the 1,048,576 (1 MiB) a "
        "scenario file may hold; it was not read"
    ]


# -- values the YAML loader cannot build ----------------------------------------------------


def test_a_value_that_reads_as_an_impossible_date_is_a_problem_at_its_line(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, SCENARIO.replace("kind: files\n", "kind: files\nwhen: 2024-99-99\n"))

    assert refused(path) == [
        (
            3,
            "",
            "invalid YAML: this value reads as a YAML timestamp but is not a valid one; "
            "put it in quotes to keep it as text",
        )
    ]


def test_a_value_forced_to_a_type_it_is_not_is_refused_without_repeating_it(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        SCENARIO.replace("password_env: SHARE_RESTIC_PASSWORD", "password_env: !!float hunter22"),
    )

    with pytest.raises(ScenarioError) as error:
        load_file(path)

    assert problems_of(error) == [
        (
            6,
            "",
            "invalid YAML: this value reads as a YAML float but is not a valid one; "
            "put it in quotes to keep it as text",
        )
    ]
    assert "hunter22" not in str(error.value)


def test_a_list_used_as_a_key_is_a_problem_at_its_line_not_a_crash(tmp_path: Path) -> None:
    path = write(tmp_path, SCENARIO + "? [a, b]\n: 1\n")

    assert refused(path) == [(9, "", "invalid YAML: found unhashable key")]


def test_a_control_character_is_reported_on_one_line_with_its_line_number(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, SCENARIO.replace("repos/share", "repos/\x00share"))

    assert refused(path) == [
        (5, "", "invalid YAML: unacceptable character #x0000: special characters are not allowed")
    ]


# -- secret references never repeat their value ---------------------------------------------


@pytest.mark.parametrize(
    ("reference", "line", "field", "message"),
    [
        ("password_env: 'Tr0ub4dor&3x'", 6, "source.password_env", NOT_A_VARIABLE_NAME),
        (
            "password_env: 73914862",
            6,
            "source.password_env",
            "expected text; write it in quotes (not shown: it may be a secret)",
        ),
        (
            "password_file: 73914862",
            6,
            "source.password_file",
            "expected text; write it in quotes (not shown: it may be a secret)",
        ),
        (
            "password_command: [vault-get, --pin, 73914862]",
            6,
            "source.password_command[2]",
            "expected text; write it in quotes (not shown: it may be a secret)",
        ),
        (
            "password_env: SHARE_RESTIC_PASSWORD\n  env_from: [AWS_ACCESS_KEY_ID, 'Tr0ub4dor&3x']",
            7,
            "source.env_from[1]",
            NOT_A_VARIABLE_NAME,
        ),
        (
            "password_env: SHARE_RESTIC_PASSWORD\n  env_from: [73914862]",
            7,
            "source.env_from[0]",
            "expected text; write it in quotes (not shown: it may be a secret)",
        ),
    ],
    ids=[
        "password_env text",
        "password_env number",
        "password_file number",
        "password_command argument",
        "env_from text",
        "env_from number",
    ],
)
def test_a_secret_reference_field_never_repeats_its_value_in_a_problem(
    tmp_path: Path, reference: str, line: int, field: str, message: str
) -> None:
    path = write(tmp_path, SCENARIO.replace("password_env: SHARE_RESTIC_PASSWORD", reference))

    with pytest.raises(ScenarioError) as error:
        load_file(path)

    assert problems_of(error) == [(line, field, message)]
    assert "Tr0ub4dor" not in str(error.value) and "73914862" not in str(error.value)


def test_a_password_typed_into_password_env_is_not_echoed_by_validate(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        SCENARIO.replace(
            "password_env: SHARE_RESTIC_PASSWORD", "password_env: 'correct horse battery staple'"
        ),
    )

    result = run_cli("validate", str(path))

    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"invalid scenario: {path}:6: source.password_env: {NOT_A_VARIABLE_NAME}"
    ]
    assert "correct horse" not in result.stdout + result.stderr
    assert NOT_A_VARIABLE_NAME == (
        "holds something that is not an environment variable name (not shown: it may be a "
        "secret); write the name of the variable that holds the value, like SHARE_RESTIC_PASSWORD"
    )


# -- names ----------------------------------------------------------------------------------


def test_a_name_of_64_characters_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, SCENARIO.replace("name: share", "name: " + "n" * 64))

    [scenario] = load_file(path)

    assert scenario.name == "n" * 64


def test_a_name_longer_than_64_characters_is_refused_with_the_limit(tmp_path: Path) -> None:
    path = write(tmp_path, SCENARIO.replace("name: share", "name: " + "n" * 230))

    assert refused(path) == [(1, "name", "String should have at most 64 characters")]


# -- paths the scenario names -----------------------------------------------------------------

PATH_FIELDS = {
    "verify.manifest": ("  manifest: /data/compta/SHA256SUMS\n", "  manifest: {path}\n", 8),
    "verify.checksums": (
        "  manifest: /data/compta/SHA256SUMS\n",
        "  checksums: {{'{path}': " + "ab" * 32 + "}}\n",
        8,
    ),
    "verify.expect.paths[0]": (
        "  manifest: /data/compta/SHA256SUMS\n",
        "  manifest: /data/compta/SHA256SUMS\n  expect: {{paths: ['{path}']}}\n",
        9,
    ),
    "source.include[0]": (
        "  type: restic\n",
        "  type: restic\n  include: ['{path}']\n",
        5,
    ),
}


def with_path(field: str, path: str) -> str:
    original, replacement, _ = PATH_FIELDS[field]
    return SCENARIO.replace(original, replacement.format(path=path))


@pytest.mark.parametrize("field", sorted(PATH_FIELDS))
def test_a_snapshot_path_that_climbs_with_dot_dot_is_refused_at_its_field_and_line(
    tmp_path: Path, field: str
) -> None:
    path = write(tmp_path, with_path(field, "/data/../../etc/passwd"))

    assert refused(path) == [
        (
            PATH_FIELDS[field][2],
            field,
            "'/data/../../etc/passwd': '..' is not allowed in a snapshot path",
        )
    ]


@pytest.mark.parametrize("field", sorted(PATH_FIELDS))
def test_a_snapshot_path_must_start_with_a_slash(tmp_path: Path, field: str) -> None:
    path = write(tmp_path, with_path(field, "data/compta/ledger.xlsx"))

    assert refused(path) == [
        (
            PATH_FIELDS[field][2],
            field,
            "'data/compta/ledger.xlsx': give the path as it is in the snapshot, starting with /",
        )
    ]


@pytest.mark.parametrize("field", sorted(PATH_FIELDS))
def test_dot_and_empty_components_of_a_snapshot_path_are_dropped(
    tmp_path: Path, field: str
) -> None:
    [scenario] = load_file(write(tmp_path, with_path(field, "/data//./compta/")))

    verify = scenario.verify  # type: ignore[attr-defined]
    written = {
        "verify.manifest": lambda: verify.manifest,
        "verify.checksums": lambda: next(iter(verify.checksums)),
        "verify.expect.paths[0]": lambda: verify.expect.paths[0],
        "source.include[0]": lambda: scenario.source.include[0],
    }[field]()
    assert written == "/data/compta"


def test_two_checksums_naming_the_same_file_are_refused_rather_than_one_dropped(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        SCENARIO.replace(
            "  manifest: /data/compta/SHA256SUMS\n",
            textwrap.indent(
                "checksums:\n"
                f"  /data/compta/ledger.xlsx: {'ab' * 32}\n"
                f"  /data//compta/ledger.xlsx: {'cd' * 32}\n",
                "  ",
            ),
        ),
    )

    assert refused(path) == [
        (
            8,
            "verify.checksums",
            "'/data/compta/ledger.xlsx' and '/data//compta/ledger.xlsx' name the same file",
        )
    ]


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ("/data/..", "'/data/..': '..' is not allowed in a snapshot path"),
        ("/..", "'/..': '..' is not allowed in a snapshot path"),
        ("/data/a..b/..", "'/data/a..b/..': '..' is not allowed in a snapshot path"),
        ("/data/\x00/x", "'/data/\\x00/x': a NUL character is not allowed in a snapshot path"),
        ("", "'': give the path as it is in the snapshot, starting with /"),
    ],
)
def test_snapshot_path_refuses_what_could_leave_the_restore_root(
    written: str, message: str
) -> None:
    with pytest.raises(ValueError) as error:
        snapshot_path(written)

    assert str(error.value) == message


@pytest.mark.parametrize(
    ("written", "normal"),
    [
        ("/data/compta", "/data/compta"),
        ("/data/a..b/c", "/data/a..b/c"),
        ("/data/.hidden", "/data/.hidden"),
        ("//data///compta/./", "/data/compta"),
        ("/", "/"),
    ],
)
def test_snapshot_path_keeps_names_and_drops_dot_and_empty_components(
    written: str, normal: str
) -> None:
    assert snapshot_path(written) == normal


# -- through the command line ---------------------------------------------------------------


@pytest.mark.parametrize("command", ["validate", "check"])
def test_an_alias_bomb_given_to_the_command_line_exits_2_with_one_line_per_problem(
    tmp_path: Path, command: str
) -> None:
    path = write(tmp_path, SCENARIO + ALIAS_BOMB)
    other = write(tmp_path, SCENARIO + "deep: " + "[" * 50_000 + "\n", "deep.yaml")
    arguments = [str(path), str(other)] if command == "validate" else [str(path)]

    started = time.monotonic()
    result = run_cli(command, *arguments, env={"RESTORE_TESTS_DB": "sqlite:///:memory:"})

    assert time.monotonic() - started < 10  # a second of work; the rest is the interpreter
    assert result.returncode == 2
    expected = [f"invalid scenario: {path}:13: {TOO_MANY_NODES}"]
    if command == "validate":
        expected.append(f"invalid scenario: {other}:9: {TOO_DEEP}")
    assert result.stderr.splitlines() == expected
    assert result.stdout == ""


def test_a_huge_scenario_file_given_to_check_exits_2_with_its_size(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with open(path, "wb") as stream:
        stream.truncate(50 * 1024**2)

    result = run_cli("check", str(path))

    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"invalid scenario: {path}: the file holds 52,428,800 bytes, more than the 1,048,576 "
        "(1 MiB) a scenario file may hold; it was not read"
    ]
