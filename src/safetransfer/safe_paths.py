"""Paths a user hands us, checked before anything opens them.

Opening a FIFO for reading blocks until some writer appears, and a character device (``/dev/zero``,
``/dev/urandom``) never ends, so every file safetransfer reads on a user's say-so is first checked
with ``os.stat`` (which opens nothing) to be a regular file of a bounded size. Output files are
checked not to be folders, and files found inside a model folder are checked not to lead outside it.

Every check raises the :class:`~safetransfer.errors.SafetransferError` subclass its caller names,
with a message naming the path and the fix; nothing here imports more than the standard library
and :mod:`safetransfer.errors` (a leaf module).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safetransfer.errors import ConfigError, SafetransferError

KIB = 1 << 10
MIB = 1 << 20
# The largest JSON documents read whole into memory: a config (a model's config.json is a few
# KiB; 10,000 class names fit in well under 1 MiB), and a document a run wrote (a manifest,
# about 250 KiB per 1,000 tensors; a results.json).
MAX_CONFIG_BYTES = 4 * MIB
MAX_DOCUMENT_BYTES = 64 * MIB


def file_kind(mode: int) -> str:
    """A word for what an ``st_mode`` is: ``regular file``, ``folder``, ``FIFO (named pipe)``, ..."""
    for test, word in ((stat.S_ISREG, "regular file"), (stat.S_ISDIR, "folder"), (stat.S_ISFIFO, "FIFO (named pipe)"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISSOCK, "socket")):
        if test(mode):
            return word
    return "special file"


def regular_file(path: str | Path, what: str, max_bytes: int | None = None,
                 error: type[SafetransferError] = SafetransferError) -> Path:
    """``path`` as a :class:`~pathlib.Path` once it is known to be a regular file (symlinks followed)
    of at most ``max_bytes`` bytes; nothing is opened.

    Raises ``error`` naming ``what`` the file should be when it does not exist, is a folder, a
    FIFO, a device or a socket (which would hang or never end when read), cannot be examined,
    or is larger than ``max_bytes``.
    """
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise error(f"No such {what}: {p}.") from None
    except OSError as err:  # a symlink loop, a permission problem, a name too long
        raise error(f"{p}: cannot examine the {what} ({err.strerror or err}).") from None
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{p} is a {file_kind(st.st_mode)}, not a regular file: give the {what} as a plain file.")
    if max_bytes is not None and st.st_size > max_bytes:
        raise error(f"{p} is {st.st_size:,} bytes, more than the {max_bytes:,} a {what} may have; "
                    f"is it the right file?")
    return p


def read_text_bounded(path: str | Path, what: str, max_bytes: int = MAX_CONFIG_BYTES,
                      error: type[SafetransferError] = SafetransferError) -> str:
    """The UTF-8 text of the regular file ``path`` (see :func:`regular_file`), at most ``max_bytes``
    bytes; a file that grew past the bound while being read, or is not UTF-8, raises ``error``."""
    p = regular_file(path, what, max_bytes, error)
    try:
        with p.open("rb") as f:
            raw = f.read(max_bytes + 1)
    except OSError as err:
        raise error(f"{p}: cannot read the {what} ({err.strerror or err}).") from None
    if len(raw) > max_bytes:
        raise error(f"{p} is more than the {max_bytes:,} bytes a {what} may have.")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise error(f"{p} is not UTF-8 text ({err.reason} at byte {err.start}): not a {what}.") from None



def read_json_bounded(path: str | Path, what: str, max_bytes: int = MAX_CONFIG_BYTES,
                      error: type[SafetransferError] = SafetransferError) -> Any:
    """The JSON document in the regular file ``path`` (:func:`read_text_bounded`); text that is not
    JSON, or is nested too deeply to parse, raises ``error`` naming the file."""
    text = read_text_bounded(path, what, max_bytes, error)
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:
        raise error(f"{path} is not valid JSON ({type(err).__name__}: {err}).") from None

def output_file(path: str | Path, what: str = "output file") -> Path:
    """``path`` as a :class:`~pathlib.Path` once it can be written as a file: not an existing
    folder (nor something else that is not a regular file), and its parent, if it exists, a
    folder. Raises :class:`~safetransfer.errors.ConfigError` naming the path and the fix."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        st = None
    except OSError as err:
        raise ConfigError(f"{p}: cannot write the {what} there ({err.strerror or err}).") from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        hint = f"give a file name, e.g. {p / 'out.json'}" if stat.S_ISDIR(st.st_mode) else "give a plain file name"
        raise ConfigError(f"{p} is a {file_kind(st.st_mode)}, not a file: the {what} cannot be written there; {hint}.")
    parent = p.parent
    for ancestor in (parent, *parent.parents):
        if ancestor.exists() or ancestor.is_symlink():
            if not ancestor.is_dir():
                raise ConfigError(f"{ancestor} is not a folder, so the {what} {p} cannot be written under it.")
            break
    return p


def outside_folder(path: Path, root: Path) -> str | None:
    """Why reading ``path`` (an entry found inside the folder ``root``) would leave the folder or
    hang, or ``None`` when it is a regular file whose real location is inside ``root``.

    Symlinks are resolved without following them blindly: a loop or a dangling link is named,
    not read; a link whose target lies outside ``root`` (e.g. ``/etc/shadow``) is named with its
    target; a FIFO, device or socket is named by its kind.
    """
    real_root = os.path.realpath(root)
    try:
        st = os.stat(path)  # follows the links: ELOOP for a loop, ENOENT for a dangling link
    except OSError as err:
        return f"a broken or looping symlink ({err.strerror or err}), not followed" if os.path.islink(path) \
            else f"cannot be examined ({err.strerror or err})"
    real = os.path.realpath(path)
    if os.path.commonpath([real_root, real]) != real_root:
        return f"a symlink to {real}, outside the folder, not followed"
    if not stat.S_ISREG(st.st_mode):
        return f"a {file_kind(st.st_mode)}, not read"
    return None


def copy_folder_within(src: Path, dst: Path, skip: Callable[[str], bool] = lambda name: False,
                       error: type[SafetransferError] = ConfigError) -> None:
    """Copy the regular files and sub-folders of the folder ``src`` into the folder ``dst``, leaving
    out the entries whose name ``skip`` accepts. Nothing outside ``src`` is read: a symlink that
    leads out of it (``tokenizer.json -> /etc/shadow``), a looping or dangling link, a FIFO or a
    device raises ``error`` naming the entry (:func:`outside_folder`), before any copy; a link
    whose target lies inside ``src`` is copied as the file it names."""
    root = Path(src)

    def plan(folder: Path, into: Path) -> list[tuple[Path, Path]]:
        pairs: list[tuple[Path, Path]] = []
        for entry in sorted(folder.iterdir()):
            if skip(entry.name):
                continue
            if entry.is_dir() and not entry.is_symlink():
                pairs += [(entry, into / entry.name)] + plan(entry, into / entry.name)
                continue
            why = outside_folder(entry, root)
            if why is not None:
                raise error(f"{entry}: {why}; the folder is not copied (copy the files it needs into it instead).")
            pairs.append((entry, into / entry.name))
        return pairs

    for source, target in plan(root, Path(dst)):
        if source.is_dir() and not source.is_symlink():
            target.mkdir(parents=True, exist_ok=True)
        else:
            shutil.copyfile(source, target)
