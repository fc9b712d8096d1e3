#!/usr/bin/env bash
# Set everything up (idempotent), then run lint, type checks and the whole test suite: unit,
# integration (real restic 0.14 and 0.18, real SQLite, a real S3 server) and sandbox (real Docker).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
# Both restic versions must be there: a missing one fails the suite instead of skipping.
export CI="${CI:-true}"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
