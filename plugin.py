#!/usr/bin/env python3
"""asyncreceive: BOLT 12 async receive for Core Lightning (loaded by lightningd).

Wiring only: options, hooks, notifications and RPC methods call into the ``asyncreceive`` package.
"""

import dataclasses
import functools
import os
import queue
import threading
import traceback
from typing import Optional

try:
    from pyln.client import RpcError, RpcException

    from asyncreceive import __version__
    from asyncreceive.app import App
    from asyncreceive.errors import DecodeError
    from asyncreceive.shell import crashpoint
    from asyncreceive.shell.lightningd import Lightningd
    from asyncreceive.shell.rpc import KeptConnectionRpc
    from asyncreceive.shell.probe import Probe
    from asyncreceive.shell.rpc_plugin import OperatorPlugin
    from asyncreceive.shell.transport import Transport, TransportError
    from asyncreceive.shell.worker import Worker
    from asyncreceive.paying.service import PayError, PayService
    from asyncreceive.paying.payer import PayLimits
    from asyncreceive.receiving.service import PaymentsService
    from asyncreceive.recipient.service import RecipientError, RecipientService
    from asyncreceive.server.ratelimit import RateLimiter
    from asyncreceive.server.service import ServerConfig, ServerError, ServerService, invoice_cursor
    from asyncreceive.wire.messages import KNOWN_MESSAGE_TYPES
    from asyncreceive.wire.paths import BlindedPath, decode_server_paths
except ImportError as e:  # started by a python3 without our dependencies
    from asyncreceive.missing_deps import is_missing_dependency, refuse_to_start
    if not is_missing_dependency(e):
        raise
    refuse_to_start(e, __file__)

PHANTOM_LABEL = "asyncreceive/phantom/v1"
CONTEXT_LABEL = "asyncreceive/context/v1"
OFFER_KEY_LABEL = "asyncreceive/offer-key/v1"
#: onion messages handled per incoming peer: a burst of 20, then 4 a second (CLN lets 4/s per peer
#: through connectd; this bounds what we spend on them, from peeling on)
PEER_BURST, PEER_REFILL = 20, 0.25
#: JSON-RPC's code for invalid params (lightningd's own commands answer bad arguments with it)
INVALID_PARAMS = -32602

#: of the int options, those that may be 0
ZERO_OK = {"asyncserver-max-held", "asyncreceive-pay-invoice-grace-ms"}
#: the largest value of an int option (others: 2^32)
MAXIMUM = {"asyncreceive-slots": 1000, "asyncreceive-tick-seconds": 86400, "asyncserver-max-slots": 65536,
           "asyncreceive-pay-timeout": 30 * 86400, "asyncserver-hold-seconds": 30 * 86400,
           "asyncreceive-pay-invoice-grace-ms": 60000}


def _count(name: str, value) -> int:
    """An int option's value (lightningd hands setconfig's as a string), checked: ValueError says why."""
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an integer, not {value!r}")
    zero_ok = name in ZERO_OK
    if v < 0 or (v == 0 and not zero_ok):
        raise ValueError(f"{name} must be {'zero or more' if zero_ok else 'positive'}, not {v}")
    if v > MAXIMUM.get(name, 2 ** 32):
        raise ValueError(f"{name} must be at most {MAXIMUM.get(name, 2 ** 32)}, not {v}")
    return v


def _on_setconfig(plugin, name: str, value) -> None:
    """`lightning-cli setconfig` of a dynamic option: refuse a bad value with the reason, else hand the new
    value to the running service (lightningd records it once we return)."""
    try:
        v = _count(name, value)
    except ValueError as e:
        raise RpcException(str(e))
    if app is not None:  # else init has not run yet (or disabled us): init reads the option
        APPLY[name](v)


plugin = OperatorPlugin()
plugin.add_option("asyncreceive-server-path", None,
                  "Blinded path(s) to our static invoice server, as hex of one blinded_path or of LDK's "
                  "u16-counted list. May be given several times: all are paths to one server.",
                  opt_type="string", multi=True)
