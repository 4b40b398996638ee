"""Where the `facedit` command connects: flags, then FACEDIT_* variables, then the config file.

Each setting is taken from the first of
1. its flag, anywhere on the line (`facedit --address X attributes` = `facedit attributes --address X`);
2. its environment variable (ENV below, e.g. FACEDIT_ADDRESS);
3. the config file: --config, else FACEDIT_CONFIG, else $XDG_CONFIG_HOME/facedit/config.toml
   (~/.config/facedit/config.toml), when it exists; with --profile NAME (FACEDIT_PROFILE) the
   keys of its [profiles.NAME] table win over the file's top-level keys;
4. the default.

The config file (TOML; tls_ca relative to the file's folder):

    address = "facedit.example.com:443"
    tls = true
    timeout = 60            # seconds per call, retries included
    retries = 3             # retries after the first attempt (UNAVAILABLE, RESOURCE_EXHAUSTED)
    pack = "digiface64"
    [profiles.local]
    address = "127.0.0.1:50050"
    tls = false
"""
from __future__ import annotations

import dataclasses
import os
import tomllib
from pathlib import Path
from typing import Mapping

from facedit_client.connection import DEFAULT_ADDRESS, DEFAULT_TIMEOUT_S

ENV = {"address": "FACEDIT_ADDRESS", "token": "FACEDIT_TOKEN", "tls": "FACEDIT_TLS", "tls_ca": "FACEDIT_TLS_CA",
       "tls_server_name": "FACEDIT_TLS_SERVER_NAME", "timeout": "FACEDIT_TIMEOUT", "retries": "FACEDIT_RETRIES",
       "pack": "FACEDIT_PACK"}
DEFAULTS = {"address": DEFAULT_ADDRESS, "token": None, "tls": False, "tls_ca": None, "tls_server_name": None,
            "timeout": DEFAULT_TIMEOUT_S, "retries": 3, "pack": ""}
TYPES = {"tls": bool, "timeout": float, "retries": int}


class SettingsError(ValueError):
    """A config file or variable that cannot be used (exit code USAGE)."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """The resolved connection settings; `sources` says where each came from (flag, variable
    name, config file path or default)."""

    address: str
    token: str | None
    tls: bool
    tls_ca: str | None
    tls_server_name: str | None
    timeout: float
    retries: int
    pack: str
    sources: dict[str, str]


def config_path(flag: str | None, environ: Mapping[str, str]) -> tuple[Path | None, bool]:
    """(the config file to read or None, whether it was named explicitly)."""
    named = flag or environ.get("FACEDIT_CONFIG")
    if named:
        return Path(named).expanduser(), True
    base = Path(environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    path = base / "facedit" / "config.toml"
    return (path if path.is_file() else None), False


def read_config(path: Path, profile: str | None) -> dict[str, object]:
    """The settings of a config file (top-level keys, then the profile's); SettingsError on unknown keys."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise SettingsError(f"config file {path}: {err}") from None
    profiles = data.pop("profiles", {})
    values = dict(data)
    if profile:
        if profile not in profiles:
            raise SettingsError(f"config file {path}: no [profiles.{profile}] (has: {', '.join(profiles) or 'none'})")
        values.update(profiles[profile])
    unknown = sorted(set(values) - set(DEFAULTS))
    if unknown:
        raise SettingsError(f"config file {path}: unknown keys {unknown}; known: {sorted(DEFAULTS)}")
    if values.get("tls_ca"):
        values["tls_ca"] = str((path.parent / str(values["tls_ca"])).expanduser())
    return values


def _convert(name: str, value: object, where: str) -> object:
    kind = TYPES.get(name)
    try:
        if kind is bool and isinstance(value, str):
            if value.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off", ""):
                raise ValueError(value)
            return value.lower() in ("1", "true", "yes", "on")
        return kind(value) if kind is not None and value is not None else value
    except (TypeError, ValueError):
        raise SettingsError(f"{where}: {name} = {value!r} is not a {kind.__name__}") from None


def resolve(flags: Mapping[str, object], environ: Mapping[str, str] = os.environ) -> Settings:
    """flags: the values given on the command line (absent keys: not given), plus optional
    "config" and "profile"."""
    path, named = config_path(flags.get("config"), environ)  # type: ignore[arg-type]
    profile = flags.get("profile") or environ.get("FACEDIT_PROFILE")
    config: dict[str, object] = {}
    if path is not None:
        if named and not path.is_file():
            raise SettingsError(f"config file {path} does not exist")
        config = read_config(path, profile)  # type: ignore[arg-type]
    elif profile:
        raise SettingsError(f"--profile {profile}: no config file (--config, FACEDIT_CONFIG, "
                            f"~/.config/facedit/config.toml)")
    values, sources = {}, {}
    for name, default in DEFAULTS.items():
        if flags.get(name) is not None:
            values[name], sources[name] = _convert(name, flags[name], "flag"), "flag"
        elif environ.get(ENV[name]):
            values[name], sources[name] = _convert(name, environ[ENV[name]], ENV[name]), ENV[name]
        elif name in config:
            values[name], sources[name] = _convert(name, config[name], str(path)), str(path)
        else:
            values[name], sources[name] = default, "default"
    if values["timeout"] is not None and values["timeout"] <= 0:
        raise SettingsError(f"timeout must be > 0 seconds, got {values['timeout']} ({sources['timeout']})")
    if values["retries"] < 0:
        raise SettingsError(f"retries must be >= 0, got {values['retries']} ({sources['retries']})")
    return Settings(**values, sources=sources)
