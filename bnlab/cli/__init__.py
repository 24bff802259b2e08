"""Layer 7: the command lines of the library. `bnlab-train` (train); `bnlab-figure` draws figures and lives
with them, in experiments.cli."""
