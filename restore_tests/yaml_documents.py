"""Reading scenario YAML safely: bounded in size, nesting and alias expansion, with lines.

A scenario file is trusted for intent, not for correctness, and may be broken or hostile: it is
refused before it can exhaust memory, time or the stack, and every problem carries its line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from restore_tests.errors import Problem, ScenarioError

# Bounds on a scenario file, far above what a scenario needs: a hostile or broken file is refused
# before it can exhaust memory, time or the stack.
MAX_FILE_BYTES = 1024 * 1024
MAX_NESTING = 50  # levels of nodes, the document itself included; a scenario needs about 6
MAX_DOCUMENT_NODES = 10_000  # nodes of one document once its aliases are expanded
MAX_FILE_NODES = 20_000  # nodes written in one file (the pure-Python parser takes ~40 us each)
TOO_DEEP = f"nested more than {MAX_NESTING} levels deep; a scenario needs far fewer"
TOO_MANY_NODES = (
    f"this document holds more than {MAX_DOCUMENT_NODES:,} YAML nodes once its aliases are "
    "expanded (an alias bomb?); a scenario needs a few dozen"
)
FILE_TOO_LARGE = (
    f"the file holds more than {MAX_FILE_NODES:,} YAML nodes; a scenario needs a few dozen: "
    "split the file"
)
ALIAS_CYCLE = "an alias refers to a node that holds it: it would expand forever"


def read_text(path: Path) -> str:
    """The file's text; a file too large for a scenario is refused without being read."""
    try:
        with open(path, "rb") as stream:
            size = os.fstat(stream.fileno()).st_size
            content = stream.read(MAX_FILE_BYTES + 1) if size <= MAX_FILE_BYTES else b""
        size = max(size, len(content))  # a file that grew while it was read
        if size > MAX_FILE_BYTES:
            raise ScenarioError(
                [
                    Problem(
                        str(path),
                        None,
                        "",
                        f"the file holds {size:,} bytes, more than the {MAX_FILE_BYTES:,} "
                        "(1 MiB) a scenario file may hold; it was not read",
                    )
                ]
            )
        return content.decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ScenarioError([Problem(str(path), None, "", f"cannot read: {error}")]) from error


class _Refused(yaml.MarkedYAMLError):
    """Well-formed YAML that is refused all the same: nested too deeply, or an alias bomb."""


class ScenarioLoader(yaml.SafeLoader):
    """SafeLoader that bounds nesting (composing recurses once per level) and reports a value
    it cannot construct (a date like 2024-13-45) as a YAML error at that value's line."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.depth = 0
        self.composed = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.depth >= MAX_NESTING:
            raise _Refused(problem=TOO_DEEP, problem_mark=self.peek_event().start_mark)
        self.composed += 1
        if self.composed > MAX_FILE_NODES:
            raise _Refused(problem=FILE_TOO_LARGE, problem_mark=self.peek_event().start_mark)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, OverflowError):
            # Not chained and not quoted: the error's text may repeat the value (a secret?).
            kind = node.tag.rsplit(":", 1)[-1]
            raise yaml.constructor.ConstructorError(
                problem=f"this value reads as a YAML {kind} but is not a valid one; "
                "put it in quotes to keep it as text",
                problem_mark=node.start_mark,
            ) from None


def compose_documents(path: Path, text: str) -> list[yaml.Node | None]:
    """The node tree of every document; aliases still point to their anchor's node."""
    try:
        loader = ScenarioLoader(text)
        documents = []
        while loader.check_node():
            documents.append(loader.get_node())
        return documents
    except yaml.YAMLError as error:
        raise ScenarioError([yaml_problem(path, error, text)]) from None
    except RecursionError:  # the nesting bound should make this unreachable
        raise ScenarioError([Problem(str(path), None, "", TOO_DEEP)]) from None


def yaml_problem(path: Path, error: yaml.YAMLError, text: str = "") -> Problem:
    if isinstance(error, yaml.reader.ReaderError):  # a control character: no mark, a position
        reason = f"unacceptable character #x{error.character:04x}: {error.reason}"
        line_number = text.count("\n", 0, error.position) + 1
        return Problem(str(path), line_number, "", f"invalid YAML: {reason}")
    mark = getattr(error, "problem_mark", None)
    line = mark.line + 1 if mark else None
    reason = getattr(error, "problem", None) or str(error).splitlines()[0]
    prefix = "" if isinstance(error, _Refused) else "invalid YAML: "
    return Problem(str(path), line, "", prefix + reason)


class AliasExpansion:
    """Counts a document's nodes as if every alias were expanded, without expanding one.

    Each node is measured once, so this takes time in the size of the file, not of the
    expansion. Refuses a document that aliases would blow up ("billion laughs"), that refers
    to itself, or that nests deeper than MAX_NESTING once expanded.
    """

    def __init__(self, root: yaml.Node) -> None:
        self.root = root
        self.measured: dict[int, tuple[int, int]] = {}  # id(node) -> (nodes, height)
        self.open: set[int] = set()  # nodes being measured: one met again is a cycle

    def check(self) -> None:
        self.measure(self.root, 1)

    def measure(self, node: yaml.Node, depth: int) -> tuple[int, int]:
        """(nodes, height) of node's tree once expanded; node is at depth (the root at 1)."""
        if depth > MAX_NESTING:
            raise _Refused(problem=TOO_DEEP, problem_mark=node.start_mark)
        if id(node) not in self.measured:
            if id(node) in self.open:
                raise _Refused(problem=ALIAS_CYCLE, problem_mark=node.start_mark)
            self.open.add(id(node))
            nodes, height = 1, 1
            for child, mark in _children(node):
                child_nodes, child_height = self.measure(child, depth + 1)
                nodes, height = nodes + child_nodes, max(height, child_height + 1)
                if nodes > MAX_DOCUMENT_NODES:
                    raise _Refused(problem=TOO_MANY_NODES, problem_mark=mark)
                if depth + child_height > MAX_NESTING:  # an alias to a deep node
                    raise _Refused(problem=TOO_DEEP, problem_mark=mark)
            self.open.discard(id(node))
            self.measured[id(node)] = (nodes, height)
        return self.measured[id(node)]


def _children(node: yaml.Node) -> list[tuple[yaml.Node, yaml.Mark]]:
    """The nodes below node, each with where it is written (an alias's anchor is elsewhere)."""
    if isinstance(node, yaml.MappingNode):
        return [(part, key.start_mark) for key, value in node.value for part in (key, value)]
    if isinstance(node, yaml.SequenceNode):
        return [(item, node.start_mark) for item in node.value]
    return []


def record_lines(
    node: yaml.Node,
    at: tuple[Any, ...],
    lines: dict[tuple[Any, ...], int],
    problems: list[Problem],
    path: Path,
) -> None:
    lines[at] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue  # a list or mapping as a key: construction reports it
            key = key_node.value
            if (*at, key) in lines:
                problems.append(
                    Problem(
                        str(path),
                        key_node.start_mark.line + 1,
                        field_path((*at, key)),
                        "duplicate key",
                    )
                )
            record_lines(value_node, (*at, key), lines, problems, path)
            lines[(*at, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            record_lines(item, (*at, index), lines, problems, path)


def field_path(at: tuple[Any, ...]) -> str:
    text = ""
    for part in at:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
