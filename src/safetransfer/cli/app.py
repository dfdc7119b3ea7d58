"""The ``safetransfer`` application: the typer app the command modules register on, the consoles,
and :func:`main`, which turns every error into one line.

Every command's errors that come from bad input (:class:`SafetransferError`) are printed as
one line, ``error: ...``, with exit status 2; never a traceback. Any other exception that
escapes a command (an ``OSError``, a ``RecursionError`` or ``MemoryError`` from a hostile
file, a library's own error) is printed the same way, naming its kind and the file where it
is known; ``safetransfer --debug COMMAND ...`` prints the traceback as well.
"""

from __future__ import annotations

import sys
import traceback

import click
import typer
from rich.console import Console
from rich.markup import escape

from safetransfer.errors import SafetransferError

app = typer.Typer(
    name="safetransfer",
    help="Security of transfer learning: plant, measure, cut and detect what a student inherits from its teacher.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)
_debug = False  # set by --debug (the app's callback): tracebacks are printed with the error line


@app.callback()
def _options(
    debug: bool = typer.Option(False, "--debug", help="On an error, print the full traceback too (for bug reports)."),
) -> None:
    """Security of transfer learning: plant, measure, cut and detect what a student inherits from its teacher."""
    global _debug
    _debug = debug


# usage errors (an unknown option, a missing one, a malformed number), each with click's usage
# message: click's own, or those of the click that recent typer releases carry inside themselves
USAGE_ERRORS = (click.ClickException, getattr(typer, "TyperException", click.ClickException))


def describe_unexpected(err: BaseException) -> str:
    """One line for an exception that is not a :class:`SafetransferError`: its kind, what went
    wrong, and the file where the exception names one (``OSError.filename``)."""
    filename, other = getattr(err, "filename", None), getattr(err, "filename2", None)
    where = f"{filename} -> {other}: " if filename and other else f"{filename}: " if filename else ""
    if isinstance(err, RecursionError):
        what = "the input is nested too deeply to read (RecursionError); the file is malformed or hostile"
    elif isinstance(err, MemoryError):
        what = "out of memory (MemoryError): an input asks for more memory than this machine has"
    elif isinstance(err, OSError):
        what = f"{err.strerror or err} ({type(err).__name__})"
    else:
        text = " ".join(str(err).split())  # one line, whatever the library wrote
        if len(text) > 300:
            text = text[:300] + "..."
        what = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return f"{where}{what}"


def _print_error(message: str, err: BaseException, hint: bool = False) -> None:
    """Print ``error: message`` on stderr as one line; with ``--debug``, the traceback first
    (``hint``: otherwise say that ``--debug`` shows it)."""
    if _debug:
        traceback.print_exception(type(err), err, err.__traceback__, file=sys.stderr)
    elif hint:
        message += " (`safetransfer --debug COMMAND ...` shows the traceback)"
    err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning every error into a one-line message (exit 2).

    :class:`SafetransferError` messages are printed as they are; any other exception that
    escapes a command becomes one line naming its kind (and its file where known). ``--debug``
    adds the traceback. Usage errors keep click's message; an interrupt exits with 130.
    """
    global _debug
    _debug = False
    try:
        code = app(args=argv, standalone_mode=False)  # click returns typer.Exit's code here
    except SafetransferError as err:
        _print_error(str(err), err)
        return 2
    except (click.exceptions.Exit, typer.Exit) as e:
        return e.exit_code
    except USAGE_ERRORS as e:
        e.show()
        return e.exit_code
    except (click.exceptions.Abort, typer.Abort):
        err_console.print("aborted")
        return 130
    except KeyboardInterrupt as err:
        err_console.print(f"interrupted: {err or 'stopped'}; run the same command again to resume.")
        return 130
    except Exception as err:  # noqa: BLE001 - the one place every other error becomes a line
        _print_error(describe_unexpected(err), err, hint=True)
        return 2
    return code if isinstance(code, int) else 0


def entry() -> None:
    sys.exit(main())
