#!/usr/bin/env python3
"""asyncreceive: BOLT 12 async receive for Core Lightning (loaded by lightningd).

Wiring only: options, hooks, notifications and RPC methods call into the ``asyncreceive`` package.
"""

import os
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))

from pyln.client import Plugin, RpcException  # noqa: E402

from asyncreceive import __version__  # noqa: E402
from asyncreceive.errors import DecodeError  # noqa: E402
from asyncreceive.node.lightningd import Lightningd  # noqa: E402
from asyncreceive.node.probe import Probe  # noqa: E402
from asyncreceive.node.transport import Transport, TransportError  # noqa: E402
from asyncreceive.node.worker import Worker  # noqa: E402
from asyncreceive.wire.messages import KNOWN_MESSAGE_TYPES  # noqa: E402
from asyncreceive.wire.paths import BlindedPath  # noqa: E402

PHANTOM_LABEL = "asyncreceive/phantom/v1"
CONTEXT_LABEL = "asyncreceive/context/v1"

plugin = Plugin()
plugin.add_option("asyncreceive-dev", False,
                  "Enable the asyncreceive-dev-* RPC methods (transport self-tests). Off by default.",
                  opt_type="flag")

state = {}


def log(msg: str, level: str = "info") -> None:
    plugin.log(msg, level=level)


def _transport() -> Transport:
    if "transport" not in state:
        raise RpcException("asyncreceive is not initialised yet")
    return state["transport"]


def _probe() -> Probe:
    if not plugin.get_option("asyncreceive-dev"):
        raise RpcException("asyncreceive-dev-* methods are disabled; start lightningd with --asyncreceive-dev")
    return state["probe"]


def _hex_arg(name: str, value) -> bytes:
    try:
        return bytes.fromhex(value)
    except (TypeError, ValueError):
        raise RpcException(f"{name}: not a hex string")


def _path_arg(name: str, value) -> BlindedPath:
    try:
        return BlindedPath.decode(_hex_arg(name, value), name)
    except DecodeError as e:
        raise RpcException(f"{name}: invalid blinded_path: {e}")


def _via_arg(via):
    if via is None:
        return []
    if isinstance(via, str):
        via = [via]
    out = [_hex_arg("via", v) for v in via]
    if any(len(v) != 33 for v in out):
        raise RpcException("via: each entry must be a 33-byte node id")
    return out


@plugin.init()
def init(options, configuration, plugin, **kwargs):
    node = Lightningd(plugin.rpc)
    transport = Transport(node, node.makesecret(PHANTOM_LABEL), node.makesecret(CONTEXT_LABEL), log)
    state["transport"] = transport
    state["probe"] = Probe(transport)
    worker = Worker(log)
    worker.start()
    state["worker"] = worker
    log(f"asyncreceive {__version__} ready; phantom hop {transport.phantom_id.hex()}")


@plugin.subscribe("onionmessage_forward_fail")
def on_forward_fail(plugin, **kwargs):
    try:
        payload = kwargs.get("onionmessage_forward_fail", kwargs)
        if "transport" in state:
            state["worker"].submit(state["transport"].handle_forward_fail, payload)
    except Exception:
        log(f"onionmessage_forward_fail handler error: {traceback.format_exc()}", "broken")


@plugin.hook("onion_message_recv_secret", before=["offers"])
def on_recv_secret(onion_message, plugin, **kwargs):
    """Messages on paths that end at our real node; ours carry a compact authenticated path_id."""
    try:
        if "transport" in state:
            msg = state["transport"].check_recv_secret(onion_message)
            if msg is not None:
                state["worker"].submit(state["transport"].dispatch, msg)
                return {"result": "stop"}
    except Exception:
        log(f"onion_message_recv_secret handler error: {traceback.format_exc()}", "broken")
    return {"result": "continue"}


@plugin.method("asyncreceive-status")
def status(plugin):
    """Show asyncreceive's transport: phantom hop id and onion messages sent, received and dropped (per reason)."""
    t = _transport()
    return {"version": __version__, "node_id": t.node.node_id.hex(), "phantom_id": t.phantom_id.hex(),
            "messages": t.stats.as_json()}


@plugin.method("asyncreceive-dev-makepath")
def dev_makepath(plugin, echo=False, via=None, compact=False):
    """[dev] Make a blinded path [via..., us, phantom] for transport probes; with echo=true every message
    arriving on it is sent back over its reply path; compact=true ends it at our real node instead (for
    invoice_request/invoice/invoice_error, which arrive through onion_message_recv_secret)."""
    path = _probe().make_path(bool(echo), _via_arg(via), bool(compact))
    return {"path": path.encode().hex()}


@plugin.method("asyncreceive-dev-send")
def dev_send(plugin, path, msgtype, body, reply=False, reply_via=None):
    """[dev] Send onion message {msgtype} with hex {body} over blinded {path}; reply=true attaches a probe
    reply path (through {reply_via} node ids, then us)."""
    p = _path_arg("path", path)
    if not isinstance(msgtype, int) or msgtype not in KNOWN_MESSAGE_TYPES:
        raise RpcException(f"msgtype: must be one of {sorted(KNOWN_MESSAGE_TYPES)}")
    data = _hex_arg("body", body)
    probe = _probe()
    try:
        probe.transport.send(p, msgtype, data, probe.context() if reply else None, _via_arg(reply_via))
    except TransportError as e:
        raise RpcException(f"send failed: {e}")
    return {"sent": True, "length": len(data)}


@plugin.method("asyncreceive-dev-received")
def dev_received(plugin):
    """[dev] List probe messages received (newest last)."""
    return {"received": list(_probe().received)}


if __name__ == "__main__":
    plugin.run()