plugin.add_option("asyncreceive-server", None,
                  "A static invoice server we are enrolled at, as hex of its paths (paths_hex of its "
                  "asyncserver-addclient, or one blinded_path). May be given several times: one server each; "
                  "offers then carry paths of every server that answers.", opt_type="string", multi=True)


def _dynamic_int(name: str, default: int, description: str) -> None:
    """An int option that `lightning-cli setconfig` changes at run time (see APPLY)."""
    plugin.add_option(name, default, description + " Dynamic: setconfig changes it without a restart.",
                      opt_type="int", dynamic=True, on_change=_on_setconfig)


_dynamic_int("asyncreceive-slots", 10, "Number of async offers to keep ready (cache slots).")
_dynamic_int("asyncreceive-tick-seconds", 60, "Seconds between cache refresh ticks.")
_dynamic_int("asyncserver-max-clients", 1000, "Static invoice server: most clients to enrol.")
_dynamic_int("asyncserver-max-slots", 10, "Static invoice server: most invoice slots per client.")
_dynamic_int("asyncserver-max-invoice-bytes", 5120, "Static invoice server: largest static invoice stored.")
_dynamic_int("asyncserver-max-held", 64, "Static invoice server: most onion messages held per offline client "
             "until it reconnects (a count; 0 turns holding off).")
_dynamic_int("asyncserver-max-held-bytes", 96000,
             "Static invoice server: most bytes of onion messages held per offline client.")
_dynamic_int("asyncserver-hold-seconds", 86400,
             "Static invoice server: seconds an onion message is held for an offline client.")
_dynamic_int("asyncreceive-pay-timeout", 86400,
             "asyncreceive-pay: seconds to wait for an offline recipient to release the payment.")
plugin.add_option("asyncreceive-pay-invoice-grace-ms", 1500,
                  "asyncreceive-pay: after a static invoice, milliseconds to wait for the payee's own invoice "
                  "(proof of payment) before asking an offline recipient to release the payment.", opt_type="int")
plugin.add_option("asyncreceive-dev", False,
                  "Enable the asyncreceive-dev-* RPC methods (transport self-tests). Off by default.",
                  opt_type="flag")
plugin.add_option("asyncreceive-dev-crash-at", None,
                  "[dev, tests only; needs asyncreceive-dev] Kill lightningd with SIGKILL at this step (a crash point: "
                  + ", ".join(crashpoint.POINTS) + "). Unset by default: no effect.", opt_type="string")

plugin.add_notification_topic("asyncreceive_payment")
plugin.add_notification_topic("asyncreceive_pay")

#: the running plugin's parts, built by init (None before, or if init disabled the plugin)
app: Optional[App] = None


#: our log levels, lowest first, and lightningd's (its log-level option) at or below each
LOG_LEVELS = {"debug": 0, "info": 1, "unusual": 2, "broken": 3}
LIGHTNINGD_LEVELS = {"io": 0, "trace": 0, "debug": 0, "info": 1, "unusual": 2, "broken": 3}


def log(msg: str, level: str = "info") -> None:
    if LOG_LEVELS.get(level, 3) >= (app.log_level if app is not None else 0):
        plugin.log(msg, level=level)


def _lightningd_log_level(configs: dict) -> int:
    """The lowest of our levels lightningd writes (its log-level option): lines below it are not sent
    (each is a notification to lightningd, which would drop it).  0 (send all) if a log-level names a
    subsystem (``debug:plugin-...``) or is not understood."""
    opt = configs.get("log-level", {})
    values = opt.get("values_str") or ([opt["value_str"]] if "value_str" in opt else [])
    if not values or any(":" in v or v not in LIGHTNINGD_LEVELS for v in values):
        return 0
    return min(LIGHTNINGD_LEVELS[v] for v in values)


def _app() -> App:
    if app is None:
        raise RpcException("asyncreceive is not initialised yet")
    return app


def _transport() -> Transport:
    return _app().transport


