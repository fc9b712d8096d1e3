"""Scenario files: loading, every problem at once with file:line:field, secrets, paths, lookup."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from restore_tests.errors import Problem, ScenarioError
from restore_tests.model import NOT_A_VARIABLE_NAME
from restore_tests.scenario import (
    SECRET_HINT,
    find_scenarios,
    load_file,
    load_paths,
)
from restore_tests.sources.restic import SnapshotFilter
from runners import RUNNERS

KNOWN_KINDS = ", ".join(RUNNERS)

# A minimal valid scenario; line numbers in the tests below count from its first line.
MINIMAL = """\
name: {name}
kind: files
source:
  type: restic
  repository: repos/share
  password_env: SHARE_RESTIC_PASSWORD
verify:
  manifest: /data/compta/SHA256SUMS
"""


def write(folder: Path, text: str, file_name: str = "scenario.yaml") -> Path:
    path = folder / file_name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def minimal(name: str = "share") -> str:
    return MINIMAL.format(name=name)


def problems_of(error: pytest.ExceptionInfo[ScenarioError]) -> list[tuple[int | None, str, str]]:
    return [(problem.line, problem.field, problem.message) for problem in error.value.problems]


# -- valid files ------------------------------------------------------------------------------


def test_a_valid_file_loads_one_scenario_with_the_documented_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, minimal())

    [scenario] = load_file(path)

    assert scenario.name == "share"
    assert scenario.kind == "files"
    assert scenario.source.password_env == "SHARE_RESTIC_PASSWORD"
    assert scenario.source.snapshot == "latest"
    assert scenario.objectives.rto is None and scenario.objectives.rpo is None
    assert scenario.sandbox.memory == 512 * 1024**2
    assert scenario.verify.manifest == "/data/compta/SHA256SUMS"  # type: ignore[attr-defined]
    assert scenario.origin.path == path.resolve()
    assert scenario.origin.line == 1


def test_every_document_of_a_multi_document_file_is_loaded_with_its_own_line(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, minimal("first") + "---\n" + minimal("second"))

    scenarios = load_file(path)

    assert [(scenario.name, scenario.origin.line) for scenario in scenarios] == [
        ("first", 1),
        ("second", 10),
    ]


@pytest.mark.parametrize(
    "separators", ["---\n---\n", "---\n"], ids=["between two separators", "trailing separator"]
)
def test_an_empty_document_is_skipped(tmp_path: Path, separators: str) -> None:
    path = write(tmp_path, minimal("first") + separators + minimal("second") + separators)

    assert [scenario.name for scenario in load_file(path)] == ["first", "second"]


def test_the_content_hash_ignores_comments_and_key_order_but_not_values(tmp_path: Path) -> None:
    original = load_file(write(tmp_path, minimal(), "a.yaml"))[0]
    reordered_text = "# the share\nkind: files\n" + minimal().replace("kind: files\n", "")
    reordered = load_file(write(tmp_path, reordered_text, "b.yaml"))[0]
    changed = load_file(write(tmp_path, minimal().replace("SHA256SUMS", "SUMS"), "c.yaml"))[0]

    assert reordered.origin.content_sha256 == original.origin.content_sha256
    assert changed.origin.content_sha256 != original.origin.content_sha256


# -- every problem at once --------------------------------------------------------------------


def test_every_problem_of_a_file_is_reported_at_once_with_its_line_and_field_path(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        """
        name: share
        kind: files
        source:
          type: restic
          repository: repos/share
          password_env: SHARE_RESTIC_PASSWORD
        objectives:
          rto: soon
        verify:
          manifest: data/SHA256SUMS
          expect:
            min_files: -1
    """,
    )

    with pytest.raises(ScenarioError) as error:
        load_file(path)

    assert problems_of(error) == [
        (8, "objectives.rto", "'soon' is not a duration; write it like 90s, 15m, 4h, 7d or 1h30m"),
        (
            10,
            "verify.manifest",
            "'data/SHA256SUMS': give the path as it is in the snapshot, starting with /",
        ),
        (12, "verify.expect.min_files", "Input should be greater than or equal to 0"),
    ]
    assert str(error.value).splitlines()[2] == (
        f"{path}:12: verify.expect.min_files: Input should be greater than or equal to 0"
    )


def test_problems_in_every_document_of_a_file_are_reported_together(tmp_path: Path) -> None:
    broken_first = minimal("first").replace("  manifest: /data", "  manifets: /data")
    broken_second = minimal("second").replace("kind: files", "kind: oracle")
    path = write(tmp_path, broken_first + "---\n" + broken_second)

    with pytest.raises(ScenarioError) as error:
        load_file(path)

    assert problems_of(error) == [
        (8, "verify.manifets", "unknown field"),
        (11, "kind", f"unknown kind 'oracle'; expected one of: {KNOWN_KINDS}"),
    ]


def test_a_misspelled_field_is_an_error_rather_than_silently_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, minimal() + "  expect:\n    min_filez: 1000\n")

    with pytest.raises(ScenarioError) as error:
        load_file(path)

    assert problems_of(error) == [(10, "verify.expect.min_filez", "unknown field")]


def test_a_missing_required_field_is_named_with_its_parent_line(tmp_path: Path) -> None:
    path = write(tmp_path, minimal().replace("  repository: repos/share\n", ""))

    with pytest.raises(ScenarioError) as error:
        load_file(path)

    assert problems_of(error) == [(3, "source.repository", "required field is missing")]


def test_a_duplicate_key_is_reported_with_its_line_and_path(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        minimal().replace(
            "  repository: repos/share\n", "  repository: repos/share\n  repository: repos/other\n"
        ),
    )

    with pytest.raises(ScenarioError) as error:
        load_file(path)

    assert problems_of(error) == [(6, "source.repository", "duplicate key")]


def test_invalid_yaml_is_reported_with_the_line_of_the_mistake(tmp_path: Path) -> None:
    path = write(tmp_path, "name: share\nkind: files\ntags: [nightly\nsource: x\n")

    with pytest.raises(ScenarioError) as error:
        load_file(path)

    assert problems_of(error) == [(4, "", "invalid YAML: expected ',' or ']', but got ':'")]
    assert str(error.value) == f"{path}:4: invalid YAML: expected ',' or ']', but got ':'"


def test_an_unknown_kind_is_rejected_with_the_list_of_known_kinds(tmp_path: Path) -> None:
    path = write(tmp_path, minimal().replace("kind: files", "kind: oracle"))

    with pytest.raises(ScenarioError) as error:
        load_file(path)

    assert "files" in RUNNERS
    assert problems_of(error) == [
        (2, "kind", f"unknown kind 'oracle'; expected one of: {KNOWN_KINDS}")
    ]


def test_a_missing_kind_is_rejected_with_the_list_of_known_kinds(tmp_path: Path) -> None:
    path = write(tmp_path, minimal().replace("kind: files\n", ""))

    with pytest.raises(ScenarioError) as error:
        load_file(path)

    assert problems_of(error) == [
        (1, "", f"required field 'kind' is missing; expected one of: {KNOWN_KINDS}")
    ]


def test_a_document_that_is_not_a_mapping_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "- share\n- files\n")

    with pytest.raises(ScenarioError) as error:
        load_file(path)

    assert problems_of(error) == [
        (1, "", "a scenario is a mapping of fields (name, kind, source, ...)")
    ]


def test_an_empty_file_is_reported_as_holding_no_scenario(tmp_path: Path) -> None:
    path = write(tmp_path, "# nothing yet\n")

    with pytest.raises(ScenarioError) as error:
        load_file(path)

    assert str(error.value) == f"{path}: the file holds no scenario"


# -- secrets ----------------------------------------------------------------------------------


def test_a_literal_password_is_rejected_with_a_hint_to_reference_it(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        minimal().replace(
            "  password_env: SHARE_RESTIC_PASSWORD\n", "  password: hunter2hunter2\n"
        ),
    )

    with pytest.raises(ScenarioError) as error:
        load_file(path)

    # The hint alone: no second "unknown field" problem for the same key, and the value unshown.
    assert problems_of(error) == [(6, "source.password", SECRET_HINT)]
    assert "hunter2hunter2" not in str(error.value)
    assert (
        "reference it instead with password_env: VARIABLE, password_file: PATH or "
        "password_command: [program, args...]" in SECRET_HINT
    )


def test_a_literal_password_is_reported_next_to_the_other_problems(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        minimal().replace(
            "  password_env: SHARE_RESTIC_PASSWORD\n",
            "  password_env: SHARE_RESTIC_PASSWORD\n  password: hunter2hunter2\n",
        )
        + "  expect:\n    min_files: -1\n",
    )

    with pytest.raises(ScenarioError) as error:
        load_file(path)

    assert problems_of(error) == [
        (7, "source.password", SECRET_HINT),
        (11, "verify.expect.min_files", "Input should be greater than or equal to 0"),
    ]


@pytest.mark.parametrize("key", ["aws_secret_access_key", "token", "Secret"])
def test_a_literal_secret_under_another_name_is_rejected_with_the_same_hint(
    tmp_path: Path, key: str
) -> None:
    path = write(
        tmp_path, minimal().replace("  type: restic\n", f"  type: restic\n  {key}: abcdefgh\n")
    )

    with pytest.raises(ScenarioError) as error:
        load_file(path)

    assert problems_of(error) == [(5, f"source.{key}", SECRET_HINT)]


def test_a_password_env_holding_a_secret_instead_of_a_variable_name_is_rejected(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        minimal().replace(
            "password_env: SHARE_RESTIC_PASSWORD", "password_env: 'correct horse battery'"
        ),
    )

    with pytest.raises(ScenarioError) as error:
        load_file(path)

    assert problems_of(error) == [(6, "source.password_env", NOT_A_VARIABLE_NAME)]
    assert "correct horse" not in str(error.value)


def test_an_env_from_entry_that_is_not_a_variable_name_is_rejected(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        minimal().replace(
            "  type: restic\n",
            "  type: restic\n  env_from: [AWS_ACCESS_KEY_ID, wJalrXUtn/K7MDENG]\n",
        ),
    )

    with pytest.raises(ScenarioError) as error:
        load_file(path)

    assert problems_of(error) == [(5, "source.env_from[1]", NOT_A_VARIABLE_NAME)]
    assert "wJalrXUtn" not in str(error.value)


@pytest.mark.parametrize(
    ("references", "expected"),
    [
        ("", "give exactly one of password_env, password_file, password_command"),
        (
            "  password_env: SHARE_RESTIC_PASSWORD\n  password_file: share.pass\n",
            "give exactly one of password_env, password_file, password_command "
            "(got password_env, password_file)",
        ),
        (
            "  password_env: SHARE_RESTIC_PASSWORD\n  password_file: share.pass\n"
            "  password_command: [pass, show, share]\n",
            "give exactly one of password_env, password_file, password_command "
            "(got password_env, password_file, password_command)",
        ),
    ],
    ids=["none", "two", "three"],
)
def test_exactly_one_password_reference_is_required(
    tmp_path: Path, references: str, expected: str
) -> None:
    path = write(tmp_path, minimal().replace("  password_env: SHARE_RESTIC_PASSWORD\n", references))

    with pytest.raises(ScenarioError) as error:
        load_file(path)

    assert [(line, message) for line, _, message in problems_of(error)] == [(3, expected)]


def test_an_empty_password_command_is_rejected(tmp_path: Path) -> None:
    path = write(
        tmp_path, minimal().replace("password_env: SHARE_RESTIC_PASSWORD", "password_command: []")
    )

    with pytest.raises(ScenarioError) as error:
        load_file(path)

    assert [message for _, _, message in problems_of(error)] == ["password_command needs a program"]


@pytest.mark.parametrize(
    "references",
    [
        "",
        "  password_env: 'correct horse battery'\n",
    ],
    ids=["no password reference", "password_env not a variable name"],
)
def test_a_problem_of_the_whole_source_is_reported_at_the_source_field(
    tmp_path: Path, references: str
) -> None:
    path = write(tmp_path, minimal().replace("  password_env: SHARE_RESTIC_PASSWORD\n", references))

    with pytest.raises(ScenarioError) as error:
        load_file(path)

    [problem] = error.value.problems
    assert problem.field in ("source", "source.password_env")


# -- durations, sizes, snapshot selectors -----------------------------------------------------


def test_durations_and_sizes_are_parsed_into_seconds_and_bytes(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        minimal().replace(
            "kind: files\n",
            textwrap.dedent("""\
        kind: files
        objectives:
          rto: 1h30m
          rpo: 7d
        sandbox:
          memory: 1.5GiB
          command_timeout: 90s
    """),
        )
        + "  expect:\n    min_bytes: 2g\n",
    )

    [scenario] = load_file(path)

    assert scenario.objectives.rto == 5400
    assert scenario.objectives.rpo == 7 * 86400
    assert scenario.sandbox.memory == 1536 * 1024**2
    assert scenario.sandbox.command_timeout == 90
    assert scenario.verify.expect.min_bytes == 2 * 1024**3  # type: ignore[attr-defined]


def test_a_zero_objective_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, minimal() + "objectives:\n  rto: 0s\n")

    with pytest.raises(ScenarioError) as error:
        load_file(path)

    assert problems_of(error) == [(10, "objectives.rto", "Input should be greater than 0")]


def test_an_unreadable_size_is_reported_with_the_accepted_forms(tmp_path: Path) -> None:
    path = write(tmp_path, minimal() + "sandbox:\n  memory: lots\n")

    with pytest.raises(ScenarioError) as error:
        load_file(path)

    assert problems_of(error) == [
        (10, "sandbox.memory", "'lots' is not a size; write it like 512m, 2g or 1.5GiB")
    ]


def test_the_snapshot_selector_may_be_a_snapshot_id(tmp_path: Path) -> None:
    path = write(
        tmp_path, minimal().replace("  type: restic\n", "  type: restic\n  snapshot: 4f2c1a9e\n")
    )

    [scenario] = load_file(path)

    assert scenario.source.snapshot == "4f2c1a9e"


def test_the_snapshot_selector_may_be_a_filter_of_tags_host_and_path(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        minimal().replace(
            "  type: restic\n",
            "  type: restic\n"
            "  snapshot:\n"
            "    tags: [nightly, share]\n"
            "    host: fs01\n"
            "    path: /srv/share\n",
        ),
    )

    [scenario] = load_file(path)

    assert scenario.source.snapshot == SnapshotFilter(
        tags=["nightly", "share"], host="fs01", path="/srv/share"
    )


def test_a_misspelled_snapshot_filter_field_is_reported_with_its_path(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        minimal().replace("  type: restic\n", "  type: restic\n  snapshot:\n    tag: nightly\n"),
    )

    with pytest.raises(ScenarioError) as error:
        load_file(path)

    assert problems_of(error) == [(6, "source.snapshot.tag", "unknown field")]


# -- paths relative to the scenario file ------------------------------------------------------


def test_relative_repository_and_password_file_resolve_against_the_scenario_folder_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(
        tmp_path / "scenarios",
        minimal().replace(
            "  repository: repos/share\n  password_env: SHARE_RESTIC_PASSWORD\n",
            "  repository: ../repos/share\n  password_file: secrets/share.pass\n",
        ),
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    [scenario] = load_file(path)

    assert Path(scenario.source.repository).is_absolute()
    assert Path(scenario.source.repository).resolve() == (tmp_path / "repos/share").resolve()
    assert (
        Path(scenario.source.password_file or "").resolve()
        == (tmp_path / "scenarios/secrets/share.pass").resolve()
    )


def test_a_scenario_loaded_by_a_relative_path_still_resolves_against_its_own_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "scenarios", minimal())
    monkeypatch.chdir(tmp_path)

    [scenario] = load_file(Path("scenarios/scenario.yaml"))

    assert Path(scenario.source.repository) == (tmp_path / "scenarios/repos/share").resolve()


def test_an_absolute_repository_is_kept_as_written(tmp_path: Path) -> None:
    path = write(
        tmp_path, minimal().replace("repository: repos/share", "repository: /srv/restic/share")
    )

    [scenario] = load_file(path)

    assert scenario.source.repository == "/srv/restic/share"


def test_an_s3_repository_is_left_untouched_while_its_password_file_is_resolved(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        minimal().replace(
            "  repository: repos/share\n  password_env: SHARE_RESTIC_PASSWORD\n",
            "  repository: s3:https://s3.example.net/acme-backups/share\n"
            "  password_file: share.pass\n",
        ),
    )

    [scenario] = load_file(path)

    assert scenario.source.repository == "s3:https://s3.example.net/acme-backups/share"
    assert not scenario.source.is_local
    assert scenario.source.password_file == str(tmp_path.resolve() / "share.pass")


def test_a_relative_repository_with_the_local_prefix_resolves_against_the_scenario_folder(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path, minimal().replace("repository: repos/share", "repository: local:repos/share")
    )

    [scenario] = load_file(path)

    assert scenario.source.repository == f"local:{tmp_path.resolve() / 'repos/share'}"


# -- folders and names ------------------------------------------------------------------------


def test_a_folder_is_searched_recursively_for_yaml_and_yml_files_only(tmp_path: Path) -> None:
    write(tmp_path, minimal("one"), "one.yaml")
    write(tmp_path, minimal("two") + "---\n" + minimal("three"), "nested/two.yml")
    write(tmp_path, minimal("ignored"), "notes.txt")

    scenarios = load_paths([tmp_path])

    assert sorted(scenario.name for scenario in scenarios) == ["one", "three", "two"]


def test_a_scenario_name_used_in_two_files_is_reported_with_both_locations(tmp_path: Path) -> None:
    first = write(tmp_path, minimal(), "a.yaml")
    second = write(tmp_path, "# the same share again\n\n" + minimal(), "b.yaml")

    with pytest.raises(ScenarioError) as error:
        load_paths([tmp_path])

    assert error.value.problems == [
        Problem(
            str(second.resolve()),
            3,
            "name",
            f"duplicate scenario name 'share' (also in {first.resolve()}:1)",
        )
    ]


def test_a_folder_with_no_scenario_files_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "README.txt").write_text("scenarios go here\n")

    with pytest.raises(ScenarioError) as error:
        load_paths([tmp_path])

    assert str(error.value) == f"{tmp_path}: no scenario files (*.yaml) here"


def test_a_path_that_does_not_exist_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError) as error:
        load_paths([tmp_path / "missing.yaml"])

    assert str(error.value) == f"{tmp_path / 'missing.yaml'}: no such file or folder"


def test_problems_of_every_file_in_a_folder_are_reported_together(tmp_path: Path) -> None:
    write(tmp_path, minimal("one").replace("kind: files", "kind: oracle"), "a.yaml")
    broken = write(tmp_path, "name: [\n", "b.yaml")

    with pytest.raises(ScenarioError) as error:
        load_paths([tmp_path])

    assert [(Path(problem.file).name, problem.line) for problem in error.value.problems] == [
        ("a.yaml", 2),
        ("b.yaml", 2),
    ]
    assert str(error.value).splitlines()[1].startswith(f"{broken}:2: invalid YAML: ")


def test_find_scenarios_finds_a_name_even_when_another_file_in_the_folder_is_broken(
    tmp_path: Path,
) -> None:
    write(tmp_path, minimal("share") + "---\n" + minimal("mail"), "good.yaml")
    write(tmp_path, "name: [\n", "broken.yaml")

    found = find_scenarios(["mail"], tmp_path)

    assert [(scenario.name, scenario.origin.line) for scenario in found] == [("mail", 10)]


def test_find_scenarios_with_an_unknown_name_lists_the_known_names(tmp_path: Path) -> None:
    write(tmp_path, minimal("share") + "---\n" + minimal("mail"), "good.yaml")

    with pytest.raises(ScenarioError) as error:
        find_scenarios(["shaer"], tmp_path)

    assert str(error.value) == (
        f"shaer: no such file, and no scenario of that name in {tmp_path} (known: mail, share)"
    )


def test_find_scenarios_with_an_unknown_name_also_shows_why_a_broken_file_was_skipped(
    tmp_path: Path,
) -> None:
    write(tmp_path, minimal("share"), "good.yaml")
    broken = write(tmp_path, minimal("mail").replace("kind: files", "kind: oracle"), "broken.yaml")

    with pytest.raises(ScenarioError) as error:
        find_scenarios(["mail"], tmp_path)

    assert str(error.value).splitlines() == [
        f"{broken}:2: kind: unknown kind 'oracle'; expected one of: {KNOWN_KINDS}",
        f"mail: no such file, and no scenario of that name in {tmp_path} (known: share)",
    ]


def test_find_scenarios_without_a_scenario_folder_knows_no_names(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError) as error:
        find_scenarios(["share"], tmp_path / "missing")

    assert str(error.value) == (
        f"share: no such file, and no scenario of that name in {tmp_path / 'missing'} (known: none)"
    )


def test_find_scenarios_accepts_a_file_path_instead_of_a_name(tmp_path: Path) -> None:
    path = write(tmp_path / "elsewhere", minimal("share") + "---\n" + minimal("mail"))

    found = find_scenarios([str(path)], tmp_path / "missing")

    assert [scenario.name for scenario in found] == ["share", "mail"]


def test_find_scenarios_reports_a_name_defined_in_two_files_as_a_duplicate(tmp_path: Path) -> None:
    write(tmp_path, minimal("share"), "a.yaml")
    write(tmp_path, minimal("share").replace("repos/share", "repos/other"), "b.yaml")

    with pytest.raises(ScenarioError, match="duplicate scenario name 'share'"):
        find_scenarios(["share"], tmp_path)


def test_restic_verify_under_verify_says_where_it_moved(tmp_path: Path) -> None:
    text = MINIMAL.format(name="share") + "  restic_verify: true\n"
    path = tmp_path / "share.yaml"
    path.write_text(text)

    with pytest.raises(ScenarioError) as raised:
        load_file(path)

    [problem] = raised.value.problems
    assert (problem.field, problem.message) == (
        "verify.restic_verify",
        "moved: write `verify: true` in the source section (type: restic): restic restore "
        "--verify belongs to the restic source",
    )


# -- who and how often ------------------------------------------------------------------------


def test_client_owner_and_every_default_to_none_and_a_quarter(tmp_path: Path) -> None:
    [scenario] = load_file(write(tmp_path, minimal()))

    assert (scenario.client, scenario.owner, scenario.every) == ("", "", 92 * 86400.0)


def test_client_owner_and_every_are_read(tmp_path: Path) -> None:
    text = minimal() + "client: Acme\nowner: finance IT\nevery: 30d\n"

    [scenario] = load_file(write(tmp_path, text))

    assert (scenario.client, scenario.owner, scenario.every) == ("Acme", "finance IT", 30 * 86400.0)


def test_a_tag_with_a_comma_is_refused_because_the_history_stores_tags_comma_separated(
    tmp_path: Path,
) -> None:
    with pytest.raises(ScenarioError) as raised:
        load_file(write(tmp_path, minimal() + 'tags: [quarterly, "pci,dss"]\n'))

    [(_, field, message)] = problems_of(raised)
    assert field == "tags[1]" and "should match pattern" in message
