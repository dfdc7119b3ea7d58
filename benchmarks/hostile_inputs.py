"""Every case of the hostile corpus (issue 33) through our CLI, with picklescan's and modelscan's verdicts beside ours.

The corpus is built afresh by ``tests/hostile_corpus.py`` (payloads, hostile inputs for the
other commands, real checkpoints). Each case runs ``safetransfer ...`` in a subprocess under a
4.5 GB address-space cap (``--cap-gb``; the issue reproduced its findings under such a cap) and a
timeout; its wall time and peak memory are those of that very child (``wait4``'s
``ru_maxrss``). Every scan case (payloads, real checkpoints, the scan hostile inputs) also goes
through the ``picklescan`` CLI (``picklescan -p PATH``) and ``modelscan`` (``modelscan -p PATH``,
a benchmark-only dependency: ``pip install modelscan``, or ``pip install -e ".[bench]"``); a
scanner that is not installed is recorded as such.

A case meets the acceptance when it ends in 10 s and 1 GB with the outcome the issue asks for:
a payload ``dangerous`` with exit 1 (``--strict`` too), a real checkpoint clean (exit 0), a
hostile input a verdict or one ``error:`` line (never a traceback, a hang, or a recorded secret).
Writes ``benchmarks/results/hostile_inputs.json`` (atomically) and prints the table.

    python benchmarks/hostile_inputs.py                      # the whole corpus
    python benchmarks/hostile_inputs.py --only zip_hexint legacy_memo --no-others
    python benchmarks/hostile_inputs.py --modelscan /path/to/venv/bin/modelscan
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from safetransfer.files import atomic_write_text  # noqa: E402

import hostile_corpus as hc  # noqa: E402
from bench_common import machine  # noqa: E402

RESULTS = HERE / "results" / "hostile_inputs.json"


def _tool(name: str, given: str | None) -> str | None:
    """The executable of a scanner: ``given``, else the one beside this Python, else on PATH."""
    if given:
        return given if Path(given).exists() or shutil.which(given) else None
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def _version(package: str, executable: str | None) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        pass
    if executable:  # installed elsewhere (another environment): ask its own Python
        python = Path(executable).parent / "python"
        if python.exists():
            probe = subprocess.run([str(python), "-c", f"from importlib.metadata import version; print(version({package!r}))"],
                                   capture_output=True, text=True, timeout=60)
            if probe.returncode == 0:
                return probe.stdout.strip()
    return None


def _summary(doc: dict) -> str:
    """Our scan report's verdict for the whole path: the worst of its files."""
    verdicts = [str(f.get("verdict", "")).lower() for f in doc.get("files", [])]
    for v in ("dangerous", "unreadable", "suspicious", "clean", "skipped"):
        if v in verdicts:
            return v
    return "?"


def _ours(case: hc.Case, args, work: Path) -> dict:
    """Our CLI on the case: exit code, time, peak memory, verdict (scan) or the error line, acceptance."""
    json_out = work / f"{case.name}.scan.json"
    json_out.unlink(missing_ok=True)
    extra = ["--json", str(json_out)] if case.is_scan and "--json" not in case.argv else []
    o = hc.run_cli(case, timeout=args.timeout, address_space=args.cap, extra=extra)
    report = json.loads(json_out.read_text()) if extra and json_out.is_file() else None
    verdict = _summary(report) if report is not None else None
    text = o.stdout + o.stderr
    row = {
        "exit": o.returncode, "timed_out": o.timed_out, "seconds": round(o.seconds, 2),
        "peak_mb": round(o.max_rss_mb, 1), "traceback": "Traceback" in text,
        "error_lines": o.error_lines[:3], "verdict": verdict,
        "files": [{"path": f.get("path"), "verdict": f.get("verdict")} for f in (report or {}).get("files", [])][:20],
    }
    if case.kind == "payload":
        strict = hc.run_cli(case, timeout=args.timeout, address_space=args.cap, extra=["--strict"])
        row["strict_exit"] = strict.returncode
    row["outcome"] = _outcome(case, row, text)
    row["within_limits"] = (not o.timed_out and o.seconds <= hc.TIME_LIMIT_S and o.max_rss_mb <= hc.MEMORY_LIMIT_MB)
    row["meets_acceptance"] = row["outcome"] == "as asked" and row["within_limits"]
    return row


