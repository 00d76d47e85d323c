"""What agents.yaml and config.yaml share on the pydantic side.

- :class:`SpecModel`, the base of every model a user writes: unknown keys are rejected and
  the docstring under each field becomes its description (the reference documentation).
- :func:`normalise_keys`: ``kebab-case`` keys become ``snake_case`` wherever a model
  defines the keys, never inside free-form values (``vars``, ``response_format``,
  ``headers``), and every key's path as written is remembered in a :class:`Locator`.
- :func:`spec_error`: one pydantic ``ValidationError`` becomes one :class:`SpecError` that
  names the file, the line and the key path *as the user wrote it*.

Model paths (pydantic's ``loc``, in snake_case, after flattening) are :data:`CanonPath`;
paths as written are :data:`~agentos.spec.yamlsrc.RawPath`. A locator maps the former to
the latter; below the deepest recorded path the two are spelled the same.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError

from agentos.errors import SpecError
from agentos.spec.yamlsrc import RawPath, SourceDocument, format_key

CanonPath = tuple[str | int, ...]
"""A path of field names and indexes in the models (pydantic's ``loc``)."""


class SpecModel(BaseModel):
    """Base of the models users write in YAML: strict about keys, documented per field."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


def snake(key: str) -> str:
    """``response-format`` → ``response_format``; both spellings are accepted everywhere."""
    return key.replace("-", "_")


@dataclass
class Locator:
    """Where one validated object (an agent, a whole config) came from in its file.

    ``root`` is the raw path of the object; ``origin`` maps model paths, relative to the
    object, to raw paths from the top of the file. ``label`` optionally renames a raw
    prefix for display: an AgencyOS item ``- agent: {...}`` at index 0 reads ``agent[0]``.
    """

    doc: SourceDocument
    root: RawPath = ()
    label: tuple[RawPath, str] | None = None
    origin: dict[CanonPath, RawPath] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.origin.setdefault((), self.root)

    def raw_path(self, loc: CanonPath) -> RawPath:
        """The path as written for model path ``loc`` (deepest recorded prefix + rest)."""
        for end in range(len(loc), -1, -1):
            hit = self.origin.get(loc[:end])
            if hit is not None:
                return hit + loc[end:]
        return self.root + loc

    def key(self, raw: RawPath) -> str:
        """The dotted key path shown to the user."""
        if self.label is not None:
            prefix, text = self.label
            if raw[: len(prefix)] == prefix:
                rest = format_key(raw[len(prefix) :])
                return text + ("" if not rest else rest if rest.startswith("[") else f".{rest}")
        return format_key(raw)

    def error(self, message: str, raw: RawPath, *, line: int | None = None) -> SpecError:
        """A :class:`SpecError` about the key at ``raw`` (its line unless ``line`` is given)."""
        return SpecError(
            message,
            file=self.doc.file,
            line=self.doc.line_of(raw) if line is None else line,
            key=self.key(raw) or None,
        )

    def duplicate(self, first: RawPath, second: RawPath) -> SpecError:
        """Two spellings of one key (``input-sink`` and ``input_sink``) in one object."""
        return self.error(
            f"key '{second[-1]}' repeats '{first[-1]}' (line {self.doc.line_of(first)}); "
            "give it once",
            second,
        )


def normalise_keys(
    value: Any, annotation: Any, raw: RawPath, canon: CanonPath, locator: Locator
) -> Any:
    """``value`` with the keys of every model-shaped mapping in snake_case.

    ``annotation`` is the type the value will be validated as; only mappings that validate
    as a model have their keys renamed, so the keys of ``vars`` or of a response format
    stay exactly as written. Each renamed key's raw path is recorded in ``locator``.
    """
    target = _unwrap(annotation)
    if isinstance(value, dict):
        model = _model_for(annotation, value)
        if model is None:
            return value
        result: dict[str, Any] = {}
        for key, item in value.items():
            name = snake(key)
            path = (*canon, name)
            if name in result:
                raise locator.duplicate(locator.origin[path], (*raw, key))
            locator.origin[path] = (*raw, key)
            member = model.model_fields.get(name)
            result[name] = normalise_keys(
                item, None if member is None else member.annotation, (*raw, key), path, locator
            )
        return result
    if isinstance(value, list) and get_origin(target) is list:
        (item_type,) = get_args(target)
        items = []
        for index, item in enumerate(value):
            locator.origin[(*canon, index)] = (*raw, index)
            items.append(normalise_keys(item, item_type, (*raw, index), (*canon, index), locator))
        return items
    return value


def spec_error(
    exc: ValidationError, model: type[BaseModel], locator: Locator, *, show_inputs: bool
) -> SpecError:
    """The first of pydantic's errors as a :class:`SpecError`, counting the others.

    ``show_inputs`` adds the offending scalar value to the message; config files pass
    ``False`` because a value there may hold a secret (read from the environment, or an
    API key written as a number).
    """
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc, owner, annotation = _walk(model, tuple(first["loc"]))
    raw = locator.raw_path(loc)
    kind = first["type"]
    ctx = first.get("ctx") or {}
    if kind == "missing":
        name = _spelled_like(str(raw[-1]), locator.doc.data, raw[:-1])
        raw = (*raw[:-1], name)
        message = f"missing required key '{name}'"
    elif kind == "extra_forbidden":
        message = f"unknown key '{raw[-1]}'; allowed keys: " + ", ".join(
            _allowed_keys(owner, str(raw[-1]), str(loc[-1]))
        )
    elif kind in ("union_tag_invalid", "union_tag_not_found"):
        choice = _discriminated(annotation)
        name = ctx.get("discriminator", "'type'").strip("'")
        tags = ", ".join(f"'{tag}'" for tag in choice[1]) if choice else ""
        raw = (*raw, name)
        message = (
            f"'{ctx.get('tag')}' is not a known {name}; expected one of {tags}"
            if kind == "union_tag_invalid"
            else f"missing required key '{name}' (one of {tags})"
        )
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        message = "should be a mapping of keys to values"
    elif kind == "list_type":
        message = "should be a list"
    else:
        message = _readable(first["msg"])
        given = first.get("input")
        if show_inputs and isinstance(given, str | bool | int | float):
            shown = repr(given)
            message += f" (got {shown if len(shown) <= 60 else shown[:57] + '...'})"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more)"
    return locator.error(message, raw)


def _readable(message: str) -> str:
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    if message.startswith("Input should"):
        return message[len("Input ") :]
    return message[:1].lower() + message[1:]


def _spelled_like(name: str, data: Any, parent: RawPath) -> str:
    """``name`` in kebab-case when the mapping it belongs in is written in kebab-case."""
    for segment in parent:
        try:
            data = data[segment]
        except (KeyError, IndexError, TypeError):
            return name
    if isinstance(data, dict) and any("-" in key for key in data):
        return name.replace("_", "-")
    return name


def _allowed_keys(owner: type[BaseModel] | None, written: str, canonical: str) -> list[str]:
    """The keys ``owner`` accepts, spelled the way ``written`` is (prefix and dashes)."""
    if owner is None:
        return []
    prefix = ""
    if snake(written) != canonical and snake(written).endswith(canonical):
        prefix = snake(written)[: -len(canonical)]  # a flattened `life-cycle-foo`
    names = [prefix + name for name in owner.model_fields]
    return [name.replace("_", "-") for name in names] if "-" in written else names


def _walk(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[CanonPath, Any, Any]:
    """Follow pydantic's ``loc`` through the model types.

    Returns the path without the tags pydantic inserts for discriminated unions
    (``engines.0.openai.base_url`` → ``engines.0.base_url``) and for plain unions, the
    model that owns the last key, and the type found at the end of the path.
    """
    path: list[str | int] = []
    owner: Any = None
    current: Any = model
    for segment in loc:
        choice = _discriminated(current)
        if choice is not None and segment in choice[1]:
            current = choice[1][segment]
            continue
        target = _unwrap(current)
        if _is_union(target) and isinstance(segment, str):
            continue  # pydantic names the union member it tried, e.g. 'dict[str,any]'
        path.append(segment)
        if isinstance(target, type) and issubclass(target, BaseModel):
            owner = target
            member = target.model_fields.get(str(segment))
            current = None if member is None else member.annotation
        elif get_origin(target) is list:
            current = get_args(target)[0]
        elif get_origin(target) is dict:
            current = get_args(target)[1]
        else:
            current = None
    return tuple(path), owner, current


def _is_union(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType)


def _unwrap(annotation: Any) -> Any:
    """The type inside ``Annotated[...]`` and ``X | None``."""
    while True:
        if get_origin(annotation) is Annotated:
            annotation = get_args(annotation)[0]
            continue
        if _is_union(annotation):
            members = [arg for arg in get_args(annotation) if arg is not type(None)]
            if len(members) == 1:
                annotation = members[0]
                continue
        return annotation


def _discriminated(annotation: Any) -> tuple[str, dict[str, type[BaseModel]]] | None:
    """``(discriminator, {tag: model})`` for an ``Annotated[A | B, Field(discriminator)]``."""
    name: str | None = None
    while get_origin(annotation) is Annotated:
        base, *metadata = get_args(annotation)
        for item in metadata:
            if isinstance(getattr(item, "discriminator", None), str):
                name = item.discriminator
        annotation = base
    if name is None or not _is_union(annotation):
        return None
    tags: dict[str, type[BaseModel]] = {}
    for member in get_args(annotation):
        for tag in get_args(member.model_fields[name].annotation):
            tags[tag] = member
    return name, tags


def _model_for(annotation: Any, value: dict[str, Any]) -> type[BaseModel] | None:
    """The model a mapping will be validated as, choosing a union member by its tag."""
    choice = _discriminated(annotation)
    if choice is not None:
        name, tags = choice
        tag = value.get(name)
        return tags.get(tag) if isinstance(tag, str) else None
    target = _unwrap(annotation)
    if isinstance(target, type) and issubclass(target, BaseModel):
        return target
    return None


__all__ = [
    "CanonPath",
    "Locator",
    "SpecModel",
    "normalise_keys",
    "snake",
    "spec_error",
]
