"""Layer 6: launching runs. What a set of runs costs (costs), which of them need training (plan), and
training them here, a process per run or stack (local), or as one SLURM job array through a Hydra
launcher, with the run list that job array reads (slurm)."""
