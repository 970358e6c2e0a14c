"""The supervisor's configuration: typed, validated once at start, immutable.

Sources, later ones winning: built-in defaults, the YAML file given with
``--config`` (default ``/etc/neuroflow/supervisor.yaml`` if it exists), then
command-line flags. Errors name the file and the key.
"""

from __future__ import annotations

import grp
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from neuroflow.sdk.manifest import (
    Limits,
    ManifestError,
    parse_duration,
    parse_limits,
    parse_size,
    positive_int,
)

from .otel import TelemetryConfig, parse_telemetry

DEFAULT_CONFIG_FILE = Path("/etc/neuroflow/supervisor.yaml")


class ConfigError(ManifestError):
    """A configuration value that is missing, of the wrong type, or out of range."""


@dataclass(frozen=True, slots=True)
class AgentDefaults:
    """Limits and pool sizes for agents whose manifest does not set them."""

    memory: int = 256 * 1024 * 1024
    cpu: float = 1.0
    pids: int = 64
    timeout: float = 30.0
    cpu_seconds: int = 600
    concurrency: int = 8
    pool_min: int = 1
    pool_max: int = 4

    def resolve(self, limits: Limits) -> Limits:
        """The manifest's limits with every unset field filled in."""
        return Limits(
            memory=limits.memory or self.memory,
            cpu=limits.cpu or self.cpu,
            pids=limits.pids or self.pids,
            timeout=limits.timeout or self.timeout,
            cpu_seconds=limits.cpu_seconds or self.cpu_seconds,
            concurrency=limits.concurrency or self.concurrency,
        )


@dataclass(frozen=True, slots=True)
class Config:
    state_dir: Path = Path("/var/lib/neuroflow")
    agents_dirs: tuple[Path, ...] = (Path("/etc/neuroflow/agents"),)
    socket: Path = Path("/run/neuroflow/supervisor.sock")
    socket_mode: int = 0o660
    #: Group that may use the socket (the gateway's); None keeps root's group.
    socket_group: str | None = "neuroflow"
    #: Cgroups are named ``neuroflow.<instance>``; a restart reclaims its own.
    instance: str = "default"
    #: Each agent gets its own uid (and gid) from [uid_base, uid_base + uid_count).
    uid_base: int = 420_000
    uid_count: int = 10_000
    max_frame_bytes: int = 16 * 1024 * 1024
    max_queue: int = 512
    #: After a request's deadline, how long its worker may take to acknowledge
    #: the cancellation before it is killed.
    kill_grace: float = 1.0
    drain_timeout: float = 10.0
    #: How often the workers' cgroups are polled for limit events (refused forks).
    limits_poll: float = 1.0
    log_level: str = "info"
    #: Agents' log lines (and the values of their fields) pass through this
    #: ``neuroflow.log_redactors`` entry point before they are logged; the
    #: guard's ``pii`` masks PII. None logs them as written.
    log_redactor: str | None = "pii"
    defaults: AgentDefaults = field(default_factory=AgentDefaults)
    #: Hot update: watch the agents' folders and deploy what changes.
    watch: bool = True
    debounce: float = 0.3
    #: After a swap the new release is on probation; the old one stays warm.
    probation: float = 10.0
    probation_min_requests: int = 5
    probation_max_error_rate: float = 0.2
    keep_releases: int = 5
    #: POSTed a JSON alert on a rejected update or a rollback.
    alert_webhook: str | None = None
    #: Metrics endpoint, OTLP export, trace files and alert rules (see telemetry.py).
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    #: Egress proxy (agents with a network allowlist): DNS + connect time allowed per
    #: connection, how long a connection may move no bytes, connections open per pool.
    egress_connect_timeout: float = 10.0
    egress_idle_timeout: float = 60.0
    egress_max_connections: int = 64

    def with_overrides(self, **overrides: Any) -> Config:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    @property
    def releases_dir(self) -> Path:
        return self.state_dir / "agents"


_KEYS = {
    "state_dir", "agents_dirs", "socket", "socket_mode", "socket_group", "instance",
    "uid_base", "uid_count", "max_frame_bytes", "max_queue", "kill_grace", "drain_timeout",
    "limits_poll", "log_level", "log_redactor", "defaults", "watch", "debounce", "probation", "probation_min_requests",
    "probation_max_error_rate", "keep_releases", "alert_webhook", "telemetry",
    "egress_connect_timeout", "egress_idle_timeout", "egress_max_connections",
}
_DEFAULT_KEYS = {"memory", "cpu", "pids", "timeout", "cpu_seconds", "concurrency", "pool_min", "pool_max"}


def load_config(path: Path | None) -> Config:
    """Read ``path`` (or the default file if present); built-in defaults otherwise."""
    if path is None:
        if not DEFAULT_CONFIG_FILE.exists():
            return Config()
        path = DEFAULT_CONFIG_FILE
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return parse_config(raw, str(path))


def parse_config(raw: Any, where: str) -> Config:
    """Validate a config mapping; every error is a :class:`ConfigError` naming ``where`` and the key."""
    try:
        return _parse_config(raw, where)
    except ConfigError:
        raise
    except ManifestError as exc:  # from the shared size/duration/int parsers
        raise ConfigError(str(exc)) from None


