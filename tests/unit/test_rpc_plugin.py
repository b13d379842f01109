"""OperatorPlugin: a command's error is one line without a traceback, and nothing a command does can
leave a request unanswered or crash the plugin."""

import io
import json

from pyln.client import RpcException
from pyln.client.plugin import Request

from asyncreceive.shell.rpc_plugin import INVALID_PARAMS, OperatorPlugin


class Out(io.TextIOWrapper):
    def __init__(self):
        super().__init__(io.BytesIO(), encoding="utf-8")


def call(plugin, method, params):
    out = Out()
    plugin.stdout = out
    plugin._dispatch_request(Request(plugin, "1", method, params))
    raw = out.buffer.getvalue().decode().strip()
    assert raw.count("\n\n") == 0, raw          # exactly one answer
    return json.loads(raw)


def make():
    p = OperatorPlugin(stdout=Out(), stdin=io.StringIO(""))
    logs = []
    p.log = lambda msg, level="info": logs.append((level, msg))

    @p.method("ok")
    def ok(plugin, x):
        return {"x": x}

    @p.method("refuse")
    def refuse(plugin):
        raise RpcException("no async offer is ready yet")

    @p.method("buggy")
    def buggy(plugin):
        return {}["missing"]

    @p.method("unencodable")
    def unencodable(plugin):
        return {"raw": b"\x00"}

    return p, logs


def test_results_and_refusals_are_one_line_without_traceback():
    p, logs = make()
    assert call(p, "ok", {"x": 1})["result"] == {"x": 1}
    err = call(p, "refuse", {})["error"]
    assert err == {"code": -32600, "message": "no async offer is ready yet"}
    assert all(level == "debug" for level, _ in logs)


def test_bad_parameters_say_so():
    p, _ = make()
    err = call(p, "ok", {})["error"]
    assert err["code"] == INVALID_PARAMS and err["message"].startswith("bad parameters: ") and "traceback" not in err
    err = call(p, "ok", {"x": 1, "y": 2})["error"]
    assert err["code"] == INVALID_PARAMS


def test_a_bug_is_an_internal_error_logged_at_broken_with_the_traceback_at_debug():
    p, logs = make()
    err = call(p, "buggy", {})["error"]
    assert err["message"] == "internal error: KeyError: 'missing'" and "traceback" not in err
    assert ("broken", "buggy: internal error: KeyError: 'missing'") in logs
    assert any(level == "debug" and "Traceback" in msg for level, msg in logs)


def test_a_result_json_cannot_carry_is_answered_as_a_bug_not_a_crash():
    p, logs = make()
    err = call(p, "unencodable", {})["error"]
    assert err["message"].startswith("internal error: TypeError")


def test_a_background_command_refusing_or_given_bad_parameters_answers_in_one_line():
    p, _ = make()

    @p.async_method("later")
    def later(plugin, request, x):
        if x < 0:
            raise RpcException("x: not negative")
        request.set_result({"x": x})

    assert call(p, "later", {"x": 1})["result"] == {"x": 1}
    assert call(p, "later", {"x": -1})["error"] == {"code": -32600, "message": "x: not negative"}
    err = call(p, "later", {"bogus": 1})["error"]
    assert err["code"] == INVALID_PARAMS and err["message"].startswith("bad parameters: ")


def test_a_handlers_signature_is_worked_out_once(monkeypatch):
    """pyln-client binds every call's parameters through inspect.signature; the slow part (reading the
    function) runs once per handler, and the binding (plugin and request injected) stays the same."""
    import inspect
    p, _ = make()
    worked_out = []
    real = inspect._signature_from_function
    monkeypatch.setattr(inspect, "_signature_from_function",
                        lambda *a, **k: worked_out.append(a[1].__name__) or real(*a, **k))

    @p.async_method("both")
    def both(plugin, request, x, y=2):
        request.set_result({"x": x, "y": y, "plugin": plugin is p})

    for i in range(3):
        assert call(p, "ok", {"x": i})["result"] == {"x": i}
        assert call(p, "both", {"x": i})["result"] == {"x": i, "y": 2, "plugin": True}
    assert call(p, "both", [5, 6])["result"] == {"x": 5, "y": 6, "plugin": True}
    assert call(p, "ok", {"x": 1, "y": 2})["error"]["code"] == INVALID_PARAMS
    assert sorted(worked_out) == ["both", "ok"]


def answered(plugin, work):
    """What ``answer`` writes for a background command's request (exactly one answer)."""
    out = Out()
    plugin.stdout = out
    req = Request(plugin, "7", "asyncserver-listclients", {})
    req.background = True
    plugin.answer(req, work)
    raw = out.buffer.getvalue().decode().strip()
    assert raw.count("\n\n") == 0, raw
    return json.loads(raw)


def test_a_background_answer_maps_errors_as_a_command_does():
    p, logs = make()
    assert answered(p, lambda: {"clients": []})["result"] == {"clients": []}

    def refuse():
        raise RpcException("bad start", INVALID_PARAMS)
    assert answered(p, refuse)["error"] == {"code": INVALID_PARAMS, "message": "bad start"}

    def stopping():
        raise OSError("lightningd closed the RPC connection")
    err = answered(p, stopping)["error"]
    assert err["message"].startswith("not done: lightningd is stopping") and logs[-1][0] == "debug"
    assert not any(level == "broken" for level, _ in logs)
    # a result pyln could not write (a lone surrogate: JSON escapes it, UTF-8 cannot) is our bug, answered
    err = answered(p, lambda: {"client_id": "\ud800"})["error"]
    assert err["message"].startswith("internal error") and any(level == "broken" for level, _ in logs)