def _outcome(case: hc.Case, row: dict, text: str) -> str:
    """``as asked``, or what is wrong (the issue's acceptance for this kind of case)."""
    if row["timed_out"]:
        return "hang (killed at the timeout)"
    if row["traceback"]:
        return "traceback"
    if row["exit"] == 2 and len(row["error_lines"]) != 1:
        return f"exit 2 with {len(row['error_lines'])} error lines"
    if case.kind == "payload":
        if row["exit"] != 1 or row.get("strict_exit") != 1:
            return f"not flagged (exit {row['exit']}, --strict {row.get('strict_exit')}; verdict {row['verdict']})"
        if case.expect == "dangerous" and row["verdict"] != "dangerous":
            return f"flagged as {row['verdict']}, not dangerous"
        return "as asked"
    if case.kind == "benign":
        return "as asked" if row["exit"] == 0 and row["verdict"] not in ("dangerous", "unreadable") else (
            f"false alarm (exit {row['exit']}, verdict {row['verdict']})")
    if row["exit"] not in case.exit_codes:
        return f"exit {row['exit']} (expected {'/'.join(map(str, case.exit_codes))})"
    if any(secret in text for secret in case.forbidden):
        return "a forbidden value (a file outside the folder) in the output"
    return "as asked"


def _picklescan(case: hc.Case, exe: str | None, args) -> dict:
    if exe is None:
        return {"verdict": "not installed"}
    o = hc.run_command([exe, "-p", case.path], cwd=case.cwd or None, timeout=args.timeout,
                       address_space=args.cap)
    verdict = ("timeout" if o.timed_out else {0: "clean", 1: "dangerous", 2: "error"}.get(o.returncode, f"exit {o.returncode}"))
    lines = [ln.strip() for ln in (o.stdout + o.stderr).splitlines()
             if "FOUND" in ln or ln.startswith(("Dangerous globals", "Infected files", "ERROR"))]
    return {"verdict": verdict, "exit": o.returncode, "seconds": round(o.seconds, 2), "peak_mb": round(o.max_rss_mb, 1),
            "detail": [ln[:160] for ln in lines[:4]]}


