"""End-to-end jobs: one module per job, each returning a typed result, called by the CLI, the
study and the benchmarks alike.

- :mod:`~safetransfer.jobs.train`: train, evaluate, slice, transfer (``train_job``, ``eval_job``,
  ``slice_job``, ``transfer_job``, ``load_teacher``)
- :mod:`~safetransfer.jobs.badnets`: BadNets, clean and poisoned training side by side
- :mod:`~safetransfer.jobs.scan_data`: poisoned-sample detection on a data set, with its page
- :mod:`~safetransfer.jobs.scan_triggers`: Kurita et al.'s trigger-word scan of a text classifier
- :mod:`~safetransfer.jobs.word_swap`: word-swap adversarial texts on a teacher, students' DIR
- :mod:`~safetransfer.jobs.reprogram`: adversarial reprogramming

Each job writes its outputs into one folder as it goes, so an interrupted job resumes.
"""

from safetransfer.jobs.train import (
    METRICS_FILE,
    TrainJobResult,
    eval_job,
    load_teacher,
    slice_job,
    train_job,
    transfer_job,
)

__all__ = ["METRICS_FILE", "TrainJobResult", "eval_job", "load_teacher", "slice_job", "train_job", "transfer_job"]
