"""Lenient readers of the JSON documents AWS delivers: a field of the wrong shape is absent."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError

from cloud_sniper.domain.errors import InvalidFindingError
from cloud_sniper.domain.models import IndicatorKind

_TIMESTAMP = TypeAdapter(datetime)


def as_dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else []


def text(value: Any) -> str | None:
    """A non-blank string, stripped, or None."""
    if not isinstance(value, str):
        return None
    return value.strip() or None


def as_bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def as_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def is_true(value: Any) -> bool:
    """True, or a string saying so in any case: AWS writes both."""
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def first(*values: str | None) -> str | None:
    return next((value for value in values if value), None)


def unique(values: Iterable[str | None]) -> list[str]:
    """The values that are set, each once, in order."""
    return list(dict.fromkeys(value for value in values if value))


def json_type(value: Any) -> str:
    """The JSON name of a value's type, for an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return {dict: "object", list: "array", str: "string"}.get(type(value), type(value).__name__)


def timestamp(value: Any, path: str) -> datetime:
    """Read a timestamp; one without a zone is UTC, as AWS writes them, so every one compares.

    Raises InvalidFindingError naming the field at `path`.
    """
    try:
        stamp = _TIMESTAMP.validate_python(value)
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"]
        raise InvalidFindingError(f"{path}: {reason} ({value!r:.40})") from exc
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def address(raw: Any) -> tuple[IndicatorKind, str] | None:
    """An IP address as an indicator's kind and canonical value, or None when it is not one."""
    if not isinstance(raw, str):
        return None
    try:
        parsed = ipaddress.ip_address(raw.strip())
    except ValueError:
        return None
    # An IPv4 peer seen through a dual-stack socket is blocked and known as the IPv4 address.
    if parsed.version == 6 and parsed.ipv4_mapped:
        parsed = parsed.ipv4_mapped
    kind = IndicatorKind.IPV4 if parsed.version == 4 else IndicatorKind.IPV6
    return kind, str(parsed)