def _probe() -> Probe:
    if not plugin.get_option("asyncreceive-dev"):
        raise RpcException("asyncreceive-dev-* methods are disabled; start lightningd with --asyncreceive-dev")
    return _app().probe


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


def _server_option(name: str, v: str):
    try:
        return decode_server_paths(bytes.fromhex(v), name)
    except (ValueError, DecodeError) as e:
        raise ValueError(f"{name} {v[:20]}...: {e}")


def _servers_option():
    """The servers the options name: asyncreceive-server-path's paths (one server), then one per
    asyncreceive-server."""
    one = [p for v in plugin.get_option("asyncreceive-server-path") or []
           for p in _server_option("asyncreceive-server-path", v)]
    return ([one] if one else []) + [_server_option("asyncreceive-server", v)
                                     for v in plugin.get_option("asyncreceive-server") or []]


def _int_option(name):
    return _count(name, plugin.get_option(name))


def _set_server_limit(name: str, v: int) -> None:
    """asyncserver-max-held -> ServerConfig.max_held, ...: the service reads its config on each use."""
    server = app.server
    server.config = dataclasses.replace(server.config, **{name[len("asyncserver-"):].replace("-", "_"): v})


def _set_slots(v: int) -> None:
    app.recipient.set_slots(v)
    app.worker.submit(app.recipient.tick)  # new slots are requested now, not at the next tick


#: how the running services take a dynamic option's new value (setconfig)
APPLY = {
    "asyncreceive-slots": _set_slots,
    "asyncreceive-tick-seconds": lambda v: app.worker.set_tick_seconds(v),
    "asyncreceive-pay-timeout": lambda v: setattr(app.pay, "timeout", v),
}
APPLY.update({name: functools.partial(_set_server_limit, name) for name in (
    "asyncserver-max-clients", "asyncserver-max-slots", "asyncserver-max-invoice-bytes", "asyncserver-max-held",
    "asyncserver-max-held-bytes", "asyncserver-hold-seconds")})


@plugin.init()
def init(options, configuration, plugin, **kwargs):
    global app
    try:
        servers = _servers_option()
        slots, tick = _int_option("asyncreceive-slots"), _int_option("asyncreceive-tick-seconds")
        server_cfg = ServerConfig(_int_option("asyncserver-max-clients"), _int_option("asyncserver-max-slots"),
                                  _int_option("asyncserver-max-invoice-bytes"),
                                  _int_option("asyncserver-max-held"),
                                  _int_option("asyncserver-hold-seconds"), _int_option("asyncserver-max-held-bytes"))
        pay_timeout = _int_option("asyncreceive-pay-timeout")
        invoice_grace = _int_option("asyncreceive-pay-invoice-grace-ms") / 1000
        crashpoint.set_crash_at(plugin.get_option("asyncreceive-dev-crash-at"), log,
                                bool(plugin.get_option("asyncreceive-dev")))
    except ValueError as e:
        return {"disable": str(e)}
    node = Lightningd(KeptConnectionRpc(plugin.rpc.socket_path))
    node.follow_peers()   # connected peers from the connect/disconnect notifications below
    transport = Transport(node, node.makesecret(PHANTOM_LABEL), node.makesecret(CONTEXT_LABEL), log)
    server = ServerService(transport, server_cfg, log)
    configs = plugin.rpc.listconfigs()["configs"]
    final_cltv = configs.get("cltv-final", {}).get("value_int", 18)
    network = plugin.rpc.getinfo()["network"]
    recipient = RecipientService(transport, slots, log, network, node.makesecret(OFFER_KEY_LABEL), final_cltv)
    parts = App(transport, Probe(transport), server, recipient,
                PaymentsService(transport, recipient, log, lambda p: plugin.notify("asyncreceive_payment", p),
                                wake=lambda delay: app.worker.wake("mpp", delay, app.payments.run_due)),
                PayService(transport, network, log, pay_timeout, invoice_grace=invoice_grace,
                           notify=lambda p: plugin.notify("asyncreceive_pay", p),
                           wake=lambda delay: app.worker.wake("pay", delay, app.pay.run_due)),
                log_level=_lightningd_log_level(configs))
    parts.route()
    server.load(background=True)   # requests are served while it counts what is stored
    recipient.load(servers)
    first = [True]
    if not configuration.get("startup", True):
        transport.running.set()  # started by `plugin start`: lightningd is already running

    def on_tick():
        # Nothing may touch the node key before lightningd has started (see Transport.running):
        # the first tick waits for the first peer connection, which comes after that.
        if not transport.running.is_set():
            return
        start, first[0] = first[0], False
        if start:
            parts.pay.resume()
        # each part on its own: one failing must not stop the others
        # the channel graph first: replies route only over the cached graph, which nothing else refreshes
        # (the connected peers are listed again first, in case a notification was missed)
        for part in (node.reload_peers, transport.graph.refresh_if_due, lambda: recipient.tick(start=start),
                     server.tick, parts.pay.check_sending):
            try:
                part()
            except OSError as e:  # lightningd's RPC socket is gone: it is shutting down
                return log(f"tick: lightningd not reachable ({e}); shutting down?", "debug")
            except RpcError as e:
                log(f"tick: lightningd refused a call: {e}", "unusual")
            except Exception:
                log(f"tick error: {traceback.format_exc()}", "broken")

    parts.worker = Worker(log, tick=on_tick, tick_seconds=tick, on_drop=transport.drop,
                          rate=RateLimiter(PEER_BURST, PEER_REFILL))
    app = parts   # hooks, notifications and RPC methods now reach the parts
    parts.worker.start()
    log(f"asyncreceive {__version__} ready; phantom hop {transport.phantom_id.hex()}; "
        f"{len(recipient.servers)} server(s), {len(recipient.server_paths)} server path(s), {slots} slots")


