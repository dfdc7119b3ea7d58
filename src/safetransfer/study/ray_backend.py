"""The ``ray`` backend of the study runner: a stage's cells spread over a Ray cluster.

The runner (:class:`safetransfer.study.runner.StudyRunner`) plans the study's cells in two
stages: crafted inputs and backdoored teachers first, then the students that need them. Here
each stage's cells go to a pool of Ray actors, one per ``cpus_per_cell`` CPUs of the cluster
(at most one per cell). An actor is a :class:`~safetransfer.study.cells.CellMaker` with its own
torch threads (``cpus_per_cell``); it loads a task's data and teacher once and keeps them for
every cell of that task it makes, across both stages. Actors read and write the same
content-addressed cache folder as the driver (one machine, or a file system every node
mounts), so a student finds the backdoored teacher and the crafted inputs made in the first
stage, and nothing is made twice. The driver records each cell as it finishes (results.json,
the results store); every cell is seeded and keyed by content, so the table is the local
backend's.

Ray is an optional extra: ``pip install "safetransfer[ray]"``. With no ``address`` a local Ray
instance is started for the study and stopped after it; with an address (``auto``, or
``ray://host:10001``) the study joins that cluster and leaves it running.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from safetransfer.errors import ConfigError, SafetransferError
from safetransfer.study.cells import Cell, CellMaker
from safetransfer.study.config import StudyConfig, parse_config


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:  # an optional extra
        raise ConfigError('The ray backend needs Ray: pip install "safetransfer[ray]" (or use --backend local).') from exc
    return ray


class CellWorker:
    """What one Ray actor runs: a :class:`CellMaker` for the study, with ``threads`` torch threads."""

    def __init__(self, config_doc: dict[str, Any], cache_dir: str, threads: int, cwd: str | None = None) -> None:
        import torch

        if cwd and os.path.isdir(cwd):  # relative data paths in the config mean what they mean to the driver
            os.chdir(cwd)
        torch.set_num_threads(max(1, int(threads)))
        self.maker = CellMaker(parse_config(config_doc, source="study config"), cache_dir, progress=False)

    def make(self, cell: Cell) -> tuple[Cell, dict[str, Any]]:
        return cell, self.maker.make(cell)


def make_cells_on_ray(
    config: StudyConfig, stages: Sequence[Sequence[Cell]], cache_dir: str | Path, *, address: str | None = None,
    cpus_per_cell: float | None = None, gpus_per_cell: float = 0, workers: int | None = None,
) -> Iterator[tuple[Cell, dict[str, Any]]]:
    """Make the cells of each stage in turn on Ray, yielding ``(cell, record)`` as each finishes.

    ``cpus_per_cell`` / ``gpus_per_cell``: what each actor asks of the cluster; its torch threads
    are ``cpus_per_cell`` (default: this process's torch thread count, so that every cell computes
    exactly as the local backend would: CPU float reductions split by thread, so another thread
    count changes the last digits, and training amplifies them). ``workers``: the number of actors
    (default: as many as the cluster's CPUs allow, at most one per cell). An error in a cell (e.g.
    a missing data set) is raised here as the same error.
    """
    if cpus_per_cell is None:
        import torch

        cpus_per_cell = float(torch.get_num_threads())
    if cpus_per_cell <= 0 or gpus_per_cell < 0:
        raise ConfigError(f"cpus_per_cell must be positive and gpus_per_cell not negative "
                          f"(got {cpus_per_cell} and {gpus_per_cell}).")
    if workers is not None and workers < 1:
        raise ConfigError(f"workers must be at least 1 (got {workers}).")
    largest = max((len(s) for s in stages), default=0)
    if largest == 0:
        return
    ray = _import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        from ray.util import ActorPool

        cluster_cpus = float(ray.cluster_resources().get("CPU", 0))
        if cpus_per_cell > cluster_cpus:
            raise ConfigError(f"each Ray worker asks for {cpus_per_cell:g} CPUs and the cluster has {cluster_cpus:g}: "
                              f"pass a smaller --cpus-per-cell.")
        fits = max(1, int(cluster_cpus // cpus_per_cell))
        # more actors than the cluster holds would wait for CPUs forever
        workers = min(workers or fits, fits, largest)
        actor = ray.remote(num_cpus=cpus_per_cell, num_gpus=gpus_per_cell)(CellWorker)
        threads = max(1, int(cpus_per_cell))
        doc, cache = config.model_dump(mode="json"), str(Path(cache_dir).resolve())
        actors = [actor.remote(doc, cache, threads, os.getcwd()) for _ in range(workers)]
        pool = ActorPool(actors)
        try:
            for stage in stages:
                results = pool.map_unordered(lambda a, cell: a.make.remote(cell), list(stage))
                while True:
                    try:
                        cell, record = next(results)
                    except StopIteration:
                        break
                    except ray.exceptions.RayTaskError as exc:
                        cause = getattr(exc, "cause", None)
                        if isinstance(cause, SafetransferError):
                            raise cause from None
                        raise
                    yield cell, record
        finally:
            for a in actors:
                ray.kill(a)
    finally:
        if started_here:
            ray.shutdown()
