from pathlib import Path

import pytest

from neuroflow.sdk.manifest import Limits
from neuroflow.supervisor.config import AgentDefaults, Config, ConfigError, load_config, parse_config


def test_defaults_without_a_file(tmp_path: Path) -> None:
    assert isinstance(load_config(None), Config)


def test_values_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("state_dir: /tmp/x\nagents_dirs: [/a, /b]\nsocket_mode: '0600'\n"
                    "defaults: {memory: 32MiB, pool_min: 0}\nkill_grace: 250ms\n")
    cfg = load_config(path)
    assert cfg.state_dir == Path("/tmp/x") and cfg.agents_dirs == (Path("/a"), Path("/b"))
    assert cfg.socket_mode == 0o600 and cfg.kill_grace == 0.25
    assert cfg.defaults.memory == 32 * 1024 * 1024 and cfg.defaults.pool_min == 0
    assert cfg.with_overrides(instance="x", socket=None).instance == "x"


@pytest.mark.parametrize(("raw", "message"), [
    ({"colour": 1}, "colour: unknown key"),
    ({"uid_base": 0}, "uid_base: expected an integer >= 1"),
    ({"uid_base": 10}, "uid_base: expected >= 1000"),
    ({"socket_mode": "rw"}, "socket_mode: expected an octal mode"),
    ({"defaults": {"memory": "x"}}, "defaults.memory: expected a size"),
    ({"defaults": {"swap": 1}}, "defaults.swap: unknown key"),
    ({"log_level": "loud"}, "log_level: expected debug"),
    ({"agents_dirs": []}, "agents_dirs: expected a non-empty list"),
    ({"log_redactor": ""}, "log_redactor: expected a redactor's name"),
])
def test_errors_name_key(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(raw, "conf.yaml")
    assert str(err.value).startswith("conf.yaml: ") and message in str(err.value)


def test_defaults_fill_unset_limits() -> None:
    limits = AgentDefaults(memory=1, cpu=2.0).resolve(Limits(memory=5))
    assert limits.memory == 5 and limits.cpu == 2.0 and limits.timeout == 30.0


def test_supervisor_refuses_to_run_unprivileged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    from neuroflow.supervisor import main as supervisor_main

    monkeypatch.setattr(supervisor_main.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(supervisor_main.logs, "setup", lambda level, component: None)
    monkeypatch.setattr(supervisor_main, "load_config", lambda path: Config())
    with caplog.at_level("ERROR"):
        assert supervisor_main.main(["--state-dir", str(tmp_path)]) == 1
    assert "must run as root" in caplog.text


def test_log_redactor_is_found_by_name_and_fails_closed() -> None:
    from neuroflow.supervisor import logs

    assert parse_config({"log_redactor": None}, "c").log_redactor is None and Config().log_redactor == "pii"
    redact = logs.load_redactor("pii")
    assert redact is not None and logs.load_redactor(None) is None
    message, fields = logs.redact_all(redact, "to bob@example.org", {"phone": "+86 138 1234 5678", "n": "42"})
    assert message == "to <EMAIL>" and fields == {"phone": "+** *** **** 5678", "n": "42"}
    with pytest.raises(LookupError, match=r"no redactor named 'nope' is installed \(installed: .*pii"):
        logs.load_redactor("nope")

    def broken(text: str) -> str:
        raise RuntimeError(text)

    message, fields = logs.redact_all(broken, "to bob@example.org", {"k": "bob@example.org"})
    assert "bob" not in message and fields == {} and "redactor failed (RuntimeError)" in message


def test_supervisor_refuses_an_unknown_log_redactor(monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    from neuroflow.supervisor import main as supervisor_main

    monkeypatch.setattr(supervisor_main.logs, "setup", lambda level, component: None)
    monkeypatch.setattr(supervisor_main, "load_config", lambda path: Config(log_redactor="nope"))
    with caplog.at_level("ERROR"):
        assert supervisor_main.main([]) == 2
    assert "no redactor named 'nope'" in caplog.text
