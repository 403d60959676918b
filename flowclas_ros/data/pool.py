"""The work pool over input files (bags, dataset shards): local processes, or a Dask cluster.

Fleet validation (:mod:`flowclas_ros.eval.fleet`) and the frame extraction of training from many
logs (:func:`flowclas_ros.data.rosbag_layout.extract_bags`) run one task per input through
:func:`run_tasks`, which yields one :class:`TaskOutcome` per task as tasks finish:

* ``workers == 1`` and no cluster: in this process, one task after the other (the reference
  single-process run; no start-up cost, plain tracebacks);
* ``workers > 1``: that many spawned processes (``concurrent.futures``), each with its share of
  the cores (:func:`thread_share`: ONNX Runtime's intra-op threads and OpenCV's threads =
  cores // workers, so N sessions do not fight over the same cores); at most ``workers`` tasks
  are in flight, so the driver holds only finished results, whatever the number of inputs;
* ``cluster``: a Dask distributed scheduler address (``tcp://host:8786``) or ``"local"`` (a
  ``LocalCluster`` of ``workers`` processes on this machine). Dask, not a home-made scheduler:
  it places tasks, restarts lost workers and reschedules their tasks; each Dask worker's share
  of the cores is set from the scheduler's view of its host (cores // task slots on that host).
  Dask is an optional extra (``pip install .[cluster]``); the workers must run this package.

A task that raises is a failed outcome carrying ``"ExcType: message"``, and the others go on; a
local worker process that dies (killed for memory, a crash in native code) fails the tasks it had
in flight and a fresh process takes the rest. KeyboardInterrupt stops the run.

Tasks report frames done with :func:`frames_done` (a live counter in local processes, for the
frames progress bar; a no-op elsewhere).
"""
from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import os
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence

log = logging.getLogger(__name__)

__all__ = ["TaskOutcome", "frames_done", "run_tasks", "thread_share", "worker_threads"]

_state = threading.local()
_counter: Any = None  # multiprocessing.Value of frames done, in local worker processes
_threads = 0  # this process's share of the cores (0: not set, all cores)


@dataclass
class TaskOutcome:
    """One task's end: ``value`` when ``ok``, else ``error`` ("ExcType: message")."""

    index: int
    ok: bool
    value: Any = None
    error: str = ""
    where: str = ""  # the worker that ran it


def thread_share(workers: int, cores: Optional[int] = None) -> int:
    """Threads per worker so that ``workers`` workers use the cores once: cores // workers."""
    cores = cores or os.cpu_count() or 1
    return max(1, cores // max(1, workers))


def worker_threads() -> int:
    """This worker's share of the cores (0: all, ONNX Runtime's default)."""
    return _threads


def _set_threads(threads: int) -> None:
    global _threads
    _threads = int(threads)
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        try:
            import cv2

            cv2.setNumThreads(int(threads))
        except ImportError:  # pragma: no cover - OpenCV is in the runtime extra
            pass


def frames_done(n: int = 1) -> None:
    """Called by tasks as they go: the driver's frames progress bar (local processes only)."""
    if _counter is not None:
        with _counter.get_lock():
            _counter.value += n


def _init_local(counter: Any, threads: int) -> None:
    global _counter
    _counter = counter
    _set_threads(threads)


def _guarded(fn: Callable, item: Any) -> tuple[bool, Any]:
    try:
        return True, fn(item)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of one input is reported, not fatal
        log.debug("task failed: %s", traceback.format_exc())
        return False, f"{type(exc).__name__}: {exc}"


def run_tasks(fn: Callable[[Any], Any], items: Sequence[Any], workers: int = 1,
              cluster: Optional[str] = None,
              on_frames: Optional[Callable[[int], None]] = None) -> Iterator[TaskOutcome]:
    """``fn(item)`` for every item, yielding outcomes as they finish (any order). ``fn`` must be
    a module-level function (it is sent to other processes by reference). ``workers`` 0: one
    per core. ``on_frames(n)``:
    called in this process with the frames done since the last call (see :func:`frames_done`).
    """
    workers = workers or os.cpu_count() or 1  # 0: one per core
    if cluster is not None:
        yield from _run_dask(fn, items, workers, cluster)
    elif workers <= 1 or len(items) <= 1:
        yield from _run_here(fn, items, on_frames)
    else:  # no more processes than tasks: each gets its share of the cores
        yield from _run_local(fn, items, min(workers, len(items)), on_frames)


def _run_here(fn: Callable, items: Sequence[Any],
              on_frames: Optional[Callable[[int], None]]) -> Iterator[TaskOutcome]:
    global _counter
    counter = multiprocessing.Value("q", 0, lock=True) if on_frames else None
    old, _counter = _counter, counter
    try:
        for i, item in enumerate(items):
            ok, value = _guarded(fn, item)
            if counter is not None and counter.value:
                on_frames(counter.value)
                counter.value = 0
            yield TaskOutcome(i, ok, value if ok else None, "" if ok else value, "local")
    finally:
        _counter = old


def _run_local(fn: Callable, items: Sequence[Any], workers: int,
               on_frames: Optional[Callable[[int], None]]) -> Iterator[TaskOutcome]:
    ctx = multiprocessing.get_context("spawn")  # no inherited ONNX Runtime / OpenMP threads
    counter = ctx.Value("q", 0, lock=True)
    threads = thread_share(workers)
    pending = list(range(len(items)))[::-1]  # a stack: pop() gives the next index in order
    while pending:
        pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx,
                                      initializer=_init_local, initargs=(counter, threads))
        running: dict[cf.Future, int] = {}
        broken = False
        try:
            while pending or running:
                while pending and len(running) < workers and not broken:
                    i = pending.pop()
                    running[pool.submit(_guarded, fn, items[i])] = i
                if not running:
                    break
                done, _ = cf.wait(running, timeout=0.5, return_when=cf.FIRST_COMPLETED)
                if on_frames is not None and counter.value:
                    with counter.get_lock():
                        n, counter.value = counter.value, 0
                    on_frames(n)
                for fut in done:
                    i = running.pop(fut)
                    try:
                        ok, value = fut.result()
                    except cf.process.BrokenProcessPool as exc:
                        broken = True
                        yield TaskOutcome(i, False, None, f"worker process died while running it "
                                          f"({type(exc).__name__}: {exc})", "local")
                        continue
                    yield TaskOutcome(i, ok, value if ok else None, "" if ok else value,
                                      f"local-{workers}")
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        if broken:
            log.warning("a worker process died; %d inputs left go to fresh processes", len(pending))


