#!/usr/bin/env bash
# Set everything up (idempotent), then run the demo: sample data, real restic repositories
# (local and on a local S3 server), a drill in real sandboxes, and the RTO history table.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
exec .venv/bin/python scripts/demo.py