@plugin.subscribe("onionmessage_forward_fail")
def on_forward_fail(plugin, **kwargs):
    try:
        payload = kwargs.get("onionmessage_forward_fail", kwargs)
        if app is not None:
            source = payload.get("source") if isinstance(payload, dict) else None
            app.worker.submit_message(source if isinstance(source, str) else None,
                                      app.transport.handle_forward_fail, payload)
    except Exception:
        log(f"onionmessage_forward_fail handler error: {traceback.format_exc()}", "broken")


@plugin.hook("onion_message_recv_secret", before=["offers"])
def on_recv_secret(onion_message, plugin, **kwargs):
    """Messages on paths that end at our real node; ours carry a compact authenticated path_id."""
    try:
        if app is not None:
            msg = app.transport.check_recv_secret(onion_message)
            if msg is not None:
                app.worker.submit_message(None, app.transport.dispatch, msg)
                return {"result": "stop"}
    except Exception:
        log(f"onion_message_recv_secret handler error: {traceback.format_exc()}", "broken")
    return {"result": "continue"}


def _recipient() -> RecipientService:
    return _app().recipient


def _server() -> ServerService:
    return _app().server


@plugin.subscribe("connect")
def on_connect(plugin, **kwargs):
    """A peer connected (e.g. our server after a restart of either side): retry what is waiting now,
    rather than after the backoff (as LDK does on peer_connected); relay what we hold for it."""
    try:
        if app is not None:
            if not app.transport.running.is_set():
                app.transport.running.set()  # connect notifications only come once lightningd runs
                app.worker.tick_now()        # the start-up tick (resume payments, connect to our server)
            peer = kwargs.get("connect", kwargs).get("id")
            if peer:
                app.transport.node.peer_changed(bytes.fromhex(peer), True)
                app.worker.submit(app.recipient.on_peer_connected, bytes.fromhex(peer))
                app.worker.submit(app.server.on_peer_connected, bytes.fromhex(peer))
    except Exception:
        log(f"connect handler error: {traceback.format_exc()}", "broken")


