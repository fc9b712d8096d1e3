"""Performance of restore-tests against the manual procedure and restverify (issue 10).

Run from the repository's root: `.venv/bin/python -m bench.perf [--quick]`. Modules:
generators (the data trees and their repositories), procedures (what is timed), runner (the
alternating rounds on a quiet machine) and report (the tables and the JSON).
"""
