"""YAML loading that remembers where every key and list item sits in the file.

Errors about agents.yaml and config.yaml must name the line a user has to edit, and
``yaml.safe_load`` forgets positions. This module composes the document into nodes, builds
the plain Python value from them itself, and keeps, for every path of keys and indexes *as
written* (a :data:`RawPath`), the 1-based line of the key (or of the list item) and the
node of its value. Mapping keys must be text, and a key given twice in one mapping is an
error rather than PyYAML's silent "last one wins".

These files get shared and generated, so a hostile or broken one must fail fast with a
line to edit, never hang or crash the process. The bounds, each a :class:`SpecError`:

- at most :data:`MAX_FILE_BYTES` of UTF-8 text, with no control characters (NUL, ...);
- lists and mappings nested at most :data:`MAX_DEPTH` deep, checked on the parser's events
  *before* composing, because PyYAML's composer recurses once per level;
- at most :data:`MAX_VALUES` values and :data:`MAX_TEXT` characters of text once aliases
  are expanded, since every ``*alias`` becomes a full copy in the built value (the
  "billion laughs" file is a few hundred bytes that expand to 10^9 strings).

libyaml's parser is used where PyYAML has it: the pure-Python one takes seconds on a file
near the size bound.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from agentos.errors import SpecError

MAX_FILE_BYTES = 1024 * 1024
"""The largest agents or config file read: prompts of a few pages fit many times over."""

MAX_DEPTH = 64
"""How deep lists and mappings may nest (JSON schemas in ``response_format`` need ~10)."""

MAX_VALUES = 50_000
"""Lists, mappings and scalars in the built value, counting each alias's expansion."""

MAX_TEXT = 4 * MAX_FILE_BYTES
"""Characters of scalar text in the built value, counting each alias's expansion."""

_CONTROL = re.compile("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
"""What YAML 1.1 does not allow in a stream (PyYAML's reader refuses the same set)."""

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

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
        with path.open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
        if len(raw) > MAX_FILE_BYTES:
            raise SpecError(
                f"file is larger than {MAX_FILE_BYTES // 1024 // 1024} MiB, the most an agents or "
                "config file may be",
                file=file,
            )
        text = raw.decode("utf-8")
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
    _check_characters(text, file)
    root: yaml.Node | None = None
    try:
        _check_events(text, file)
        loader = _Loader(text)
        try:
            root = loader.get_single_node()
            builder = _Builder(loader, file)
            data = None if root is None else builder.build(root, ())
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "not valid YAML"
        context = f" ({exc.context})" if exc.context and exc.problem else ""
        line = None if mark is None else mark.line + 1
        raise SpecError(f"YAML syntax error: {problem}{context}", file=file, line=line) from None
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SpecError(f"YAML error: {first}", file=file) from None
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


def _check_characters(text: str, file: str) -> None:
    """Refuse control characters (NUL, ...) by line and column, as a text editor counts."""
    found = _CONTROL.search(text)
    if found is None:
        return
    line = text.count("\n", 0, found.start()) + 1
    column = found.start() - (text.rfind("\n", 0, found.start()) + 1) + 1
    code = ord(found.group())
    name = unicodedata.name(found.group(), "") or ("NUL" if code == 0 else "a control character")
    raise SpecError(
        f"column {column}: the character U+{code:04X} ({name}) is not allowed; "
        "an agents or config file must be plain text",
        file=file,
        line=line,
    )


def _check_events(text: str, file: str) -> None:
    """Bound nesting depth and size on the parser's events, before anything recurses."""
    loader = _Loader(text)
    depth = count = 0
    try:
        while loader.check_event():
            event = loader.get_event()
            count += 1
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise SpecError(
                        f"lists and mappings are nested more than {MAX_DEPTH} levels deep",
                        file=file,
                        line=_line(event),
                    )
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
            if count > 2 * MAX_VALUES:
                raise SpecError(
                    f"the file holds more than {MAX_VALUES} values (list items, keys and "
                    "values); it is not an agents or config file",
                    file=file,
                    line=_line(event),
                )
    finally:
        loader.dispose()


def _line(event: yaml.Event) -> int | None:
    return None if event.start_mark is None else event.start_mark.line + 1


class _Builder:
    """Turns composed nodes into dicts, lists and scalars, noting each path's line."""

    def __init__(self, loader: yaml.SafeLoader, file: str) -> None:
        self.loader = loader
        self.file = file
        self.lines: dict[RawPath, int] = {}
        self.nodes: dict[RawPath, yaml.Node] = {}
        self._open: set[int] = set()  # nodes being built: an alias to one of them recurses
        self._values = 0
        self._text = 0

    def build(self, node: yaml.Node, path: RawPath) -> Any:
        self.nodes[path] = node
        self._values += 1
        if isinstance(node, yaml.ScalarNode):
            self._text += len(node.value)
        if self._values > MAX_VALUES or self._text > MAX_TEXT:
            what = f"{MAX_VALUES} values" if self._values > MAX_VALUES else "4 MiB of text"
            raise self._error(
                f"the file expands to more than {what} (aliases like '*name' repeat "
                "what their anchor holds); it is not an agents or config file",
                node,
                path,
            )
        if len(path) > MAX_DEPTH:
            raise self._error(
                f"lists and mappings are nested more than {MAX_DEPTH} levels deep "
                "(through aliases)",
                node,
                path,
            )
        if isinstance(node, yaml.ScalarNode):
            try:
                value = self.loader.construct_object(node, deep=True)
            except (ValueError, OverflowError, TypeError) as exc:
                tag = node.tag.rsplit(":", 1)[-1]
                raise self._error(
                    f"'{_clip(node.value)}' cannot be read as {tag}: {exc}", node, path
                ) from None
            if isinstance(value, int) and not -(2**63) <= value < 2**63:
                raise self._error(
                    f"the number '{_clip(node.value)}' is too large: whole numbers go up to "
                    f"{2**63 - 1} (quote it to make it text)",
                    node,
                    path,
                )
            return value
        if id(node) in self._open:
            raise self._error("an alias refers to a node that contains it", node, path)
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

    def _error(self, message: str, node: yaml.Node, path: RawPath) -> SpecError:
        return SpecError(
            message, file=self.file, line=node.start_mark.line + 1, key=format_key(path) or None
        )

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


def _clip(text: str, limit: int = 40) -> str:
    """``text`` shortened for an error message."""
    return text if len(text) <= limit else text[: limit - 3] + "..."
