"""Evaluates arithmetic safely: ``"2 * (3 + 4)"`` or ``{"expression": "sqrt(2)"}``."""

from typing import Any

from evaluator import CalcError, evaluate  # the agent's folder is on sys.path

from neuroflow.sdk import Agent, AgentError, Context, Request, Response


def _expression(value: Any) -> str:
    """The expression in a request's input, or AgentError("invalid_input")."""
    if isinstance(value, dict) and isinstance(value.get("expression"), str):
        return value["expression"]
    if isinstance(value, str):
        return value
    raise AgentError(
        "invalid_input",
        'The input must be an expression string such as "2 * (3 + 4)" '
        'or an object like {"expression": "2 * (3 + 4)"}.',
    )


class Calc(Agent):
    metadata = {"name": "calc", "version": "1.0", "skills": ["evaluate arithmetic expressions"]}

    async def handle(self, request: Request, context: Context) -> Response:
        expr = _expression(request.input)
        try:
            value = evaluate(expr)
        except CalcError as err:
            context.log("evaluated", expression_length=len(expr), outcome=err.code)
            context.emit_metric("calc.evaluations", 1, outcome=err.code)
            raise AgentError(err.code, str(err)) from err
        context.log("evaluated", expression_length=len(expr), outcome="ok")
        context.emit_metric("calc.evaluations", 1, outcome="ok")
        return Response(output={"expression": expr, "result": value})
