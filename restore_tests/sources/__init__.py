"""Where a backup comes from: one module per source type, one line each in SOURCES.

The scenario's `source` union (and `restore-tests schema`) is built from this registry.
"""

from __future__ import annotations

from restore_tests.sources.base import Source
from restore_tests.sources.local import LocalSource
from restore_tests.sources.restic import ResticSource

SOURCES: dict[str, type[Source]] = {
    ResticSource.name: ResticSource,
    LocalSource.name: LocalSource,
}

__all__ = ["SOURCES", "Source"]
