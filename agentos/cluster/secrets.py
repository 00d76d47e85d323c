"""Keeping config secrets (engine API keys and the like) out of what Ray ships and keeps.

Ray keeps an actor's creation arguments in its control store (GCS) for as long as the
actor may be restarted, and sends a task's arguments to whichever node runs it. So what
crosses Ray is the config with its secrets taken out (:func:`split_secrets`): every
:class:`~pydantic.SecretStr` in it, wherever it sits (engines' ``api_key``, the vector
store's, ``serve.keys``), found by walking the models, so a secret field added later is
covered too. Workers on other nodes only ever get that config; the router actor, which
opens the engines, gets the secrets afterwards in one method call from the driver
(:meth:`~agentos.cluster.router_actor.RouterActor.start`), whose arguments Ray does not
keep, and puts them back with :func:`with_secrets`.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, SecretStr

Model = TypeVar("Model", bound=BaseModel)

Path = tuple[str | int, ...]
"""Where a secret sits: field names and list indexes from the top model."""


def split_secrets(model: Model) -> tuple[Model, dict[Path, str]]:
    """``model`` with every SecretStr emptied (None where the field may be None), and the
    secrets by where they were. ``model`` itself is not changed."""
    secrets: dict[Path, str] = {}
    public = _without(model, (), secrets)
    return public, secrets


def with_secrets(model: Model, secrets: dict[Path, str]) -> Model:
    """``model`` (made by :func:`split_secrets`) with ``secrets`` put back."""
    for path, value in secrets.items():
        model = _replace(model, path, SecretStr(value))
    return model


def _without(value: Any, path: Path, secrets: dict[Path, str]) -> Any:
    if isinstance(value, SecretStr):
        secrets[path] = value.get_secret_value()
        return None
    if isinstance(value, BaseModel):
        changes: dict[str, Any] = {}
        for name, field in type(value).model_fields.items():
            current = getattr(value, name)
            stripped = _without(current, (*path, name), secrets)
            if stripped is not current:
                if stripped is None and isinstance(current, SecretStr) and field.is_required():
                    stripped = SecretStr("")
                changes[name] = stripped
        return value.model_copy(update=changes) if changes else value
    if isinstance(value, list):
        items = [_without(item, (*path, i), secrets) for i, item in enumerate(value)]
        if any(new is not old for new, old in zip(items, value, strict=True)):
            return items
    return value


def _replace(value: Any, path: Path, secret: SecretStr) -> Any:
    if not path:
        return secret
    head, rest = path[0], path[1:]
    if isinstance(value, BaseModel) and isinstance(head, str):
        return value.model_copy(update={head: _replace(getattr(value, head), rest, secret)})
    if isinstance(value, list) and isinstance(head, int):
        items = list(value)
        items[head] = _replace(items[head], rest, secret)
        return items
    raise ValueError(f"no secret can go at {'.'.join(map(str, path))}")
