"""Semantic router (issue #6): send a natural-language request to the agent whose skills fit it.

Library only (no HTTP or gRPC); the gateway calls it from a thread pool::

    from neuroflow.router import Router, RouterConfig, AgentProfile
    router = Router(RouterConfig(default_agent="echo", bad_case_log=Path("/var/log/neuroflow/route.jsonl")))
    router.update_agents([AgentProfile(name="calc", description="...", skills=("...",), examples=("...",))])
    router.route("what is 17*23").to_json()
    # {"agent": "calc", "confidence": 0.93, "fallback": false, "candidates": [{"agent": "calc", "score": 0.91}, ...]}

Embeddings come from :mod:`neuroflow.router.embedding` (onnxruntime, one
thread), which the guard reuses. How decisions are made, the model choice and
the measured figures: router/README.md.
"""

from neuroflow.router.badcases import read_bad_cases
from neuroflow.router.core import DEFAULT_THRESHOLD, RouteDecision, Router, RouterConfig
from neuroflow.router.embedding import Embedder, load_embedder
from neuroflow.router.errors import ModelNotFoundError, RouterError
from neuroflow.router.profiles import AgentProfile, load_profile

__all__ = [
    "DEFAULT_THRESHOLD",
    "AgentProfile",
    "Embedder",
    "ModelNotFoundError",
    "RouteDecision",
    "Router",
    "RouterConfig",
    "RouterError",
    "load_embedder",
    "load_profile",
    "read_bad_cases",
]
