"""asyncreceive/app.py: one table routes every kind of path we hand out to the service that takes it."""

import inspect

from asyncreceive import app
from asyncreceive.crypto.context import Kind


def test_every_kind_of_path_is_routed_once_to_a_method_that_exists():
    parts = {f: inspect.get_annotations(app.App)[f] for f in ("transport", "probe", "server", "recipient",
                                                               "payments", "pay")}
    routed = set(app.CONTEXT_ROUTES)
    # the mailbox kind is the transport's own (it unwraps a relayed message and dispatches the inner one)
    assert routed == set(Kind) - {Kind.MAILBOX}
    for kind, (part, method) in app.CONTEXT_ROUTES.items():
        assert callable(getattr(parts[part], method)), (kind, part, method)


class _Transport:
    def __init__(self):
        self.kinds = {}

    def on_kind(self, kind, handler):
        self.kinds[kind] = handler


class _Server:
    def on_offer_paths_request(self, msg): return ("client", msg)
    def on_serve_static_invoice(self, msg): return ("serve", msg)
    def on_invoice_request(self, msg): return ("invreq", msg)


def test_route_installs_only_the_parts_given():
    t, server = _Transport(), _Server()
    app.route(t, server=server)
    assert set(t.kinds) == {Kind.CLIENT, Kind.SERVE_REPLY, Kind.OFFER}
    assert t.kinds[Kind.OFFER]("m") == ("invreq", "m")
