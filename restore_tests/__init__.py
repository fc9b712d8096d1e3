"""restore-tests: prove that backups can be restored, in time."""

from __future__ import annotations

__version__ = "0.1.0"
