"""The router's exceptions."""

from __future__ import annotations


class RouterError(Exception):
    """Anything the router cannot do: bad configuration, an unusable model, an empty query."""


class ModelNotFoundError(RouterError):
    """The embedding model is not installed or not at the configured path; the message names the fix."""
