"""A pydantic validation error of `params.yaml` as the one line a user reads: the key, the value
and what is allowed (the first error only; unknown keys first)."""

from __future__ import annotations

import re
from typing import Any, get_args, get_origin

from pydantic import BaseModel, ValidationError

from stages.lib.core.variants import suggest


def describe(error: ValidationError, root: type[BaseModel]) -> str:
    """One validation error as one line: key, value, what is allowed.

    Unknown keys come first: a misspelt key also shows up as the missing key it was meant to be.
    """
    errors = error.errors(include_url=False)
    first = min(errors, key=lambda e: e["type"] != "extra_forbidden")
    loc = first["loc"]
    key = _key(loc)
    value = first.get("input")
    if first["type"] == "extra_forbidden":
        valid = _fields_at(root, loc[:-1])
        prefix = _key(loc[:-1]) + "." if len(loc) > 1 else ""
        return (
            f"unknown key {key!r}{suggest(str(loc[-1]), valid, prefix)}; "
            f"allowed here: {', '.join(valid)}"
        )
    if first["type"] == "missing":
        return f"missing key {key!r}; params.yaml states every setting (no hidden defaults)"
    if first["type"] == "literal_error":
        allowed = _literal_choices(first)
        return (
            f"{key}: {value!r} is not supported{suggest(str(value), allowed)}; "
            f"allowed: {', '.join(allowed)}"
        )
    message = first["msg"].removeprefix("Value error, ")
    if isinstance(value, dict):  # a rule across keys of a section: the message names them
        return f"{key}.{message}"
    return f"{key}: {message} (got {value!r})"


def _key(loc: tuple[Any, ...]) -> str:
    """`report.interactions[0].rows`: list positions in brackets."""
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)[1:]


def _literal_choices(error: Any) -> tuple[str, ...]:
    expected = error.get("ctx", {}).get("expected", "")
    return tuple(re.findall(r"'([^']*)'", expected))


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The valid keys of the (nested) model at `loc`."""
    for part in loc:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[str(part)].annotation
        if get_origin(annotation) is list:  # list[Model]: the keys of one item
            annotation = get_args(annotation)[0]
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)
