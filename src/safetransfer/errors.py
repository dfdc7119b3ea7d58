"""The project's exceptions: each names the problem and the fix.

The CLI prints the message of a :class:`SafetransferError` on one line and exits with
status 2, never a traceback; the Python API raises them as they are.
"""

from __future__ import annotations


class SafetransferError(Exception):
    """Base class of every error safetransfer raises on purpose (bad input, missing asset)."""


class AssetMissingError(SafetransferError):
    """An offline asset (data set files, pretrained weights) is not installed."""


class UnknownNameError(SafetransferError, KeyError):
    """A model, data set or option name that is not known."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DataError(SafetransferError, ValueError):
    """A data set is empty, malformed, or its labels are out of range."""


class CheckpointError(SafetransferError):
    """A checkpoint or weight file is missing, corrupt, unsafe or does not match the model."""


class ConfigError(SafetransferError, ValueError):
    """A parameter value that cannot work (a negative learning rate, zero steps, ...)."""


def unknown_name(kind: str, name: str, known: list[str] | tuple[str, ...]) -> UnknownNameError:
    """Build the error for an unknown ``name`` of ``kind``, listing the known ones and a near match."""
    import difflib

    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return UnknownNameError(
        f"Unknown {kind} '{name}'.{hint} Known: {', '.join(sorted(known))}."
    )
