"""Self-contained HTML pages (the shared style sheet, PNGs embedded as data URIs): a leaf every
page writer uses (the study report, the scan-data page). Imports nothing of safetransfer but its version."""

from __future__ import annotations

import base64
import datetime as _dt
from html import escape
from pathlib import Path

from safetransfer import __version__

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto; max-width: 1200px;
       padding: 0 1rem; color: #1d1d1f; line-height: 1.45; }
h1 { margin-bottom: .2rem; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2rem; margin-top: 2.2rem; }
h3 { margin-top: 1.4rem; }
.meta { color: #555; font-size: .92rem; }
.partial { background: #fff6d6; border: 1px solid #e6c200; padding: .5rem .8rem; border-radius: 4px; }
.error { color: #a00; }
dl.metrics dt { font-weight: bold; float: left; clear: left; width: 4rem; }
dl.metrics dd { margin-left: 4.5rem; margin-bottom: .4rem; }
.units { color: #555; font-size: .88rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: .88rem; margin: .6rem 0; }
th, td { border: 1px solid #d0d0d0; padding: .25rem .55rem; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.pending, td.undefined { color: #999; text-align: center; }
tr.ref td { background: #eef5ff; font-weight: 600; }
figure { margin: 1rem 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: .85rem; }
pre { background: #f7f7f7; border: 1px solid #e3e3e3; padding: .7rem; overflow-x: auto; font-size: .82rem; }
footer { margin-top: 3rem; color: #888; font-size: .8rem; }
"""


def embed_png(path: str | Path, caption: str) -> str:
    """A ``<figure>`` holding the PNG at ``path`` as a base64 data URI, with its caption."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{escape(caption)}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>")


def page(title: str, parts: list[str]) -> str:
    """A whole self-contained HTML page: the shared CSS, ``title``, the ``parts`` and a footer."""
    stamp = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    footer = f"<footer>Written by safetransfer {escape(__version__)} on {escape(stamp)}.</footer>"
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(p for p in [*parts, footer] if p) + "\n</body></html>\n")
