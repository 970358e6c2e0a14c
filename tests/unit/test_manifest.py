from pathlib import Path

import pytest

from neuroflow.sdk.manifest import ManifestError, load_manifest, parse_duration, parse_size

GOOD = """
name: my-agent
version: 2
entry: agent:Thing
skills: [a, b]
examples: ["x"]
limits: {memory: 64MiB, cpu: 0.5, pids: 8, timeout: 250ms, cpu_seconds: 5, concurrency: 2}
pool: {min: 0, max: 3}
config: {key: value}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    return path


def test_good_manifest(tmp_path: Path) -> None:
    m = load_manifest(write(tmp_path, GOOD))
    assert (m.name, m.version, m.entry) == ("my-agent", "2", "agent:Thing")
    assert m.limits.memory == 64 * 1024 * 1024 and m.limits.cpu == 0.5 and m.limits.timeout == 0.25
    assert (m.pool.min, m.pool.max) == (0, 3)
    assert m.config == {"key": "value"} and m.seccomp == "default"


@pytest.mark.parametrize(("text", "message"), [
    ("name: x\nversion: '1'\n", "entry: required key is missing"),
    ("name: X!\nversion: '1'\nentry: a:B\n", "name: expected lower-case letters"),
    ("name: x\nversion: '1'\nentry: nocolon\n", "entry: expected 'module:Class'"),
    ("name: x\nversion: '1'\nentry: a:B\nlimits: {memory: lots}\n", "limits.memory: expected a size"),
    ("name: x\nversion: '1'\nentry: a:B\nlimits: {cpu: 0}\n", "limits.cpu: expected a number of cores"),
    ("name: x\nversion: '1'\nentry: a:B\nlimits: {disk: 1}\n", "limits.disk: unknown limit"),
    ("name: x\nversion: '1'\nentry: a:B\npool: {min: 3, max: 1}\n", "pool: min (3) is larger than max (1)"),
    ("name: x\nversion: '1'\nentry: a:B\nskills: nope\n", "skills: expected a list"),
    ("name: x\nversion: '1'\nentry: a:B\ncolour: red\n", "colour: unknown key"),
    ("- a list\n", "expected a mapping at the top level"),
    ("name: [unclosed\n", "not valid YAML"),
])
def test_errors_name_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ManifestError) as err:
        load_manifest(path)
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="cannot read"):
        load_manifest(tmp_path / "agent.yaml")


def test_units() -> None:
    assert parse_size("1.5GiB", "x") == int(1.5 * 1024**3)
    assert parse_size("512k", "x") == 512 * 1024
    assert parse_size(4096, "x") == 4096
    assert parse_duration("2m", "x") == 120 and parse_duration(3, "x") == 3.0
    with pytest.raises(ManifestError):
        parse_size(True, "x")
    with pytest.raises(ManifestError):
        parse_duration("-1s", "x")


def test_examples_are_valid() -> None:
    root = Path(__file__).resolve().parents[2]
    for path in (root / "examples").glob("*/agent.yaml"):
        assert load_manifest(path).name == path.parent.name
