"""The registries' shared mechanics (bnlab.norms.register_norm, bnlab.models.register_model): entries keyed by
their `name`, and a lookup whose error names the registered ones."""

from __future__ import annotations

from bnlab.util.checks import ConfigError


def register(table: dict, entry, what: str):
    """Add `entry` under `entry.name`; the same entry again is a no-op, a different one an error."""
    if entry.name in table and table[entry.name] != entry:
        raise ValueError(f"{what} {entry.name!r} is registered already")
    table[entry.name] = entry
    return entry


def lookup(table: dict, name: str, key: str, what: str):
    """The entry `name`, or a ConfigError on `key` listing the registered ones."""
    if name not in table:
        raise ConfigError(key, name, f"{', '.join(table)} (a {what} of your own: is its module named in "
                          f"BNLAB_PLUGINS?)")
    return table[name]
