"""Dynamic options: `lightning-cli setconfig` reaches the running services (plugin.py's APPLY table).

lightningd hands plugins setconfig's value as a string; plugin.py checks it (a bad value is refused with
the reason) and gives it to the worker, the recipient's cache, the server's limits or the payer.
"""

import importlib.util
from pathlib import Path

import pytest
from pyln.client import RpcException

from asyncreceive.shell.worker import Worker
from asyncreceive.server.service import ServerConfig, ServerError

from .test_protocol import World

PLUGIN = Path(__file__).resolve().parents[2] / "plugin.py"
DYNAMIC = ["asyncreceive-slots", "asyncreceive-tick-seconds", "asyncreceive-pay-timeout",
           "asyncserver-max-clients", "asyncserver-max-slots", "asyncserver-max-invoice-bytes",
           "asyncserver-max-held", "asyncserver-max-held-bytes", "asyncserver-hold-seconds"]


@pytest.fixture
def plugin_module():
    spec = importlib.util.spec_from_file_location("asyncreceive_plugin_under_test", PLUGIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Pay:
    timeout = 86400


def wire(module, world):
    """The services as plugin.py's init leaves them (the worker is not started: submitted work waits)."""
    module.app = module.App(world.rt, None, world.server, world.recipient, None, Pay(),
                            worker=Worker(lambda msg, level="info": None, tick_seconds=60))
    return module.app


def test_the_run_time_options_are_declared_dynamic(plugin_module):
    options = plugin_module.plugin.options
    assert sorted(n for n, o in options.items() if o.dynamic) == sorted(DYNAMIC)
    assert sorted(plugin_module.APPLY) == sorted(DYNAMIC)


def test_setconfig_reaches_each_running_service(plugin_module):
    state = wire(plugin_module, World())
    set_ = plugin_module._on_setconfig
    set_(None, "asyncreceive-slots", "4")
    assert len(state.recipient.cache) == 4 and state.recipient.n_slots == 4
    set_(None, "asyncreceive-tick-seconds", "5")
    assert state.worker.tick_seconds == 5
    set_(None, "asyncreceive-pay-timeout", "600")
    assert state.pay.timeout == 600
    for name, value in [("asyncserver-max-clients", 7), ("asyncserver-max-slots", 3),
                        ("asyncserver-max-invoice-bytes", 4000), ("asyncserver-max-held", 0),
                        ("asyncserver-max-held-bytes", 5000), ("asyncserver-hold-seconds", 120)]:
        set_(None, name, str(value))
    assert state.server.config == ServerConfig(max_clients=7, max_slots=3, max_invoice_bytes=4000, max_held=0,
                                                  hold_seconds=120, max_held_bytes=5000)


@pytest.mark.parametrize("name, value, reason", [
    ("asyncreceive-slots", "0", "asyncreceive-slots must be positive, not 0"),
    ("asyncreceive-tick-seconds", "-5", "asyncreceive-tick-seconds must be positive, not -5"),
    ("asyncserver-max-held", "-1", "asyncserver-max-held must be zero or more, not -1"),
    ("asyncserver-max-clients", "many", "asyncserver-max-clients must be an integer, not 'many'"),
    ("asyncreceive-tick-seconds", str(10 ** 10), "asyncreceive-tick-seconds must be at most 86400"),
    ("asyncreceive-slots", "5000", "asyncreceive-slots must be at most 1000"),
])
def test_a_bad_value_is_refused_with_the_reason_and_changes_nothing(plugin_module, name, value, reason):
    state = wire(plugin_module, World())
    before = (len(state.recipient.cache), state.worker.tick_seconds, state.server.config)
    with pytest.raises(RpcException, match=reason):
        plugin_module._on_setconfig(None, name, value)
    assert (len(state.recipient.cache), state.worker.tick_seconds, state.server.config) == before


def test_a_server_limit_takes_effect_on_the_next_request(plugin_module):
    """asyncserver-max-clients lowered at run time: the next enrolment is refused."""
    state = wire(plugin_module, World())
    state.server.add_client(b"one")
    plugin_module._on_setconfig(None, "asyncserver-max-clients", "1")
    with pytest.raises(ServerError, match="client limit reached"):
        state.server.add_client(b"two")
    plugin_module._on_setconfig(None, "asyncserver-max-clients", "2")
    state.server.add_client(b"two")


def test_more_slots_are_requested_and_fewer_keep_the_payable_offers():
    w = World(slots=2)
    w.enrol()
    for _ in range(3):
        w.recipient.tick(start=True)
        w.now += 1
    assert w.statuses()["ready"] == 2
    w.recipient.set_slots(4)
    assert w.statuses()["empty"] == 2
    for _ in range(3):
        w.recipient.tick()
        w.now += 1
    assert w.statuses()["ready"] == 4
    assert len(w.server.list_invoices(b"phone")) == 4
    w.recipient.set_slots(1)  # payable offers are kept until they expire, as at a restart
    assert w.statuses()["ready"] == 4 and w.recipient.n_slots == 1
