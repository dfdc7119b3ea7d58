"""The ``safetransfer`` command line: a thin layer over the Python API, one module per command group.

Each command parses its options, calls one library or job function, and prints what it returns.
The library is imported inside each command, not at the top of these modules: importing it
whole means importing torch (about 3 s on 2 cores, measured), and this way ``safetransfer
--help`` and the commands that need no torch start in about 0.3 s. (Elsewhere in the package
every import sits at the top of its module; ``tests/test_structure.py`` checks both.)
"""

# Each module registers its commands on the app when imported; `--help` lists them in this order.
# isort: off
from safetransfer.cli import listings, training, study, supply, poisoned_data, text, reprogram, assets  # noqa: F401
# isort: on
from safetransfer.cli.app import app, describe_unexpected, entry, main

__all__ = ["app", "describe_unexpected", "entry", "main"]
