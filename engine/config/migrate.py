"""Config versions: a file is migrated to the current version before it is validated.

Migrations are pure functions in `MIGRATIONS`, keyed by the version they start from; a file without
a `version` is version 0 (a LETS/kohya_ss flat file, or a nested file written before configs
carried a version).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from engine.config.flat_import import flat_to_nested, is_flat_config
from engine.config.schema import CONFIG_VERSION
from engine.errors import ConfigError

Migration = Callable[[dict[str, Any]], dict[str, Any]]


def _v0_to_v1(data: dict[str, Any]) -> dict[str, Any]:
    """Version 0 is anything written before configs carried a version: a flat LETS/kohya_ss file
    is mapped onto the sections; a nested file already has the v1 layout and only gets the stamp."""
    body = {key: value for key, value in data.items() if key != "version"}
    if not is_flat_config(body):
        return {**body, "version": 1}
    imported = flat_to_nested(body)
    if imported.dataset_config:
        raise ConfigError(
            f"dataset_config = {imported.dataset_config!r}: a dataset TOML is read when the config is loaded "
            "from its file (its path is relative to that file); load the file with load_config"
        )
    return {**imported.nested, "version": 1}


#: version a file was written with -> function that returns the same config one version later
MIGRATIONS: dict[int, Migration] = {0: _v0_to_v1}


def version_of(data: dict[str, Any], source: str) -> int:
    version = data.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ConfigError(f"{source}: version = {version!r}: must be a whole number; this build writes {CONFIG_VERSION}")
    if version > CONFIG_VERSION:
        raise ConfigError(
            f"{source}: version = {version}: the file was written by a newer lora-wizard; this build reads "
            f"versions up to {CONFIG_VERSION}. Update lora-wizard to load it"
        )
    return version


def migrate(
    data: dict[str, Any],
    *,
    migrations: dict[int, Migration] | None = None,
    current: int = CONFIG_VERSION,
) -> dict[str, Any]:
    """Apply migrations until `data` is at version `current`. Pure: returns a new dict."""
    table = MIGRATIONS if migrations is None else migrations
    version = data.get("version", 0)
    if version > current:
        raise ConfigError(f"version {version} is newer than this build's {current}; update lora-wizard")
    while version < current:
        if version not in table:
            raise ConfigError(f"no migration from config version {version}; re-create the config with the wizard")
        data = table[version](copy.deepcopy(data))
        if data.get("version") != version + 1:
            raise RuntimeError(f"the migration from version {version} must return version {version + 1}")
        version += 1
    return data