@plugin.subscribe("disconnect")
def on_disconnect(plugin, **kwargs):
    try:
        peer = kwargs.get("disconnect", kwargs).get("id")
        if app is not None and peer:
            app.transport.node.peer_changed(bytes.fromhex(peer), False)
    except Exception:
        log(f"disconnect handler error: {traceback.format_exc()}", "broken")


@plugin.subscribe("shutdown")
def on_shutdown(plugin, **kwargs):
    """lightningd is stopping (or ``plugin stop``): take no more work, leave the server's tally for the
    next start (``ServerService.close``), and exit.  lightningd gives plugins 30 s; it accepts no new
    RPC connection by then but answers on the open ones, so the tally is written from this thread (the
    main one), whose kept connection (shell/rpc.py: one per thread) init opened."""
    try:
        if app is not None:
            app.worker.stop()
            app.server.close()
    except Exception:
        log(f"shutdown handler error: {traceback.format_exc()}", "broken")
    finally:
        with plugin.write_lock:    # no other thread is half-way through a line to lightningd
            os._exit(0)


@plugin.subscribe("channel_opened")
def on_channel_opened(plugin, **kwargs):
    if app is not None:
        app.worker.submit(app.recipient.check_channels)


@plugin.subscribe("channel_state_changed")
def on_channel_state_changed(plugin, **kwargs):
    if app is not None:
        app.worker.submit(app.recipient.check_channels)


def on_htlc_accepted(onion, htlc, request, plugin, **kwargs):
    """Async (keysend) HTLCs on our static invoices' payment paths; everything else continues."""
    answered = [False]

    def respond(result):
        if not answered[0]:
            answered[0] = True
            request.set_result(result)

    try:
        if app is not None and app.payments.on_htlc(onion, htlc, respond):
            return
    except Exception:
        log(f"htlc_accepted handler error: {traceback.format_exc()}", "broken")
    respond({"result": "continue"})


# before CLN's keysend plugin, which would otherwise take TLV 5482373484 as a plain keysend
plugin.add_hook("htlc_accepted", on_htlc_accepted, background=True, before=["keysend"])


def _int_arg(name: str, value, minimum: int = 0, maximum: int = 2 ** 63):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise RpcException(f"{name}: {'a positive integer' if minimum == 1 else 'an integer'} from {minimum} to {maximum}")
    return value


@plugin.method("asyncreceive-pay")
def pay(plugin, offer, amount_msat=None, payer_note=None, maxfeepercent=0.5, maxfee=None, exemptfee=5000,
        maxdelay=2016):
    """Pay BOLT 12 {offer} (its recipient may be offline): {amount_msat} if the offer has no amount.
    Fees are capped as lightningd's pay caps them: {maxfeepercent} of the amount (default 0.5), fees up to
    {exemptfee} msat (default 5000) always allowed, or {maxfee} msat instead of both; the HTLC's delay at
    most {maxdelay} blocks (default 2016).  Returns at once with a payment_id; asyncreceive-listpays shows
    each step and the result."""
    amount_msat = _int_arg("amount_msat", amount_msat, 1)
    if isinstance(maxfeepercent, bool) or not isinstance(maxfeepercent, (int, float)) or not 0 <= maxfeepercent <= 100:
        raise RpcException("maxfeepercent: a number from 0 to 100")
    if payer_note is not None and not isinstance(payer_note, str):
        raise RpcException("payer_note: a string")
    limits = PayLimits(float(maxfeepercent), _int_arg("exemptfee", exemptfee), _int_arg("maxfee", maxfee),
                       _int_arg("maxdelay", maxdelay, 1, 65535))
    try:
        return _pay().pay(offer, amount_msat, payer_note, limits)
    except PayError as e:
        raise RpcException(str(e))


@plugin.method("asyncreceive-listpays")
def listpays(plugin):
    """List payments made with asyncreceive-pay: status (requested, waiting_release, sending, complete,
    failed, cancelled), the current step in words, attempts, last error and when, the next try, the
    deadline, the route taken (static or normal), payment_hash, and the preimage once complete."""
    return {"pays": _pay().list_pays()}


