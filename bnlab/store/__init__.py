"""Layer 4: the run store. Where runs live and how they are read and written (runs, whose functions are
re-exported here: `from bnlab import store; store.read_metrics(directory)`), their checkpoints (checkpoint),
the lock that gives a run one trainer (lock) and the code version a run records (provenance)."""

from bnlab.store.runs import (
    find_run,
    is_finished,
    read_config,
    read_metrics,
    read_summary,
    run_dir,
    split_metric,
    write_config,
    write_metrics,
    write_summary,
)

__all__ = ["find_run", "is_finished", "read_config", "read_metrics", "read_summary", "run_dir", "split_metric",
           "write_config", "write_metrics", "write_summary"]