def _modelscan(case: hc.Case, exe: str | None, args, work: Path) -> dict:
    if exe is None:
        return {"verdict": "not installed"}
    report = work / f"{case.name}.modelscan.json"
    report.unlink(missing_ok=True)
    o = hc.run_command([exe, "-p", case.path, "-r", "json", "-o", str(report), "--show-skipped"], cwd=work,
                       timeout=args.timeout, address_space=args.cap)
    # modelscan's exit codes: 0 no issue, 1 issues, 2 scan errors, 3 no supported file scanned
    verdict = ("timeout" if o.timed_out else
               {0: "clean", 1: "dangerous", 2: "error", 3: "skipped"}.get(o.returncode, f"exit {o.returncode}"))
    row = {"verdict": verdict, "exit": o.returncode, "seconds": round(o.seconds, 2), "peak_mb": round(o.max_rss_mb, 1)}
    try:
        doc = json.loads(report.read_text()) if report.is_file() else {}
    except json.JSONDecodeError:
        doc = {}
    summary = doc.get("summary") or {}
    severities = {k: v for k, v in (summary.get("total_issues_by_severity") or {}).items() if v}
    if severities:
        row["issues"] = severities
        worst = next(s for s in ("CRITICAL", "HIGH", "MEDIUM", "LOW") if s in severities or s == "LOW")
        row["verdict"] = f"{verdict} ({worst})" if o.returncode == 1 else verdict
    row["scanned"] = (summary.get("scanned") or {}).get("total_scanned")
    row["skipped"] = [f"{s.get('source')}: {s.get('description')}"[:160]
                      for s in (summary.get("skipped") or {}).get("skipped_files", [])[:5]]
    errors = doc.get("errors") or []
    if errors:
        row["errors"] = [f"{e.get('source')}: {e.get('description')}"[:160] for e in errors[:3]]
        if o.returncode in (0, 3):
            row["verdict"] = f"{verdict}, errors"
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", help="run these cases only (names)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds before a command is killed")
    parser.add_argument("--cap-gb", type=float, default=hc.ADDRESS_SPACE_CAP / 2**30,
                        help="address-space cap of every command, GiB (0: none)")
    parser.add_argument("--no-others", action="store_true", help="skip picklescan and modelscan")
    parser.add_argument("--picklescan", default=None, help="the picklescan executable (default: beside this Python)")
    parser.add_argument("--modelscan", default=None, help="the modelscan executable (default: beside this Python, or on PATH)")
    parser.add_argument("--keep", type=Path, default=None, help="build the corpus in this folder and keep it")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where to write the JSON")
    args = parser.parse_args()
    args.cap = int(args.cap_gb * 2**30) or None

    picklescan = None if args.no_others else _tool("picklescan", args.picklescan)
    modelscan = None if args.no_others else _tool("modelscan", args.modelscan)
    folder = args.keep or Path(tempfile.mkdtemp(prefix="hostile-corpus-"))
    work = Path(tempfile.mkdtemp(prefix="hostile-work-"))
    started = time.perf_counter()
    try:
        cases = hc.build_corpus(folder)
        build_seconds = time.perf_counter() - started
        if args.only:
            unknown = set(args.only) - {c.name for c in cases}
            if unknown:
                parser.error(f"unknown cases: {', '.join(sorted(unknown))}")
            cases = [c for c in cases if c.name in args.only]
        rows = []
        header = (f"{'case':30s} {'kind':8s} {'ours':12s} {'exit':>4s} {'s':>6s} {'MB':>6s} {'ok':3s} "
                  f"{'picklescan':12s} {'modelscan':14s}")
        print(header)
        print("-" * len(header))
        for case in cases:
            row = {"name": case.name, "kind": case.kind, "argv": case.argv,
                   "description": case.description, "ours": _ours(case, args, work)}
            if case.is_scan and not args.no_others:
                row["picklescan"] = _picklescan(case, picklescan, args)
                row["modelscan"] = _modelscan(case, modelscan, args, work)
            rows.append(row)
            ours = row["ours"]
            label = ours["verdict"] or ("error" if ours["exit"] == 2 else "timeout" if ours["timed_out"] else f"exit {ours['exit']}")
            print(f"{case.name:30s} {case.kind:8s} {label:12s} {str(ours['exit']):>4s} {ours['seconds']:6.1f} "
                  f"{ours['peak_mb']:6.0f} {'yes' if ours['meets_acceptance'] else 'NO ':3s} "
                  f"{row.get('picklescan', {}).get('verdict', '-'):12s} {row.get('modelscan', {}).get('verdict', '-'):14s}",
                  flush=True)
            if ours["outcome"] != "as asked":
                print(f"{'':39s}-> {ours['outcome']}", flush=True)
        failing = [r["name"] for r in rows if not r["ours"]["meets_acceptance"]]
        by_kind = {k: sum(r["kind"] == k for r in rows) for k in hc.KINDS}
        missed = {tool: [r["name"] for r in rows if r["kind"] == "payload" and tool in r
                         and r[tool]["verdict"].startswith(("clean", "skipped"))]
                  for tool in ("picklescan", "modelscan")}
        doc = {
            "what": "the hostile corpus of issue 33 (tests/hostile_corpus.py) through safetransfer, picklescan and modelscan",
            "acceptance": {"seconds": hc.TIME_LIMIT_S, "peak_mb": hc.MEMORY_LIMIT_MB,
                           "payload": "dangerous, exit 1, with and without --strict",
                           "benign": "exit 0, no file dangerous or unreadable",
                           "hostile": "a verdict or one error: line; no traceback, no hang"},
            "address_space_cap_gb": args.cap_gb, "timeout_s": args.timeout,
            "cases": rows,
            "summary": {"cases": len(rows), "by_kind": by_kind, "meeting_acceptance": len(rows) - len(failing),
                        "failing": failing, "payloads_others_call_clean_or_skip": missed,
                        "max_seconds": max((r["ours"]["seconds"] for r in rows), default=0.0),
                        "max_peak_mb": max((r["ours"]["peak_mb"] for r in rows), default=0.0),
                        "corpus_build_seconds": round(build_seconds, 1)},
            "machine": machine(1, picklescan=_version("picklescan", picklescan) or "not installed",
                               modelscan=_version("modelscan", modelscan) or "not installed"),
        }
        if args.only:
            doc["only"] = args.only
        # the corpus lives in a temporary folder: CORPUS stands for it in the file
        atomic_write_text(args.results, json.dumps(doc, indent=1).replace(str(folder), "CORPUS"))
        print(f"\n{len(rows) - len(failing)} of {len(rows)} cases meet the acceptance; written to {args.results}")
        for tool, names in missed.items():
            if names:
                print(f"{tool} calls {len(names)} payload(s) clean or skips them: {', '.join(names)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
