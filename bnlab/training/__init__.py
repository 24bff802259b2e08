"""Layer 5: training. The one loop (loop.Trainer) with the probes it runs (probe_schedule), its metric rows
(rows), wandb (tracking) and summaries (summary); which runs stack and how a stack is built (stacking);
and `runner.run(cfg)`, which reuses a finished run or trains it under its lock."""
