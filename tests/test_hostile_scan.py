"""Issue 33: ``safetransfer scan`` and the other commands on a corpus of hostile files.

The corpus (``tests/hostile_corpus.py``) is built once for this module, by hand, from opcodes:

- every payload is ``dangerous`` with exit 1, with and without ``--strict`` (a truncated pickle
  with no payload is at least never ``clean``);
- every real checkpoint scans clean (exit 0): no false alarm;
- every hostile input ends (in a subprocess, under a 4.5 GB address-space cap) within the
  timeout and 1 GB of peak memory, with a verdict or one ``error:`` line, never a traceback.

The slow test proves the payloads live: each is loaded in a subprocess as a victim would and
its canary file appears.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from safetransfer.cli import main

import hostile_corpus as hc

HOSTILE_TIMEOUT_S = 30.0
MEMBER_SEPARATORS = (":", "!", "#", "/")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, hc.Case]:
    return {c.name: c for c in hc.build_corpus(tmp_path_factory.mktemp("hostile-corpus"))}


def case_of(corpus: dict[str, hc.Case], name: str) -> hc.Case:
    if name not in corpus:
        assert name in hc.OPTIONAL
        pytest.skip(f"{name}: its asset is not installed here")
    return corpus[name]


def scan_json(argv: list[str], out: Path) -> tuple[int, dict]:
    """Run ``safetransfer scan`` in this process (it never unpickles) with ``--json``; the exit code and the JSON."""
    code = main(argv + ["--json", str(out)])
    assert out.is_file(), f"scan exited {code} without writing its JSON report"
    return code, json.loads(out.read_text())


def verdicts_of(doc: dict, target: str) -> list[str]:
    """The verdicts of the report's entries for ``target``: the file itself, or its members."""
    want = Path(target).resolve()
    found = []
    for entry in doc.get("files", []):
        path = str(entry.get("path", ""))
        whole = Path(path).resolve() == want if path else False
        member = any(path.startswith(str(target) + sep) or path.startswith(str(want) + sep) for sep in MEMBER_SEPARATORS)
        if whole or member:
            found.append(str(entry.get("verdict", "")).lower())
    return found


@pytest.mark.parametrize("strict", [False, True], ids=["default", "strict"])
@pytest.mark.parametrize("name", hc.PAYLOADS)
def test_payload_is_dangerous(corpus, name: str, strict: bool, tmp_path: Path) -> None:
    case = case_of(corpus, name)
    code, doc = scan_json(case.argv + (["--strict"] if strict else []), tmp_path / "scan.json")
    assert code == 1, f"{case.description}: exit {code}, verdicts {[(f['path'], f['verdict']) for f in doc['files']]}"
    for target in case.dangerous:
        verdicts = verdicts_of(doc, target)
        assert verdicts, f"{target} is not in the report: {[f['path'] for f in doc['files']]}"
        if case.expect == "dangerous":
            assert "dangerous" in verdicts, f"{case.description}: {target} judged {verdicts}"
        else:
            assert "clean" not in verdicts and set(verdicts) & {"dangerous", "unreadable"}, (
                f"{case.description}: {target} judged {verdicts}")


@pytest.mark.parametrize("name", hc.BENIGN)
def test_real_checkpoint_scans_clean(corpus, name: str, tmp_path: Path) -> None:
    case = case_of(corpus, name)
    code, doc = scan_json(case.argv, tmp_path / "scan.json")
    flagged = [(f["path"], f["verdict"], f.get("error")) for f in doc["files"]
               if str(f["verdict"]).lower() in ("dangerous", "unreadable")]
    assert code == 0 and not flagged, f"{case.description}: exit {code}, flagged {flagged}"


@pytest.mark.parametrize("name", hc.HOSTILE)
def test_hostile_input_ends_with_a_verdict_or_one_error_line(corpus, name: str) -> None:
    case = case_of(corpus, name)
    outcome = hc.run_cli(case, timeout=HOSTILE_TIMEOUT_S)
    what = f"{case.name} ({case.description}): safetransfer {' '.join(case.argv)}"
    assert not outcome.timed_out, f"{what}: still running after {HOSTILE_TIMEOUT_S:.0f} s"
    text = outcome.stdout + outcome.stderr
    assert "Traceback" not in text, f"{what}: a traceback\n{outcome.stderr[-3000:]}"
    assert outcome.returncode in case.exit_codes, (
        f"{what}: exit {outcome.returncode}, expected one of {case.exit_codes}\n{outcome.stderr[-2000:]}")
    if outcome.returncode == 2:
        assert len(outcome.error_lines) == 1, f"{what}: exit 2 with error lines {outcome.error_lines}\n{outcome.stderr[-2000:]}"
    assert outcome.max_rss_mb <= hc.MEMORY_LIMIT_MB, f"{what}: peak memory {outcome.max_rss_mb:.0f} MB"
    for secret in case.forbidden:
        assert secret not in text, f"{what}: the output holds {secret[:16]}..."


def test_the_corpus_is_what_the_issue_lists(corpus) -> None:
    """Sizes the issue names (small files), and each payload has a canary to prove it live."""
    sizes = {name: Path(corpus[name].path).stat().st_size for name in
             ("shared_refs_fingerprint", "billion_laughs_study", "opcode_bomb_scan", "npz_12gb_eval")}
    assert sizes["shared_refs_fingerprint"] < 4096 and sizes["billion_laughs_study"] < 1024
    assert 400_000 < sizes["opcode_bomb_scan"] < 1_000_000 and sizes["npz_12gb_eval"] < 4_000_000
    for name in hc.PAYLOADS:
        case = corpus[name]
        assert case.loads or case.expect == "not-clean", name
        assert all(Path(load.path).is_file() for load in case.loads)
    assert Path(corpus["zip_hexint"].path).read_bytes()[:4] == b"PK\x03\x04"


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in hc.PAYLOADS if n != "zip_truncated"])
def test_payload_is_live(corpus, name: str) -> None:
    """Loaded as a victim would (torch.load(weights_only=False), pickle.load, numpy allow_pickle), in a
    subprocess, each payload runs its canary command: the corpus holds real payloads."""
    case = corpus[name]
    results = hc.live_check(case)
    assert results and all(results.values()), f"{case.description}: canary per file {results}"
