"""``agent.yaml``: what an agent folder declares about itself.

Every error names the file and the key, and says what was expected::

    examples/calc/agent.yaml: limits.memory: expected a size like '128MiB', got 'lots'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
ENTRY_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$")


class ManifestError(ValueError):
    """A manifest (or config file) that does not say what it must."""


def parse_size(value: Any, where: str) -> int:
    """``128MiB``/``128M``/``134217728`` → bytes."""
    if isinstance(value, bool):
        raise ManifestError(f"{where}: expected a size like '128MiB', got {value!r}")
    if isinstance(value, int) and value > 0:
        return value
    match = _SIZE_RE.match(str(value))
    if not match or float(match.group(1)) <= 0:
        raise ManifestError(f"{where}: expected a size like '128MiB', got {value!r}")
    unit = (match.group(2) or "").upper().rstrip("B").rstrip("I")
    return int(float(match.group(1)) * _UNITS[unit])


def parse_duration(value: Any, where: str) -> float:
    """``250ms``/``10s``/``2m``/``10`` (seconds) → seconds."""
    if isinstance(value, bool):
        raise ManifestError(f"{where}: expected a duration like '10s', got {value!r}")
    if isinstance(value, int | float) and value > 0:
        return float(value)
    match = _DURATION_RE.match(str(value))
    if not match or float(match.group(1)) <= 0:
        raise ManifestError(f"{where}: expected a duration like '10s' or '250ms', got {value!r}")
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[match.group(2)]
    return float(match.group(1)) * scale


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-worker resource limits. Unset fields take the supervisor's defaults."""

    memory: int | None = None  # bytes
    cpu: float | None = None  # cores (cgroup CPU quota)
    pids: int | None = None
    timeout: float | None = None  # seconds per request
    cpu_seconds: int | None = None  # CPU time per worker lifetime (RLIMIT_CPU)
    concurrency: int | None = None  # requests in flight per worker


@dataclass(frozen=True, slots=True)
class Pool:
    min: int | None = None
    max: int | None = None


@dataclass(frozen=True, slots=True)
class Manifest:
    """A validated ``agent.yaml``."""

    path: Path
    name: str
    version: str
    entry: str
    description: str = ""
    skills: tuple[str, ...] = ()
    examples: tuple[str, ...] = ()
    limits: Limits = field(default_factory=Limits)
    pool: Pool = field(default_factory=Pool)
    seccomp: str = "default"
    network: tuple[str, ...] = ()
    config: Mapping[str, Any] = field(default_factory=dict)
    #: Inputs sent to a new release before it takes traffic; each must succeed.
    smoke: tuple[Any, ...] = ()

    @property
    def folder(self) -> Path:
        return self.path.parent


_TOP_KEYS = {
    "name", "version", "entry", "description", "skills", "examples",
    "limits", "pool", "seccomp", "network", "config", "smoke",
}
_LIMIT_KEYS = {"memory", "cpu", "pids", "timeout", "cpu_seconds", "concurrency"}


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate one ``agent.yaml``; raise :class:`ManifestError` naming file and key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path}: not valid YAML: {exc}") from exc
    return parse_manifest(raw, path)


def parse_manifest(raw: Any, path: Path) -> Manifest:
    if not isinstance(raw, dict):
        raise ManifestError(f"{path}: expected a mapping at the top level")
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise ManifestError(f"{path}: {unknown[0]}: unknown key (allowed: {', '.join(sorted(_TOP_KEYS))})")

    def need_str(key: str, pattern: re.Pattern[str] | None = None, hint: str = "") -> str:
        if key not in raw:
            raise ManifestError(f"{path}: {key}: required key is missing")
        value = raw[key]
        if isinstance(value, int | float) and not isinstance(value, bool) and key == "version":
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            raise ManifestError(f"{path}: {key}: expected a non-empty string, got {value!r}")
        if pattern is not None and not pattern.match(value):
            raise ManifestError(f"{path}: {key}: expected {hint}, got {value!r}")
        return value

    def str_list(key: str) -> tuple[str, ...]:
        value = raw.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ManifestError(f"{path}: {key}: expected a list of non-empty strings")
        return tuple(value)

    return Manifest(
        path=path,
        name=need_str("name", NAME_RE, "lower-case letters, digits, '-' or '_', starting with a letter"),
        version=need_str("version"),
        entry=need_str("entry", ENTRY_RE, "'module:Class'"),
        description=str(raw.get("description", "")),
        skills=str_list("skills"),
        examples=str_list("examples"),
        limits=parse_limits(raw.get("limits", {}), f"{path}: limits"),
        pool=_parse_pool(raw.get("pool", {}), f"{path}: pool"),
        seccomp=_parse_word(raw.get("seccomp", "default"), f"{path}: seccomp"),
        network=_parse_network(raw.get("network", []), f"{path}: network"),
        config=_parse_config(raw.get("config", {}), f"{path}: config"),
        smoke=_parse_smoke(raw.get("smoke", []), f"{path}: smoke"),
    )


