"""Renderings of results and history: one-line verdicts, tables, CSV and JSON."""
