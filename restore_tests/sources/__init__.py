"""Where a backup comes from: one module per source type, one line each in SOURCES.

The scenario's `source` union (and `restore-tests schema`) is built from this registry.
"""

from __future__ import annotations

from restore_tests.sources.base import Source
from restore_tests.sources.local import LocalSource
from restore_tests.sources.restic import ResticSource
from restore_tests.sources.s3 import S3Source

SOURCES: dict[str, type[Source]] = {
    ResticSource.name: ResticSource,
    LocalSource.name: LocalSource,
    S3Source.name: S3Source,
}

__all__ = ["SOURCES", "Source"]
