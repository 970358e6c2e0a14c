"""What the router knows about an agent, and reading it from an ``agent.yaml``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from neuroflow.router.errors import RouterError

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


@dataclass(frozen=True)
class AgentProfile:
    """An agent's routing text: its description, skills and example requests (any language)."""

    name: str
    description: str = ""
    skills: tuple[str, ...] = ()
    examples: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise RouterError(f"agent name {self.name!r}: expected lower-case letters, digits, - or _")
        for field in ("skills", "examples"):
            value = getattr(self, field)
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise RouterError(f"agent {self.name}: {field} must be a sequence of strings")
            object.__setattr__(self, field, tuple(v.strip() for v in value if v.strip()))
        if not (self.description.strip() or self.skills or self.examples):
            raise RouterError(f"agent {self.name}: no description, skills or examples to route on")

    def texts(self) -> list[tuple[str, str]]:
        """(kind, text) pairs indexed for this agent: kind is description, skill or example."""
        out = [("description", " ".join(self.description.split()))] if self.description.strip() else []
        out += [("skill", s) for s in self.skills]
        out += [("example", e) for e in self.examples]
        return out


def load_profile(path: Path) -> AgentProfile:
    """Read name, description, skills and examples from an ``agent.yaml`` (other keys are ignored)."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise RouterError(f"{path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise RouterError(f"{path}: expected a mapping with a 'name'")
    try:
        return AgentProfile(name=data["name"], description=str(data.get("description") or ""),
                            skills=tuple(data.get("skills") or ()), examples=tuple(data.get("examples") or ()))
    except RouterError as exc:
        raise RouterError(f"{path}: {exc}") from exc
