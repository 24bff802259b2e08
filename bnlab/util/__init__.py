"""Layer 0: small helpers that know nothing of bnlab's science (files, generator states, devices, processes,
config checks, the registries' mechanics)."""
