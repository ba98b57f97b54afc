"""WebSocket control messages: SUBSCRIBE, UNSUBSCRIBE, LIST_SUBSCRIPTIONS, SET/GET_PROPERTY."""

from __future__ import annotations

import re
from typing import Any, Protocol

import orjson

from consolidator.sim.streams import is_valid_stream

__all__ = ["ControlTarget", "handle_control"]

_ID_RE = re.compile(r"^[A-Za-z0-9]{1,36}$")
_METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
_INT64 = 2**63


class ControlTarget(Protocol):
    """The connection state a control message acts on."""

    combined: bool

    def stream_names(self) -> list[str]:
        """Subscribed streams, in subscription order."""

    def add_streams(self, names: list[str]) -> None:
        """Subscribe."""

    def remove_streams(self, names: list[str]) -> None:
        """Unsubscribe."""


class _RequestError(Exception):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


def _valid_id(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -_INT64 <= value < _INT64
    return isinstance(value, str) and _ID_RE.match(value) is not None


def _string_params(request: dict[str, Any]) -> list[str]:
    if "params" not in request:
        raise _RequestError(2, "Invalid request: missing field `params`")
    params = request["params"]
    if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
        raise _RequestError(2, "Invalid request: invalid type: expected a sequence of strings")
    return params


def _property_name(params: Any, arity: int) -> str:
    if not isinstance(params, list) or len(params) < arity:
        raise _RequestError(2, "Invalid request: missing parameters")
    if len(params) > arity:
        raise _RequestError(2, "Invalid request: too many parameters")
    if not isinstance(params[0], str):
        raise _RequestError(2, "Invalid request: property name must be a string")
    if params[0] != "combined":
        raise _RequestError(0, "Unknown property")
    return params[0]


def _execute(target: ControlTarget, request: dict[str, Any], max_streams: int) -> Any:
    method = request["method"]
    if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
        names = _string_params(request)
        if not all(is_valid_stream(n) for n in names):
            raise _RequestError(2, "Invalid request: invalid stream")
        if method == "UNSUBSCRIBE":
            target.remove_streams(names)
            return None
        current = target.stream_names()
        if len(set(current) | set(names)) > max_streams:
            raise _RequestError(2, f"Invalid request: too many streams (max {max_streams})")
        target.add_streams(list(dict.fromkeys(names)))
        return None
    if method == "LIST_SUBSCRIPTIONS":
        return target.stream_names()
    if method == "SET_PROPERTY":
        params = request.get("params")
        _property_name(params, 2)
        assert isinstance(params, list)
        if not isinstance(params[1], bool):
            raise _RequestError(1, "Invalid value type: expected Boolean")
        target.combined = params[1]
        return None
    _property_name(request.get("params"), 1)
    return target.combined


def _reply_error(code: int, msg: str, rid: Any, nested: bool) -> bytes:
    if nested:
        return orjson.dumps({"error": {"code": code, "msg": msg}, "id": rid})
    return orjson.dumps({"code": code, "msg": msg, "id": rid})


def handle_control(
    target: ControlTarget, raw: str | bytes, max_streams: int, nested_errors: bool = False
) -> bytes:
    """Execute one control message and return the reply to send.

    Args:
        target: Connection state.
        raw: The received text (or binary) message.
        max_streams: Stream limit of the connection.
        nested_errors: Reply errors as ``{"error":{"code","msg"},"id"}`` (what the live
            servers send) instead of the documented flat ``{"code","msg","id"}``.

    Returns:
        ``{"result":...,"id":...}`` or an error reply.
    """
    try:
        request = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return _reply_error(
            3,
            f"Invalid JSON: expected value at line {exc.lineno} column {exc.colno}",
            None,
            nested_errors,
        )
    if not isinstance(request, dict):
        return _reply_error(2, "Invalid request: missing field `method`", None, nested_errors)
    rid = request.get("id")
    if not _valid_id(rid):
        return _reply_error(
            2, "Invalid request: request ID must be an unsigned integer", None, nested_errors
        )
    try:
        if "id" not in request:
            raise _RequestError(2, "Invalid request: missing field `id`")
        method = request.get("method")
        if method is None:
            raise _RequestError(2, "Invalid request: missing field `method`")
        if method not in _METHODS:
            expected = ", ".join(f"`{m}`" for m in _METHODS)
            raise _RequestError(
                2, f"Invalid request: unknown variant `{method}`, expected one of {expected}"
            )
        result = _execute(target, request, max_streams)
    except _RequestError as exc:
        return _reply_error(exc.code, exc.msg, rid, nested_errors)
    return orjson.dumps({"result": result, "id": rid})
