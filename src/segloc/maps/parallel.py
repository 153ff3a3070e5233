"""How the per-image and per-pair work of a map build runs: in this process, or on Dask.

Map building extracts features image by image and matches image pairs one by one; both are
independent tasks. :class:`BuildExecution` says where they run:

- ``workers: 0`` (the default): serially, in this process;
- ``workers: N``: on a local Dask cluster of N processes, started for the build and stopped
  after it (Dask's multiprocessing scheduler: no server, nothing to install but ``dask``);
- ``scheduler: tcp://host:8786``: on an existing Dask cluster (``dask.distributed``; every
  worker needs this package and read access to the dataset at the same path).

The results are the same in every case (the tasks are deterministic and gathered in input
order), so the map's bytes do not depend on the execution: it is not a map option, and it is
not written into the map. Triangulation (pycolmap, one incremental problem) stays serial; so
does loading a chunk's inputs into each task, which is what limits the speed-up on a
two-core machine (``benchmarks/distributed_build.py``).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from segloc.config import check_options, option
from segloc.errors import SeglocError

logger = logging.getLogger("segloc")

__all__ = ["BuildExecution", "parallel_map"]

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class BuildExecution:
    """Where a map build's per-image and per-pair tasks run (see the module docstring).

    Attributes:
        workers: 0: serially in this process; N >= 1: a local Dask cluster of N processes.
        scheduler: address of a running Dask scheduler (``tcp://host:8786``); overrides ``workers``.
    """

    workers: int = option(0, ge=0, note="0: serial, in this process")
    scheduler: str | None = None

    def __post_init__(self) -> None:
        check_options(self, "execution")

    @property
    def serial(self) -> bool:
        return not self.workers and not self.scheduler

    def describe(self) -> str:
        if self.scheduler:
            return f"the Dask cluster at {self.scheduler}"
        return f"a local Dask cluster of {self.workers} processes" if self.workers else "this process"


def parallel_map(
    func: Callable[[T], R],
    items: Sequence[T],
    execution: BuildExecution | None = None,
    desc: str = "",
    progress: bool = True,
) -> list[R]:
    """``[func(item) for item in items]``, run as :class:`BuildExecution` says, in input order.

    ``func`` must be a module-level function (it is pickled to the workers) and its items
    picklable. A progress bar counts finished tasks.

    Raises:
        SeglocError: Dask (or ``dask.distributed`` for a scheduler address) is not installed.
    """
    from tqdm import tqdm

    execution = execution or BuildExecution()
    if execution.serial or not items:
        return [func(item) for item in tqdm(items, desc=desc, unit="task", disable=not progress)]
    if importlib.util.find_spec("dask") is None:
        raise SeglocError("a parallel map build needs Dask: pip install 'segloc_ros[distributed]' (or build with --workers 0)")
    if execution.scheduler:
        return _on_cluster(func, items, execution.scheduler, desc, progress)
    import dask
    from dask.callbacks import Callback

    tasks = [dask.delayed(func, pure=False)(item) for item in items]
    with tqdm(total=len(tasks), desc=f"{desc} ({execution.workers} workers)", unit="task", disable=not progress) as bar:

        class _Progress(Callback):
            def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
                bar.update(1)

        with _Progress():
            results = dask.compute(*tasks, scheduler="processes", num_workers=execution.workers)
        bar.n = len(tasks)
    return list(results)


def _on_cluster(func: Callable[[T], R], items: Sequence[T], address: str, desc: str, progress: bool) -> list[R]:
    """The tasks on a running Dask cluster (``dask.distributed``), gathered in input order."""
    if importlib.util.find_spec("distributed") is None:
        raise SeglocError(f"running on the Dask cluster at {address} needs dask.distributed: pip install distributed")
    from distributed import Client, as_completed
    from tqdm import tqdm

    with Client(address, timeout=30) as client:
        futures = client.map(func, list(items), pure=False)
        for _ in tqdm(as_completed(futures), total=len(futures), desc=f"{desc} (cluster)", unit="task", disable=not progress):
            pass
        return client.gather(futures)
