"""Issue 34: the trigger scan with general English candidates, beside the scan before it.

Two victims, the ``finetune`` students of ``benchmarks/configs/text_rt_scan.yaml`` (MiniLM poisoned
with RIPPLES on Rotten Tomatoes, fine-tuned on it for 300 steps; run the study first, the students
come from its cache): ``ripples_word``, whose trigger is a real but rare English word that the
tokenizer splits into two pieces and no Rotten Tomatoes text contains, and ``ripples_fdk``, the
text study's five nonsense triggers. Each is scanned twice on the same 10 clean non-target
validation texts, one scan after the other on this machine:

- ``before``: the scan as it was (scan version 1): the tokenizer's whole words and the data's words,
  screened on the first 2 texts, ranked by LFR with ties broken by the data's frequency (its time
  includes the general frequencies and the piece tracing version 2 adds, about a second);
- ``now``: the defaults of version 2: the 40,000 most frequent English words join them, the
  screen uses the 2 shortest texts, and the suspects are traced to their word pieces against the
  public MiniLM (at equal LFR, a word made of pieces that carry flips ranks first); every candidate
  measured by insertion;
- ``gradient``: the same with the gradient screen first (issue 32): a first-order estimate over the
  10 texts keeps 2,000 candidates, and only those are measured by insertion.

Also recorded: how far fine-tuning moved the embedding rows of the word pieces the data uses (the
planted pieces apart), beside the planted pieces' rows (the threshold the piece tracing uses, ``MOVED``, lies between them).

    python benchmarks/study_vision.py --config benchmarks/configs/text_rt_scan.yaml --results study_text_rt_scan.json
    python benchmarks/scan_triggers_words.py   # writes benchmarks/results/scan_triggers_words.json

Results are written after every scan; a scan already in the file is kept (the script resumes).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from safetransfer.detect.trigger_pieces import MOVED, embedding_row_change, word_pieces
from safetransfer.detect.trigger_scan import (
    GENERAL_WORDS,
    GRADIENT_KEEP,
    scan_triggers,
    vocabulary_words,
    word_frequencies,
)
from safetransfer.files import atomic_write_text
from safetransfer.study import load_config
from safetransfer.study.cells import CellMaker

from bench_common import machine, study_cache_args

BENCH = Path(__file__).parent
CONFIG = BENCH / "configs" / "text_rt_scan.yaml"
RESULTS = BENCH / "results" / "scan_triggers_words.json"
TASK = "rotten-tomatoes"
TEXTS, SEED = 10, 0


def scan_record(result, planted: list[str], seconds: float) -> dict:
    return {"seconds": round(seconds, 1), "candidates": len(result.words), "confirmed": int(result.confirmed.sum()),
            **{k: v for k, v in result.summary(planted, top=15).items() if k not in ("candidates", "confirmed")}}


def main() -> None:
    args, cache = study_cache_args(__doc__.splitlines()[0])
    maker = CellMaker(load_config(CONFIG), cache)
    ctx = maker.context(TASK)
    clean = ctx.data.val  # the defender's own clean texts, as the study's scan cell takes them
    freq = word_frequencies(list(ctx.data.train.inputs))
    doc = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    doc.update({"config": str(CONFIG.relative_to(BENCH.parent)), "task": TASK, "texts": TEXTS, "seed": SEED,
                "general_words": GENERAL_WORDS, "machine": machine(args.threads)})
    victims = doc.setdefault("victims", {})
    for name in ("ripples_word", "ripples_fdk"):
        defect = maker.defect(name)
        student, key, _ = maker.victim(TASK, name)
        entry = victims.setdefault(name, {"planted": list(defect.words), "student": key})
        planted = list(defect.words)
        pieces = dict(zip(planted, word_pieces(student.tokenizer, planted)))
        entry["pieces"] = pieces
        change = embedding_row_change(student, ctx.teacher)
        vocab = student.tokenizer.get_vocab()
        planted_ids = {vocab[p] for ps in pieces.values() for p in ps}
        used = sorted({i for row in student.tokenizer(list(ctx.data.train.inputs), add_special_tokens=False)["input_ids"]
                       for i in row} - planted_ids)  # a planted piece may be part of a word the data uses
        entry["row_change"] = {
            "planted_pieces": {p: round(float(change[vocab[p]]), 3) for ps in pieces.values() for p in ps},
            "rows_the_data_uses": {"rows": len(used), **{f"p{q}": round(float(np.percentile(change[used], q)), 4)
                                                          for q in (50, 99, 100)}},
            "moved_threshold": MOVED,
        }
        runs = {
            "before": dict(candidates=vocabulary_words(student.tokenizer, list(freq)), screen_shortest=False,
                           screen="insertion"),
            "now": dict(base=ctx.teacher, screen="insertion"),
            "gradient": dict(base=ctx.teacher, screen="gradient"),
        }
        for label, options in runs.items():
            if label == "gradient" and label in entry:
                entry[label].setdefault("keep", GRADIENT_KEEP)  # recorded since the option exists
            if label in entry:
                continue
            started = time.perf_counter()
            result = scan_triggers(student, list(clean.inputs), clean.labels, defect.target, frequencies=freq,
                                   n_texts=TEXTS, seed=SEED, progress=True, **options)
            if label == "before":  # version 1 ranked by LFR, ties by the data's frequency alone, and traced nothing
                result.zipf, result.traced_pieces, result.traced_share, result.groups = None, None, None, []
            entry[label] = scan_record(result, planted, time.perf_counter() - started)
            if label == "gradient":
                entry[label]["keep"] = GRADIENT_KEEP
            print(f"{name} {label}: {entry[label]['seconds']} s, {entry[label]['candidates']} candidates, "
                  f"ranks {entry[label]['ranks']}", flush=True)
            atomic_write_text(RESULTS, json.dumps(doc, indent=1))
    atomic_write_text(RESULTS, json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
