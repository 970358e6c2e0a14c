from neuroflow.gateway.errors import AGENT_REFUSED, STATUS, status_for
from neuroflow.sdk import AgentError
from neuroflow.sdk.types import RESERVED_CODES
from neuroflow.supervisor import errors


def test_every_supervisor_error_code_has_an_http_status() -> None:
    codes = {cls.code for cls in vars(errors).values()
             if isinstance(cls, type) and issubclass(cls, errors.NeuroflowError)}
    assert codes - {"internal"} <= set(STATUS), codes - set(STATUS)
    assert status_for("deadline_exceeded") == 504 and status_for("worker_crashed") == 502
    assert status_for("agent_not_found") == 404 and status_for("overloaded") == 503


def test_agent_codes_answer_422() -> None:
    assert status_for("division_by_zero") == AGENT_REFUSED == 422


def test_agent_error_validates_its_code() -> None:
    assert AgentError("bad_input", "no").code == "bad_input"
    for bad in ("", "has space", "semi;colon", "deadline_exceeded"):
        try:
            AgentError(bad, "x")
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad!r}")


def test_reserved_codes_are_exactly_the_platform_codes() -> None:
    assert set(STATUS) == RESERVED_CODES
