"""The running plugin's parts, and which of them takes the messages of each kind of path.

plugin.py builds one :class:`App` in ``init``; hooks, notifications and RPC methods reach every part
through it.  :data:`CONTEXT_ROUTES` is the one table from a path's context kind (the kind we wrote, MAC'd, into
each blinded path we hand out) to the service method that takes what arrives on it; :func:`route` installs
it on a transport (tests install it on theirs for the services they build).
"""

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from .crypto.context import Kind
from .shell.probe import Probe
from .shell.transport import Transport
from .shell.worker import Worker
from .paying.service import PayService
from .receiving.service import PaymentsService
from .recipient.service import RecipientService
from .server.service import ServerService

#: context kind -> (part of the App, its method that takes a :class:`~.node.transport.Received`)
CONTEXT_ROUTES: Dict[Kind, Tuple[str, str]] = {
    # static invoice server: a client asks for offer paths; serves us its invoice; a payer's invoice_request
    Kind.CLIENT: ("server", "on_offer_paths_request"),
    Kind.SERVE_REPLY: ("server", "on_serve_static_invoice"),
    Kind.OFFER: ("server", "on_invoice_request"),
    # recipient: our server's answers, and invoice_requests it forwards while we are online
    Kind.OFFER_PATHS_REPLY: ("recipient", "on_offer_paths"),
    Kind.PERSISTED_REPLY: ("recipient", "on_persisted"),
    Kind.FORWARD_INVREQ: ("recipient", "on_forwarded_invoice_request"),
    # getting paid: a payer's held_htlc_available on our static invoice's paths
    Kind.HELD_HTLC: ("payments", "on_held_htlc_available"),
    # paying: answers to our invoice_request / held_htlc_available
    Kind.PAYER_REPLY: ("pay", "on_reply"),
    # asyncreceive-dev-* transport probes
    Kind.PROBE: ("probe", "handle"),
    # Kind.MAILBOX (what our server held for us, relayed) is the transport's own: it unwraps and
    # dispatches the message inside by the inner path's kind.
}


def route(transport: Transport, **parts) -> None:
    """Hand each kind's messages to the named part's method; kinds whose part is not given stay unrouted
    (their messages are dropped as ``no_handler``)."""
    for kind, (part, method) in CONTEXT_ROUTES.items():
        if parts.get(part) is not None:
            transport.on_kind(kind, getattr(parts[part], method))


@dataclass
class App:
    transport: Transport
    probe: Probe
    server: ServerService
    recipient: RecipientService
    payments: PaymentsService
    pay: PayService
    worker: Optional[Worker] = None
    #: the lowest of our log levels lightningd writes (lines below it are not sent)
    log_level: int = 0

    def route(self) -> None:
        route(self.transport, server=self.server, recipient=self.recipient, payments=self.payments,
              pay=self.pay, probe=self.probe)