@plugin.method("asyncreceive-cancelpay")
def cancelpay(plugin, payment_id):
    """Cancel asyncreceive-pay's {payment_id} if it has not started sending (no HTLC can be in flight);
    a release that arrives afterwards pays nothing."""
    try:
        return _pay().cancel(_hex_arg("payment_id", payment_id))
    except PayError as e:
        raise RpcException(str(e))


def _pay() -> PayService:
    return _app().pay


@plugin.method("asyncreceive-listpayments")
def listpayments(plugin):
    """List async payments received (offer_id, amount_msat, received_at, payer_note, preimage)."""
    return {"payments": _app().payments.list_payments()}


@plugin.method("asyncreceive-status")
def status(plugin):
    """Show asyncreceive's state: server paths and each server (id, paths_hex, state answering, waiting,
    down or unknown, last answer, unanswered messages, next try while down, offers it holds), offer slots per status, onion messages sent, received,
    relayed to us by our server's mailbox and dropped (per reason), the last error, and (as a server) the
    onion messages held for offline clients and what it stores (static_invoice_server: clients,
    invoices, mailboxes, held_messages, bytes_stored; counted as they change, nothing is listed;
    counting: true while a start after a crash still counts what is stored, with clients, invoices
    and bytes_stored null until it is done)."""
    t = _transport()
    out = {"version": __version__, "node_id": t.node.node_id.hex(), "phantom_id": t.phantom_id.hex(),
           "messages": t.stats.as_json()}
    out.update(_recipient().status())
    out["static_invoice_server"] = app.server.totals(wait=False)   # answered now, even while counting
    out["held_messages"] = out["static_invoice_server"]["held_messages"]
    return out


@plugin.method("asyncreceive-setserver")
def setserver(plugin, paths=None, servers=None):
    """Set (and persist) the static invoice server(s) we are enrolled at.  {paths}: one server, as hex of a
    blinded_path, of LDK's u16-counted list (paths_hex of asyncserver-addclient), or a list of either.
    {servers}: several independent servers, a list with one such entry (hex or list of hex) per server;
    offers then carry the paths of every server that answers, so they outlive one server's outage.  A
    server left out is removed: its slots not handed out yet are filled by the others."""
    if (paths is None) == (servers is None):
        raise RpcException("give either paths (one server) or servers (a list, one entry per server)")
    if servers is not None and (not isinstance(servers, list) or not servers):
        raise RpcException("servers: a non-empty list, one entry (hex, or a list of hex) per server")
    parsed = [_server_arg("paths", paths)] if servers is None else \
        [_server_arg(f"servers[{i}]", v) for i, v in enumerate(servers)]
    try:
        ids = _recipient().set_servers(parsed)
    except RecipientError as e:
        raise RpcException(str(e))
    app.worker.submit(app.recipient.tick, True)
    return {"server_paths": [p.encode().hex() for one in parsed for p in one],
            "servers": [{"id": i.hex(), "paths": [p.encode().hex() for p in one]} for i, one in zip(ids, parsed)]}


def _server_arg(name: str, value):
    items = value if isinstance(value, list) else [value]
    out = []
    for v in items:
        try:
            out += decode_server_paths(_hex_arg(name, v), name)
        except DecodeError as e:
            raise RpcException(str(e) if str(e).startswith(name) else f"{name}: {e}")
    if not out:
        raise RpcException(f"{name}: no path")
    return out


@plugin.method("asyncreceive-listoffers")
def listoffers(plugin, status=None):
    """List cached async offers, optionally only those with {status} (pending, ready or used); each names the
    servers whose paths it carries (id, as in asyncreceive-status) and whether each confirmed it stored its
    static invoice."""
    try:
        return {"offers": _recipient().list_offers(status)}
    except RecipientError as e:
        raise RpcException(str(e))


