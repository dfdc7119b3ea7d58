"""``python -m safetransfer.cli``: the command line."""

from safetransfer.cli.app import entry

entry()
