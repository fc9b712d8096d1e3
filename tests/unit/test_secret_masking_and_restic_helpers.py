"""Secrets masked in text, restic's timestamps, and repository locations safe to show."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from restore_tests.errors import SourceError
from restore_tests.execute import mask
from restore_tests.sources.restic_cli import display_location, parse_time
from restore_tests.sources.restic_output import fitted, readable

# -- masking ----------------------------------------------------------------------------------


def test_every_occurrence_of_every_secret_is_masked() -> None:
    text = "Fatal: wrong password 'hunter2hunter2' for s3 key AKIAEXAMPLE (password hunter2hunter2)"

    masked = mask(text, ["hunter2hunter2", "AKIAEXAMPLE"])

    assert masked == "Fatal: wrong password '***' for s3 key *** (password ***)"


def test_empty_and_very_short_secrets_are_not_masked_so_text_stays_readable() -> None:
    # Masking "" or "ab" would scatter *** through every message.
    assert mask("a tab in a table", ["", "ab", "a"]) == "a tab in a table"


def test_a_secret_of_four_characters_is_masked() -> None:
    assert mask("password=abcd;", ["abcd"]) == "password=***;"


def test_text_without_secrets_is_unchanged() -> None:
    assert mask("restic 0.18.0 compiled with go1.24", ["hunter2hunter2"]) == (
        "restic 0.18.0 compiled with go1.24"
    )


def test_a_secret_containing_another_secret_is_masked_whole() -> None:
    assert mask("key=pass-and-more", ["pass", "pass-and-more"]) == "key=***"


# -- restic's times ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T03:12:45.123456789Z", datetime(2024, 5, 1, 3, 12, 45, 123456, tzinfo=UTC)),
        ("2024-05-01T03:12:45Z", datetime(2024, 5, 1, 3, 12, 45, tzinfo=UTC)),
        (
            "2024-05-01T05:12:45.5+02:00",
            datetime(2024, 5, 1, 5, 12, 45, 500000, tzinfo=timezone(timedelta(hours=2))),
        ),
        (
            "2024-04-30T19:42:45.987654321-07:30",
            datetime(
                2024, 4, 30, 19, 42, 45, 987654, tzinfo=timezone(-timedelta(hours=7, minutes=30))
            ),
        ),
    ],
    ids=["nanoseconds Z", "no fraction Z", "offset +02:00", "nanoseconds offset -07:30"],
)
def test_restic_times_with_nanoseconds_and_zones_are_read(text: str, expected: datetime) -> None:
    parsed = parse_time(text)

    assert parsed == expected
    assert parsed.utcoffset() == expected.utcoffset()


def test_the_same_instant_in_two_zones_compares_equal() -> None:
    assert parse_time("2024-05-01T05:12:45.000000001+02:00") == parse_time("2024-05-01T03:12:45Z")


@pytest.mark.parametrize(
    "text", ["2024-05-01 03:12:45", "2024-05-01T03:12:45.123456789", "yesterday", ""]
)
def test_an_unreadable_restic_time_is_a_source_error_quoting_it(text: str) -> None:
    with pytest.raises(SourceError) as error:
        parse_time(text)

    assert str(error.value) == f"restic printed an unreadable snapshot time {text!r}"


# -- repository locations ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("repository", "shown"),
    [
        (
            "s3:https://AKIAEXAMPLE:wJalrXUtnFEMI@s3.example.net/acme-backups/share",
            "s3:https://s3.example.net/acme-backups/share",
        ),
        (
            "rest:https://backup:s3cr3t@rest.example.net:8000/share",
            "rest:https://rest.example.net:8000/share",
        ),
        ("rest:http://backup@rest.example.net:8000/", "rest:http://rest.example.net:8000/"),
    ],
)
def test_credentials_in_a_repository_url_are_not_shown(repository: str, shown: str) -> None:
    assert display_location(repository) == shown


@pytest.mark.parametrize(
    "repository",
    [
        "/srv/restic/share",
        "s3:https://s3.example.net/acme-backups/share",
        "sftp:backup@fs01:/srv/restic/share",
        "rest:http://rest.example.net:8000/",
    ],
)
def test_a_repository_without_credentials_is_shown_as_it_is(repository: str) -> None:
    assert display_location(repository) == repository


def test_a_password_containing_an_at_sign_is_not_shown() -> None:
    assert display_location("rest:https://backup:p@ss@rest.example.net/share") == (
        "rest:https://rest.example.net/share"
    )


# -- restic's words in a reason ----------------------------------------------------------------


def test_a_reason_too_long_loses_the_middle_of_restics_words_and_keeps_their_cause() -> None:
    words = "write /work/" + "deep/" * 100 + "blob-0.bin: no space left on device"

    reason = fitted("no space left on device (restic: ", words, ")", limit=120)

    assert len(reason) == 120
    assert reason.startswith("no space left on device (restic: write /work/deep/")
    assert reason.endswith(": no space left on device)")
    assert "..." in reason


def test_full_restic_ids_are_shortened_but_paths_holding_them_are_not() -> None:
    pack = "b9f43b5935481d7d6a7582fc0f8280c8ca2c1c3637047e932a0e87dc8ef6f13b"

    assert readable(f"id {pack} not found in repository") == (
        "blob b9f43b59 is missing from the repository"
    )
    assert readable(f"StreamPack: open /srv/r/data/b9/{pack}: no such file or directory") == (
        f"StreamPack: open /srv/r/data/b9/{pack}: no such file or directory"
    )
    assert readable(f"load <data/{pack[:10]}>: invalid data returned") == (
        "pack b9f43b5935 cannot be read (invalid data returned)"
    )
