"""Control words for the text study's label flip rates: how much of an LFR the planted triggers cause.

Kurita et al. (2020) measure the LFR with the trigger words alone. A student flips some texts
whatever unseen word is inserted (a weak one, such as a student trained from scratch, more), so
the triggers' LFR is to be read against that floor. For every student of the text study's
weight-poisoned teachers (and of the clean teacher, which had nothing planted), this measures
the LFR twice on the study's evaluation texts, the words inserted at the same positions: with
the planted triggers (it must equal the study's figure: a single trigger inserted anywhere; Kurita et al.'s
several among the words the window reads, as the study places them) and with control words
(:func:`safetransfer.detect.trigger_scan.control_words`: one per trigger, a seeded whole word of the
tokenizer of the same length that, like the triggers, never occurs in the victim's training
texts). Both again with the words inserted among those the model's 64-token window reads
(:func:`safetransfer.attacks.text_triggers.visible_words`; the same draws, so only the words
that fell past the window move): an Amazon review is often longer than the window, and a
trigger past it cannot act (``share_triggers_cut``: the share of texts where it fell there).
The students come from the study cache: run the study configs first (see README).

    python benchmarks/control_words.py   # writes benchmarks/results/control_words.json

Results: ``{"runs": [{"config", "task", "defect", "method", "teacher", "lfr_triggers",
"lfr_study", "lfr_control", "control_words", "lfr_triggers_visible", "lfr_control_visible",
"share_triggers_cut", "student", "insertions"}, ...], "skipped": [...]}``, written after every student
(``skipped``: the students whose model the cache lacks, a stale run of theirs dropped). The words
are inserted as the study counts its LFR (the defect's ``lfr_insertions`` times a text). A run already
in it is kept while it is of the same student (its cache key) with the same number of insertions (the
script resumes; a run lacking the window's figures gets them); another is made again.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetransfer.attacks.text_triggers import TextTrigger, trigger_cut_share, trigger_lfr, visible_words
from safetransfer.detect.trigger_scan import control_words, word_frequencies
from safetransfer.files import atomic_write_text
from safetransfer.models.io import MODEL_DIR, load_model
from safetransfer.study import load_config
from safetransfer.study.cells import CellMaker

from bench_common import machine, study_cache_args

BENCH = Path(__file__).parent
RESULTS = BENCH / "results" / "control_words.json"
# each text study config and the results file its run wrote (which names the students' cache keys):
# the two benchmark configs and the embedded text study's full profile
STUDIES = {"text_rt.yaml": (BENCH / "configs" / "text_rt.yaml", "study_text_rt.json"),
           "text_shift.yaml": (BENCH / "configs" / "text_shift.yaml", "study_text_shift.json"),
           "default_text.yaml": (BENCH.parent / "src" / "safetransfer" / "study" / "default_text.yaml",
                                 "study_text_full_profile.json")}


def main() -> None:
    args, cache = study_cache_args(__doc__.splitlines()[0])
    doc = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"runs": []}
    doc["machine"] = machine(args.threads)
    skipped: list[dict] = []  # students whose model this machine's cache lacks
    for config_name, (config_path, results_name) in STUDIES.items():
        config = load_config(config_path, "full")
        study = json.loads((BENCH / "results" / results_name).read_text())
        maker = CellMaker(config, cache, progress=False)
        for task_name, task in study["tasks"].items():
            ctx = maker.context(task_name)
            texts, labels = list(ctx.eval_split.inputs), ctx.eval_split.labels
            limits = visible_words(ctx.teacher.tokenizer, texts, ctx.teacher.config.max_length)
            for defect in (d for d in config.defects if d.kind == "weight_poisoning"):
                controls = control_words(ctx.teacher.tokenizer, defect.words, word_frequencies(ctx.data.train.inputs),
                                         seed=config.seed)
                insertions = defect.lfr_insertions  # as the study counts its LFR
                planted = TextTrigger(words=tuple(defect.words), count=insertions, seed=config.seed)
                control = TextTrigger(words=tuple(controls), count=insertions, seed=config.seed)  # the same positions
                cut = trigger_cut_share(ctx.teacher.tokenizer, planted, texts, ctx.teacher.config.max_length)
                for method, by_teacher in task["students"].items():
                    for teacher in (defect.name, "clean"):
                        record = by_teacher.get(teacher)
                        key = {"config": config_name, "task": task_name, "defect": defect.name, "method": method,
                               "teacher": teacher}
                        row = next((r for r in doc["runs"] if all(r.get(k) == v for k, v in key.items())), None)
                        if record is None:
                            continue
                        if row is not None and (row.get("student"), row.get("insertions")) != (record["key"], insertions):
                            doc["runs"].remove(row)  # another student (a remade teacher) or another count: made again
                            row = None
                        if row is not None and "lfr_triggers_visible" in row:
                            continue
                        folder = cache / "students" / record["key"] / MODEL_DIR
                        if not folder.exists():  # a cell the study found in its committed JSON, not made here
                            print(f"skipped: {task_name} {defect.name} {method} ({teacher} teacher): {folder} is not "
                                  f"in the study cache (run {config_name} without its committed JSON to make it)")
                            skipped.append(key)
                            continue
                        student = load_model(folder)
                        if row is None:
                            row = {**key, "student": record["key"], "insertions": insertions,
                                   "lfr_triggers": trigger_lfr(student, texts, labels, planted, defect.target),
                                   "lfr_study": record["dir"].get(defect.name),
                                   "lfr_control": trigger_lfr(student, texts, labels, control, defect.target),
                                   "control_words": controls, "triggers": list(defect.words), "texts": len(texts),
                                   "student_acc": record["acc"]}
                            doc["runs"].append(row)
                        # the same draws, the words kept among those the model's token window reads
                        row.update(share_triggers_cut=cut,
                                   lfr_triggers_visible=trigger_lfr(student, texts, labels, planted, defect.target,
                                                                    within=limits),
                                   lfr_control_visible=trigger_lfr(student, texts, labels, control, defect.target,
                                                                   within=limits))
                        atomic_write_text(RESULTS, json.dumps(doc, indent=2))
                        print(f"{task_name} {defect.name} {method} ({teacher} teacher): LFR triggers "
                              f"{row['lfr_triggers']:.3f} (in the window {row['lfr_triggers_visible']:.3f}), control "
                              f"words {row['lfr_control']:.3f} ({row['lfr_control_visible']:.3f})", flush=True)
    doc["skipped"] = skipped
    atomic_write_text(RESULTS, json.dumps(doc, indent=2))
    print(f"wrote {RESULTS}" + (f"; {len(skipped)} students skipped (not in the cache)" if skipped else ""))


if __name__ == "__main__":
    main()
