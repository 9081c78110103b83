"""Register a botocore event handler on every client of this process, old sessions included."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import botocore.handlers


@contextmanager
def handler_registered(
    event_name: str, handler: Callable[..., Any], first: bool = False
) -> Iterator[None]:
    """Register the handler for clients made while the block runs, from any session.

    New sessions read botocore's built-in handler list when they are made; boto3's default
    session may already exist, so it gets the handler directly too.
    """
    entry = (event_name, handler)
    if first:
        botocore.handlers.BUILTIN_HANDLERS.insert(0, entry)
    else:
        botocore.handlers.BUILTIN_HANDLERS.append(entry)
    session = boto3.DEFAULT_SESSION._session if boto3.DEFAULT_SESSION else None
    if session is not None:
        if first:
            session.register_first(event_name, handler)
        else:
            session.register(event_name, handler)
    try:
        yield
    finally:
        botocore.handlers.BUILTIN_HANDLERS.remove(entry)
        if session is not None:
            session.unregister(event_name, handler)