# ---------------------------------------------------------------- Dask


def _dask_set_threads(shares: dict[str, int], dask_worker: Any = None) -> int:
    threads = shares.get(dask_worker.address, 0) if dask_worker is not None else 0
    _set_threads(threads)
    return threads


def _dask_threads(client: Any) -> dict[str, int]:
    """Each Dask worker's share of its host's cores: cores // task slots on that host."""
    workers = client.scheduler_info()["workers"]
    cores = client.run(os.cpu_count)
    slots: dict[str, int] = {}
    for info in workers.values():
        slots[info["host"]] = slots.get(info["host"], 0) + int(info.get("nthreads", 1))
    return {addr: thread_share(slots[info["host"]], cores.get(addr))
            for addr, info in workers.items()}


def _run_dask(fn: Callable, items: Sequence[Any], workers: int,
              cluster: str) -> Iterator[TaskOutcome]:
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        from flowclas_ros.data.files import DatasetError

        raise DatasetError("a Dask cluster needs the cluster extra: pip install "
                           "'flowclas_ros[cluster]' (dask[distributed])") from None
    local = None
    if cluster == "local":
        local = LocalCluster(n_workers=max(1, workers), threads_per_worker=1, processes=True,
                             dashboard_address=None)
        address: Any = local
    else:
        address = cluster
    client = Client(address, timeout=30)
    try:
        deadline = time.monotonic() + 60
        while not client.scheduler_info()["workers"] and time.monotonic() < deadline:
            time.sleep(0.2)
        shares = _dask_threads(client)
        client.run(_dask_set_threads, shares)
        log.info("dask: %d workers (%s); threads per worker %s", len(shares),
                 client.scheduler.address, sorted(set(shares.values())))
        futures = {client.submit(_guarded, fn, item, pure=False, key=f"flowclas-task-{i}-"
                                 f"{os.getpid()}-{time.time_ns()}"): i
                   for i, item in enumerate(items)}
        for fut in as_completed(futures):
            i = futures.pop(fut)
            try:
                ok, value = fut.result()
            except Exception as exc:  # noqa: BLE001 - a lost worker, an unpicklable result
                ok, value = False, f"{type(exc).__name__}: {exc}"
            where = ""
            try:
                where = ",".join(sorted(client.who_has(fut).get(fut.key, ())))
            except Exception:  # noqa: BLE001 - only a label for the report
                pass
            fut.release()
            yield TaskOutcome(i, ok, value if ok else None, "" if ok else value, where)
    finally:
        client.close()
        if local is not None:
            local.close()