def parse_limits(raw: Any, where: str) -> Limits:
    """Validate a ``limits`` mapping; errors are reported as ``<where>.<key>: ...``."""
    if not isinstance(raw, dict):
        raise ManifestError(f"{where}: expected a mapping")
    unknown = sorted(set(raw) - _LIMIT_KEYS)
    if unknown:
        raise ManifestError(f"{where}.{unknown[0]}: unknown limit (allowed: {', '.join(sorted(_LIMIT_KEYS))})")
    values: dict[str, Any] = {}
    if "memory" in raw:
        values["memory"] = parse_size(raw["memory"], f"{where}.memory")
    if "cpu" in raw:
        cpu = raw["cpu"]
        if isinstance(cpu, bool) or not isinstance(cpu, int | float) or not 0.01 <= cpu <= 1024:
            raise ManifestError(f"{where}.cpu: expected a number of cores between 0.01 and 1024, got {cpu!r}")
        values["cpu"] = float(cpu)
    for key in ("pids", "cpu_seconds", "concurrency"):
        if key in raw:
            values[key] = positive_int(raw[key], f"{where}.{key}")
    if "timeout" in raw:
        values["timeout"] = parse_duration(raw["timeout"], f"{where}.timeout")
    return Limits(**values)


def _parse_pool(raw: Any, where: str) -> Pool:
    if not isinstance(raw, dict) or set(raw) - {"min", "max"}:
        raise ManifestError(f"{where}: expected a mapping with 'min' and/or 'max'")
    lo = positive_int(raw["min"], f"{where}.min", allow_zero=True) if "min" in raw else None
    hi = positive_int(raw["max"], f"{where}.max") if "max" in raw else None
    if lo is not None and hi is not None and lo > hi:
        raise ManifestError(f"{where}: min ({lo}) is larger than max ({hi})")
    return Pool(min=lo, max=hi)


def positive_int(value: Any, where: str, allow_zero: bool = False) -> int:
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ManifestError(f"{where}: expected an integer >= {low}, got {value!r}")
    return value


def _parse_word(value: Any, where: str) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise ManifestError(f"{where}: expected a profile name, got {value!r}")
    return value


def _parse_network(value: Any, where: str) -> tuple[str, ...]:
    """``network: [entries]`` or ``network: {allow: [entries]}``; grammar in :mod:`neuroflow.sdk.http`."""
    from .http import AllowEntryError, parse_allow_entry

    if isinstance(value, dict):
        if set(value) - {"allow"}:
            raise ManifestError(f"{where}.{sorted(set(value) - {'allow'})[0]}: unknown key (allowed: allow)")
        value, where = value.get("allow", []), f"{where}.allow"
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ManifestError(f"{where}: expected a list of allowed destinations like 'example.com:443'")
    for n, entry in enumerate(value):
        try:
            parse_allow_entry(entry)
        except AllowEntryError as exc:
            raise ManifestError(f"{where}[{n}]: {exc}") from None
    return tuple(entry.strip() for entry in value)


def _parse_smoke(value: Any, where: str) -> tuple[Any, ...]:
    if not isinstance(value, list):
        raise ManifestError(f"{where}: expected a list of inputs")
    return tuple(value)


def _parse_config(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ManifestError(f"{where}: expected a mapping with string keys")
    return value