@plugin.async_method("asyncreceive-getoffer")
def getoffer(plugin, request, amount_msat=None, description=None, issuer=None, timeout=30):
    """Get an async offer to give to a payer: the newest ready one (now marked used), else the used one that
    expires last.  With {amount_msat}, {description} (needed with an amount) or {issuer}: a new offer with
    them, made on a ready slot's paths, returned once the server confirms it stored its static invoice
    (waiting up to {timeout} seconds, default 30)."""
    def answer(get):
        try:
            request.set_result(get())
        except (RecipientError, RpcException) as e:  # an operator's business: one line, as for other commands
            e = e if isinstance(e, RpcException) else RpcException(str(e))
            plugin._fail(request, e.code, e.message, "debug")
        except Exception as e:
            plugin._bug(request, e)

    if amount_msat is None and description is None and issuer is None:
        return answer(lambda: _recipient().get_offer())
    # background: the server's reply comes through a hook, which this thread must not hold up
    wait = functools.partial(_recipient_waiting_offer, amount_msat, description, issuer, timeout)
    threading.Thread(target=answer, args=(wait,), name="getoffer", daemon=True).start()


def _recipient_waiting_offer(amount_msat, description, issuer, timeout) -> dict:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 600:
        raise RpcException("timeout: seconds, more than 0 and at most 600")
    return _recipient().make_offer(amount_msat, description, issuer, float(timeout))


@plugin.method("asyncreceive-refresh")
def refresh(plugin):
    """Request offers for every slot that needs one and re-serve every static invoice, now."""
    _app().worker.submit(app.recipient.refresh)
    return {"refreshing": True}


def _client_id(client_id) -> bytes:
    if not isinstance(client_id, str) or not client_id:
        raise RpcException("client_id: a non-empty string is needed")
    return _utf8("client_id", client_id)


