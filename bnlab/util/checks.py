"""Config checks shared by the layers that declare config keys (bnlab.config, the model families): each
failure names the key, the value and what is allowed."""

from __future__ import annotations

import math

from omegaconf import OmegaConf


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key, the value and what is allowed."""

    def __init__(self, key: str, value, allowed: str):
        super().__init__(f"invalid config: {key}={value!r}; allowed: {allowed}")
        self.key, self.value, self.allowed = key, value, allowed


def check(ok: bool, key: str, value, allowed: str) -> None:
    if not ok:
        raise ConfigError(key, value, allowed)


def check_positive(cfg, key: str, integer: bool = False) -> None:
    value = OmegaConf.select(cfg, key)
    kind = int if integer else (int, float)
    good = isinstance(value, kind) and not isinstance(value, bool) and value > 0 and math.isfinite(value)
    check(good, key, value, "a positive integer" if integer else "a positive number")