def _parse_config(raw: Any, where: str) -> Config:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise ConfigError(f"{where}: {unknown[0]}: unknown key (allowed: {', '.join(sorted(_KEYS))})")
    values: dict[str, Any] = {}
    for key in ("state_dir", "socket"):
        if key in raw:
            values[key] = Path(_string(raw[key], f"{where}: {key}"))
    if "agents_dirs" in raw:
        dirs = raw["agents_dirs"]
        if not isinstance(dirs, list) or not dirs:
            raise ConfigError(f"{where}: agents_dirs: expected a non-empty list of folders")
        values["agents_dirs"] = tuple(Path(_string(d, f"{where}: agents_dirs")) for d in dirs)
    if "socket_mode" in raw:
        mode = raw["socket_mode"]
        try:
            values["socket_mode"] = int(str(mode), 8)
        except ValueError:
            raise ConfigError(f"{where}: socket_mode: expected an octal mode like '0660', got {mode!r}") from None
    if "socket_group" in raw:
        values["socket_group"] = raw["socket_group"] and _string(raw["socket_group"], f"{where}: socket_group")
    if "instance" in raw:
        values["instance"] = _string(raw["instance"], f"{where}: instance")
    for key in ("uid_base", "uid_count", "max_queue"):
        if key in raw:
            values[key] = positive_int(raw[key], f"{where}: {key}")
    if "max_frame_bytes" in raw:
        values["max_frame_bytes"] = parse_size(raw["max_frame_bytes"], f"{where}: max_frame_bytes")
    for key in ("kill_grace", "drain_timeout", "limits_poll"):
        if key in raw:
            values[key] = parse_duration(raw[key], f"{where}: {key}")
    if "log_level" in raw:
        level = raw["log_level"]
        if level not in ("debug", "info", "warning", "error"):
            raise ConfigError(f"{where}: log_level: expected debug, info, warning or error, got {level!r}")
        values["log_level"] = level
    if "log_redactor" in raw:
        name = raw["log_redactor"]
        if name is not None and (not isinstance(name, str) or not name):
            raise ConfigError(f"{where}: log_redactor: expected a redactor's name (such as pii) or null, got {name!r}")
        values["log_redactor"] = name
    if "defaults" in raw:
        values["defaults"] = _parse_defaults(raw["defaults"], f"{where}: defaults")
    if "watch" in raw:
        if not isinstance(raw["watch"], bool):
            raise ConfigError(f"{where}: watch: expected true or false, got {raw['watch']!r}")
        values["watch"] = raw["watch"]
    for key in ("debounce", "probation"):
        if key in raw:
            values[key] = parse_duration(raw[key], f"{where}: {key}")
    for key in ("egress_connect_timeout", "egress_idle_timeout"):
        if key in raw:
            values[key] = parse_duration(raw[key], f"{where}: {key}")
    for key in ("probation_min_requests", "keep_releases", "egress_max_connections"):
        if key in raw:
            values[key] = positive_int(raw[key], f"{where}: {key}")
    if "probation_max_error_rate" in raw:
        rate = raw["probation_max_error_rate"]
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
            raise ConfigError(f"{where}: probation_max_error_rate: expected a number from 0 to 1, got {rate!r}")
        values["probation_max_error_rate"] = float(rate)
    if "alert_webhook" in raw:
        url = raw["alert_webhook"]
        if url is not None and (not isinstance(url, str) or not url.startswith(("http://", "https://"))):
            raise ConfigError(f"{where}: alert_webhook: expected an http(s) URL, got {url!r}")
        values["alert_webhook"] = url
    if "telemetry" in raw:
        values["telemetry"] = parse_telemetry(raw["telemetry"], f"{where}: telemetry")
    config = Config(**values)
    if config.uid_base < 1000:
        raise ConfigError(f"{where}: uid_base: expected >= 1000 (sandbox uids must be unprivileged)")
    return config


def _parse_defaults(raw: Any, where: str) -> AgentDefaults:
    """The same keys as a manifest's ``limits`` (same parser), plus the pool sizes."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping")
    unknown = sorted(set(raw) - _DEFAULT_KEYS)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key (allowed: {', '.join(sorted(_DEFAULT_KEYS))})")
    limits = parse_limits({k: v for k, v in raw.items() if not k.startswith("pool_")}, where)
    values: dict[str, Any] = {k: v for k, v in asdict(limits).items() if v is not None}
    if "pool_max" in raw:
        values["pool_max"] = positive_int(raw["pool_max"], f"{where}.pool_max")
    if "pool_min" in raw:
        values["pool_min"] = positive_int(raw["pool_min"], f"{where}.pool_min", allow_zero=True)
    return AgentDefaults(**values)


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: expected a non-empty string, got {value!r}")
    return value


def socket_gid(config: Config) -> int | None:
    """The socket's group id, or None when the configured group does not exist."""
    if not config.socket_group:
        return None
    try:
        return grp.getgrnam(config.socket_group).gr_gid
    except KeyError:
        return None


def runtime_paths() -> tuple[str, ...]:
    """Host paths the sandbox needs read-only to run Python and the SDK."""
    import neuroflow.sdk
    import neuroflow.v1

    paths = {os.path.realpath(p) for p in (os.sys.base_prefix, os.sys.prefix)}
    for module in (neuroflow.sdk, neuroflow.v1):
        paths.add(os.path.dirname(os.path.realpath(module.__file__ or "")))
    # Packages a worker imports (protobuf, uvloop, yaml) live in site-packages,
    # which sits under one of the prefixes above.
    return tuple(sorted(paths))
