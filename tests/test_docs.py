"""The results pages under docs/ are what benchmarks/make_docs.py writes from benchmarks/results/*.json,
and the README stays short and starts with the two set-up commands."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import typer

from safetransfer.cli import app  # the package registers every command on it
from safetransfer.transfer.config import ARTIFACT_STEPS, default_train_config

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "make_docs.py"
RESULTS = ROOT / "benchmarks" / "results"
DOCS = ROOT / "docs"
README = ROOT / "README.md"


def _make_docs(out: Path, results: Path = RESULTS) -> None:
    run = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--results", str(results)],
                         check=False, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr


def _pages(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.md"))}


def test_committed_docs_are_exactly_what_the_results_files_give(tmp_path: Path) -> None:
    _make_docs(tmp_path)
    made, committed = _pages(tmp_path), _pages(DOCS)
    assert set(made) == set(committed), (
        f"docs/ holds {sorted(set(committed) - set(made))} that make_docs.py does not write and lacks "
        f"{sorted(set(made) - set(committed))}: run `make docs`")
    stale = [rel for rel in made if made[rel] != committed[rel]]
    assert not stale, f"docs/{stale} differ from what benchmarks/results/*.json gives: run `make docs` and commit the pages"


def test_the_same_results_give_the_same_bytes(tmp_path: Path) -> None:
    _make_docs(tmp_path / "a")
    _make_docs(tmp_path / "b")
    assert _pages(tmp_path / "a") == _pages(tmp_path / "b")


def test_a_figure_is_read_from_its_results_file(tmp_path: Path) -> None:
    """Change one figure in a copy of the results: the page shows the new figure, not the old one."""
    results = tmp_path / "results"
    shutil.copytree(RESULTS, results)
    doc = json.loads((results / "study_vision_quick.json").read_text())
    old = doc["methods"]["remos"]["acc"]
    doc["methods"]["remos"]["acc"] = 0.1234
    (results / "study_vision_quick.json").write_text(json.dumps(doc))
    _make_docs(tmp_path / "out", results)
    page = (tmp_path / "out" / "results" / "vision-study.md").read_text()
    row = next(line for line in page.splitlines() if line.startswith("| remos |"))
    assert "0.123" in row and f"{old:.3f}" not in row


def test_every_results_file_is_on_the_index_with_its_command() -> None:
    index = (DOCS / "index.md").read_text()
    for path in sorted(RESULTS.glob("*.json")):
        line = next((ln for ln in index.splitlines() if ln.startswith(f"| `{path.name}` |")), None)
        assert line is not None, f"{path.name} is on no results page: give it a section in benchmarks/make_docs.py"
        assert line.split("|")[2].strip().startswith(("`python ", "`safetransfer ")), line


def test_readme_is_short_and_starts_with_make_demo_and_make_test() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines; findings belong on the docs/ pages"
    body = [ln for ln in lines[1:] if ln.strip()]  # after the title
    assert body[0] == "```bash"
    assert body[1].startswith("make demo ") and body[2].startswith("make test ")
    assert body[3] == "```"


def test_readme_links_to_docs_resolve() -> None:
    links = re.findall(r"\]\((docs/[^)#]+)", README.read_text())
    assert links, "the README links to no results page"
    missing = [link for link in links if not (ROOT / link).exists()]
    assert not missing, missing


def test_make_docs_artifact_constants_are_the_transfer_configs() -> None:
    """make_docs reads JSON only (no safetransfer import), so it keeps its own copy of the ReMoS artifact's
    batch and step budget; this ties the copy to the protocol the students were trained under."""
    spec = importlib.util.spec_from_file_location("make_docs", SCRIPT)
    assert spec is not None and spec.loader is not None
    make_docs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_docs)
    assert make_docs.ARTIFACT_STEPS == ARTIFACT_STEPS
    assert make_docs.ARTIFACT_BATCH == default_train_config("efficientnet-lite0", protocol="artifact").batch_size


def cli_options() -> set[str]:
    """Every long option of the ``safetransfer`` command and its subcommands (nested groups included)."""
    found, todo = set(), [typer.main.get_command(app)]
    while todo:
        command = todo.pop()
        found |= {o for p in command.params for o in (*p.opts, *p.secondary_opts) if o.startswith("--")}
        todo += list(getattr(command, "commands", {}).values())  # a group's subcommands
    return found | {"--help"}  # click adds it to every command


def test_every_option_the_readme_names_exists() -> None:
    options = cli_options()
    assert {"--debug", "--profile", "--excluded"} <= options
    not_ours = {"--no-deps"}  # pip's, in an install line
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", README.read_text())) - not_ours
    assert named - options == set(), "the README names options no command has"


def _section(page: str, heading: str) -> str:
    """The text of ``page`` from the line starting with ``heading`` to the next heading of the same level."""
    level = heading.split(" ")[0]
    lines = page.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.startswith(heading)), None)
    assert start is not None, f"no heading {heading!r} on the page"
    end = next((i for i in range(start + 1, len(lines)) if lines[i].split(" ")[0] == level), len(lines))
    return "\n".join(lines[start:end])


def test_readme_method_advice_quotes_the_default_study() -> None:
    """The README's table of transfer methods and its "Which method to choose" give figures of the default (full)
    study, not of another profile: every decimal they quote is one of that section's figures at the README's
    precision."""
    readme = README.read_text()
    advice = "\n".join(p for p in readme.split("\n\n")
                       if p.startswith(("**Which method to choose**", "| method | what it does | protocol |")))
    section = _section((DOCS / "results" / "vision-study.md").read_text(), "## The full profile")
    figures = {float(x) for x in re.findall(r"(?<![\d.])\d\.\d+", section)}
    quoted = re.findall(r"(?<![\d.])\d\.\d{2,3}(?!\d)", advice)
    assert len(quoted) >= 30, advice
    unbacked = [q for q in quoted
                if not any(abs(round(f, len(q.split(".")[1])) - float(q)) < 1e-9 for f in figures)]
    assert not unbacked, f"the README quotes {unbacked}, which the default study's section does not give"
