"""YAML loading that remembers where every key and list item sits in the file.

Errors about agents.yaml and config.yaml must name the line a user has to edit, and
``yaml.safe_load`` forgets positions. This module composes the document into nodes, builds
the plain Python value from them itself, and keeps, for every path of keys and indexes *as
written* (a :data:`RawPath`), the 1-based line of the key (or of the list item) and the
node of its value. Mapping keys must be text, and a key given twice in one mapping is an
error rather than PyYAML's silent "last one wins".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from agentos.errors import SpecError

RawPath = tuple[str | int, ...]
"""Keys and list indexes from the top of a YAML document, spelled as the file spells them."""

_MERGE_TAG = "tag:yaml.org,2002:merge"


def format_key(path: RawPath) -> str:
    """The dotted key path a user reads in an error: ``agents[2].life-cycle.length``."""
    text = ""
    for segment in path:
        if isinstance(segment, int):
            text += f"[{segment}]"
        else:
            text += f".{segment}" if text else segment
    return text


@dataclass(frozen=True)
class SourceDocument:
    """One YAML file: its value plus the line of every key and item in it.

    ``lines`` holds the line of the key for mapping entries, of the item for list entries
    and of the document itself for ``()``. Paths below a node that the file does not
    contain (a missing key, say) are answered with the line of the nearest enclosing one.
    """

    file: str
    data: Any
    lines: Mapping[RawPath, int]
    nodes: Mapping[RawPath, yaml.Node]
    text_lines: tuple[str, ...]

    def line_of(self, path: RawPath) -> int | None:
        """The line of ``path``, or of the nearest enclosing key that the file has."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None

    def value_line(self, path: RawPath, offset: int) -> int | None:
        """The file line holding character ``offset`` of the string value at ``path``.

        Works for plain, quoted, literal (``|``) and folded (``>``) scalars alike: the
        text of each source line is looked up, in order, in the value that YAML built from
        them, which tells where each source line starts inside the value. ``None`` when
        ``path`` is not a string scalar of this file.
        """
        node = self.nodes.get(path)
        if not isinstance(node, yaml.ScalarNode) or not isinstance(node.value, str):
            return None
        value: str = node.value
        first, last = node.start_mark.line, node.end_mark.line
        starts: list[tuple[int, int]] = []  # (offset in value, 0-based file line)
        cursor = 0
        for number in range(first, min(last, len(self.text_lines) - 1) + 1):
            text = self.text_lines[number]
            if number == first:
                if node.style in ("|", ">"):
                    continue  # the indicator line holds no content
                text = text[node.start_mark.column :]
                if node.style in ("'", '"'):
                    text = text[1:]
            text = text.strip()
            if number == last and node.style in ("'", '"'):
                text = text[:-1]  # the closing quote
            if not text:
                continue
            found = value.find(text, cursor)
            if found < 0:
                continue
            starts.append((found, number))
            cursor = found + len(text)
        line = first
        for start, number in starts:
            if start > offset:
                break
            line = number
        return line + 1


def load_yaml(path: Path) -> SourceDocument:
    """Read and compose one YAML file; every failure is a :class:`SpecError` with its line.

    ``data`` is ``None`` for a file with no document (empty, or only comments); callers
    decide whether that is an error.
    """
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError("file does not exist", file=file) from None
    except IsADirectoryError:
        raise SpecError("is a folder, not a YAML file", file=file) from None
    except UnicodeDecodeError as exc:
        raise SpecError(f"file is not UTF-8 text ({exc.reason})", file=file) from None
    except OSError as exc:
        raise SpecError(f"cannot read the file: {exc.strerror}", file=file) from None
    return parse_yaml(text, file=file)


def parse_yaml(text: str, *, file: str) -> SourceDocument:
    """Compose ``text`` (named ``file`` in errors) into a :class:`SourceDocument`."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        builder = _Builder(loader, file)
        data = None if root is None else builder.build(root, ())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "not valid YAML"
        context = f" ({exc.context})" if exc.context and exc.problem else ""
        line = None if mark is None else mark.line + 1
        raise SpecError(f"YAML syntax error: {problem}{context}", file=file, line=line) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"YAML error: {exc}", file=file) from None
    finally:
        loader.dispose()
    lines: dict[RawPath, int] = {} if root is None else builder.lines
    if root is not None:
        lines[()] = root.start_mark.line + 1
    return SourceDocument(
        file=file,
        data=data,
        lines=lines,
        nodes={} if root is None else builder.nodes,
        text_lines=tuple(text.splitlines()),
    )


class _Builder:
    """Turns composed nodes into dicts, lists and scalars, noting each path's line."""

    def __init__(self, loader: yaml.SafeLoader, file: str) -> None:
        self.loader = loader
        self.file = file
        self.lines: dict[RawPath, int] = {}
        self.nodes: dict[RawPath, yaml.Node] = {}
        self._open: set[int] = set()  # nodes being built: an alias to one of them recurses

    def build(self, node: yaml.Node, path: RawPath) -> Any:
        self.nodes[path] = node
        if isinstance(node, yaml.ScalarNode):
            return self.loader.construct_object(node, deep=True)
        if id(node) in self._open:
            raise SpecError(
                "an alias refers to a node that contains it",
                file=self.file,
                line=node.start_mark.line + 1,
                key=format_key(path) or None,
            )
        self._open.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                items = []
                for index, item in enumerate(node.value):
                    self.lines[(*path, index)] = item.start_mark.line + 1
                    items.append(self.build(item, (*path, index)))
                return items
            assert isinstance(node, yaml.MappingNode)
            return self._build_mapping(node, path)
        finally:
            self._open.discard(id(node))

    def _build_mapping(self, node: yaml.MappingNode, path: RawPath) -> dict[str, Any]:
        first_line: dict[str, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self._key(key_node, path)
            line = key_node.start_mark.line + 1
            if key in first_line:
                raise SpecError(
                    f"key '{key}' is given twice (first at line {first_line[key]})",
                    file=self.file,
                    line=line,
                    key=format_key((*path, key)),
                )
            first_line[key] = line
        self.loader.flatten_mapping(node)  # resolves `<<: *anchor` merges, own keys last
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = self._key(key_node, path)
            self.lines[(*path, key)] = key_node.start_mark.line + 1
            result[key] = self.build(value_node, (*path, key))
        return result

    def _key(self, key_node: yaml.Node, path: RawPath) -> str:
        key = self.loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            message = f"key {key!r} should be text; put it in quotes"
            if isinstance(key, dict | list):
                message = "a value that starts with '{' or '[' must be quoted, like '{{ var }}'"
            raise SpecError(
                message,
                file=self.file,
                line=key_node.start_mark.line + 1,
                key=format_key(path) or None,
            )
        return key