def _utf8(name: str, text: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError:    # a lone surrogate: JSON can carry one, UTF-8 cannot
        raise RpcException(f"{name}: not valid UTF-8", INVALID_PARAMS)


def _refusing(work, code: Optional[int] = None):
    """``work`` with the server's refusal (ServerError) turned into the command's one-line error."""
    def run():
        try:
            return work()
        except ServerError as e:
            raise RpcException(str(e)) if code is None else RpcException(str(e), code)
    return run


def _on_operator_thread(request, work, needs_tally: bool = False) -> None:
    """Answer ``request`` with ``work()`` run on the operator's thread, not on pyln's main thread, which
    must stay free to read lightningd's hooks: on PostgreSQL each datastore read costs the rows after
    its key (seconds at 10 000 clients).  One thread (a daemon: it never holds up the plugin's exit)
    runs the server's operator commands one after another.  Work that ``needs_tally`` (the counts, or
    pages) waits for the count a start may still be making on a thread of its own, then joins the
    queue, so it holds up no other command (a removeclient)."""
    global _operator
    if _operator is None:
        _operator = queue.Queue(OPERATOR_QUEUE)
        threading.Thread(target=_operator_loop, args=(_operator,), name="asyncreceive-operator", daemon=True).start()
    server = _server()
    if needs_tally and not server.tally_ready():
        if not _waiting.acquire(blocking=False):
            raise RpcException(f"{OPERATOR_QUEUE} commands are already waiting for the start-up count; try "
                               "again once asyncreceive-status no longer says counting")

        def after_count():
            server.wait_tally()
            _waiting.release()
            _operator.put((request, work))
        threading.Thread(target=after_count, name="asyncreceive-operator-waits", daemon=True).start()
        return
    try:
        _operator.put_nowait((request, work))
    except queue.Full:
        raise RpcException(f"{OPERATOR_QUEUE} operator commands are already waiting; try again later")


def _operator_loop(q: "queue.Queue") -> None:
    while True:
        request, work = q.get()
        try:
            plugin.answer(request, work)
        except BaseException:     # answering failed (pyln's pipe gone): the next command still runs
            log(f"operator command {getattr(request, 'method', request)} not answered: {traceback.format_exc()}",
                "unusual")


#: operator commands queued (and threads) at most: past that, a clear error
OPERATOR_QUEUE = 64
_operator: Optional["queue.Queue"] = None
_waiting = threading.BoundedSemaphore(OPERATOR_QUEUE)    # commands waiting for the start-up count


@plugin.async_method("asyncserver-addclient")
def addclient(plugin, request, client_id, expiry=None, rotate=False):
    """Enrol {client_id} with this static invoice server; returns the blinded paths it configures to reach
    us (paths_hex is LDK's list encoding). {expiry}: seconds until the paths stop working. Adding an
    enrolled client again returns paths of the same enrolment; {rotate}=true starts a new enrolment (for a
    new device): the old device's paths stop working and its invoices are deleted."""
    if expiry is not None and (not isinstance(expiry, int) or expiry <= 0):
        raise RpcException("expiry: a positive number of seconds")
    if not isinstance(rotate, bool):
        raise RpcException("rotate: true or false")
    cid, server = _client_id(client_id), _server()
    _on_operator_thread(request, _refusing(lambda: server.add_client(cid, expiry, rotate)), needs_tally=True)


def _limit_arg(limit):
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise RpcException(f"limit: a whole number of entries, 1 or more, not {limit!r}", INVALID_PARAMS)
    return limit


@plugin.async_method("asyncserver-listclients")
def listclients(plugin, request, start=None, limit=None):
    """List the clients enrolled with this static invoice server, in client id order: from client {start}
    on (need not be enrolled), at most {limit} of them; next_start names where the next page starts
    (absent at the end)."""
    limit = _limit_arg(limit)
    if start is not None and (not isinstance(start, str) or not start):
        raise RpcException("start: a client_id (a non-empty string), as next_start gives it", INVALID_PARAMS)
    first, server = _utf8("start", start) if start is not None else None, _server()
    _on_operator_thread(request, lambda: server.clients_page(first, limit), needs_tally=True)


@plugin.async_method("asyncserver-removeclient")
def removeclient(plugin, request, client_id):
    """Stop serving {client_id}: delete its static invoices; its paths stop working."""
    cid, server = _client_id(client_id), _server()
    _on_operator_thread(request, _refusing(lambda: server.remove_client(cid)))


@plugin.async_method("asyncserver-listinvoices")
def listinvoices(plugin, request, client_id=None, start=None, limit=None):
    """List the static invoices stored for clients (or for {client_id} only), in (client id, slot) order:
    from {start} ("<client_id>/<slot>", as next_start gives it) on, at most {limit} of them; next_start
    names where the next page starts (absent at the end)."""
    limit = _limit_arg(limit)
    if start is not None and not isinstance(start, str):
        raise RpcException("start: '<client_id>/<slot>', as next_start gives it", INVALID_PARAMS)
    cid, server = _client_id(client_id) if client_id is not None else None, _server()
    if start is not None:
        try:
            invoice_cursor(start)       # a bad one is answered now, not after a start-up count
        except ServerError as e:
            raise RpcException(str(e), INVALID_PARAMS)
    _on_operator_thread(request, _refusing(lambda: server.invoices_page(cid, start, limit), INVALID_PARAMS),
                        needs_tally=True)


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
        probe.transport.send(p, msgtype, data, probe.context() if reply else None, _via_arg(reply_via),
                             may_connect=True)
    except TransportError as e:
        raise RpcException(f"send failed: {e}")
    return {"sent": True, "length": len(data)}


@plugin.method("asyncreceive-dev-received")
def dev_received(plugin, start=None, limit=None):
    """[dev] List probe messages received (the newest 200 are kept), oldest first: from created_index
    {start} on (a poller passes the one after the last it saw), at most {limit} of them."""
    if start is not None and (isinstance(start, bool) or not isinstance(start, int) or start < 0):
        raise RpcException(f"start: a created_index, 0 or more, not {start!r}", INVALID_PARAMS)
    return {"received": _probe().received_since(start or 0, _limit_arg(limit))}


if __name__ == "__main__":
    plugin.run()
