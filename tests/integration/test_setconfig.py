"""`lightning-cli setconfig` changes the dynamic options of a running plugin (issue 14, part 3).

Dynamic: asyncreceive-slots, asyncreceive-tick-seconds, asyncreceive-pay-timeout and the asyncserver-*
limits.  lightningd asks the plugin first: a bad value is refused with the plugin's reason and not recorded.
"""

import pytest
from pyln.client import RpcError
from pyln.testing.utils import wait_for

from asyncreceive import __version__

from .test_recipient_server import enrol, ready


def config(node, name):
    return node.rpc.listconfigs(name)["configs"][name]


def test_setconfig_changes_slots_and_limits_at_run_time(node_factory, plugin_opts):
    node = node_factory.get_node(options=plugin_opts)
    assert node.rpc.call("asyncreceive-status")["slots"] == 10
    node.rpc.setconfig("asyncreceive-slots", 4)
    assert node.rpc.call("asyncreceive-status")["slots"] == 4
    assert config(node, "asyncreceive-slots")["value_int"] == 4
    assert config(node, "asyncreceive-slots")["dynamic"] is True
    # a bad value: the plugin's reason, and nothing changes
    with pytest.raises(RpcError, match="asyncreceive-slots must be positive, not 0"):
        node.rpc.setconfig("asyncreceive-slots", 0)
    assert config(node, "asyncreceive-slots")["value_int"] == 4
    assert node.rpc.call("asyncreceive-status")["slots"] == 4
    # a server limit: the next enrolment sees it
    node.rpc.call("asyncserver-addclient", {"client_id": "one"})
    node.rpc.setconfig("asyncserver-max-clients", 1)
    with pytest.raises(RpcError, match=r"client limit reached \(1, option asyncserver-max-clients\)"):
        node.rpc.call("asyncserver-addclient", {"client_id": "two"})
    node.rpc.setconfig("asyncserver-max-clients", 2)
    node.rpc.call("asyncserver-addclient", {"client_id": "two"})
    for name, value in [("asyncreceive-tick-seconds", 5), ("asyncreceive-pay-timeout", 600)]:
        node.rpc.setconfig(name, value)
        assert config(node, name)["value_int"] == value
    # the same plugin process all along: it started (and logged being ready) once
    assert sum(f"asyncreceive {__version__} ready;" in line for line in node.daemon.logs) == 1


def test_more_slots_fill_once_the_server_allows_them(node_factory, plugin_opts):
    """The recipient grows from 10 to 12 slots at run time; its server (max 10 slots per client) refuses
    slots 10 and 11 until its own limit is raised by setconfig, then all 12 are ready and stored."""
    server, recipient = node_factory.line_graph(2, fundchannel=True, opts=plugin_opts)
    enrol(server, recipient)
    wait_for(lambda: len(ready(recipient)) == 10)
    recipient.rpc.setconfig("asyncreceive-slots", 12)
    assert recipient.rpc.call("asyncreceive-status")["slots"] == 12
    server.daemon.wait_for_log("over the limit 10")  # the new slots were requested at once, and refused
    assert len(ready(recipient)) == 10
    server.rpc.setconfig("asyncserver-max-slots", 12)
    recipient.rpc.call("asyncreceive-refresh")
    wait_for(lambda: len(ready(recipient)) == 12)
    assert sorted(o["slot"] for o in ready(recipient)) == list(range(12))
    assert len(server.rpc.call("asyncserver-listinvoices")["invoices"]) == 12
