"""``cfs sweep``: a grid of ``cfs bench`` runs (strategies x seeds x scenarios x options).

* :mod:`cfs.sweep.grid` reads the grid from flags or a YAML file and expands it into points;
* :mod:`cfs.sweep.bench_flags` carries every ``cfs bench`` flag through to each run;
* :mod:`cfs.sweep.worker` runs one point in the current process through ``cfs bench`` itself
  (fresh, resumed from its checkpoint, or skipped when finished);
* :mod:`cfs.sweep.backends` dispatches the points on Ray tasks or on a local process pool and
  retries a run whose process was killed;
* :mod:`cfs.sweep.summary` writes ``sweep.json`` and ``sweep.csv`` into the sweep folder.

Each point has its own run folder under the sweep folder, written by ``cfs bench`` with its
lock, status and checkpoints, so ``cfs report SWEEP_DIR`` reads a sweep like any folder of runs.
"""
