"""Fleet-scale validation: replay and evaluate many bags or datasets, one pooled answer.

``flowclas-ros replay`` / ``evaluate`` with several inputs (or ``--workers``, ``--dask``) run
here: :mod:`.inputs` (what the user named -> inputs, content hashes), :mod:`.tasks` (one shard
scored on a worker), :mod:`.run` (the driver: pool, manifest, merging), :mod:`.manifest`
(resuming), :mod:`.report` (the per-input table and the pooled metrics). The pool itself is
:mod:`flowclas_ros.data.pool`; the exact pooling, :mod:`flowclas_ros.eval.pooled_stats`.
See docs/fleet-validation.md.
"""
from flowclas_ros.eval.fleet.run import run_fleet

__all__ = ["run_fleet"]
