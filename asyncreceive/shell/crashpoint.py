"""[dev] Hard crashes at named steps, for the crash tests (tests/integration/test_crash.py).

``crashpoint(name)`` is called right after a step has written its state and before its effect goes
out.  When ``name`` is the point set with :func:`set_crash_at` (the ``asyncreceive-dev-crash-at``
option), it logs one line and kills lightningd (our parent) and then this process with SIGKILL: no
clean shutdown, nothing flushed, exactly as a power cut at that step.  Unset (the default) it does
nothing.

Points: ``recipient-offer-built`` (a slot written with its new offer, before its static invoice is
served), ``server-invoice-stored`` (a client's static invoice stored, before static_invoice_persisted),
``recipient-payment-recorded`` (an async payment recorded, before its HTLC is resolved),
``payer-sending`` (a payment moved to *sending*, on a release or on the payee's own invoice, before its
HTLC is sent or lightningd's ``pay`` runs) and ``payer-onion-sent``
(``sendonion`` accepted, before ``waitsendpay`` returns).
"""

import os
import signal
import time
from typing import Callable, Optional

POINTS = ("recipient-offer-built", "server-invoice-stored", "recipient-payment-recorded", "payer-sending",
          "payer-onion-sent")
#: time for lightningd to read our log line before it dies
LOG_GRACE = 0.1

_crash_at: Optional[str] = None
_log: Callable[[str, str], None] = lambda msg, level: None


def set_crash_at(name: Optional[str], log: Callable[[str, str], None], dev: bool) -> None:
    """Arm the crash point ``name`` (None or "" disarms); raises ValueError for an unknown name, or when
    ``dev`` (the ``asyncreceive-dev`` option) is off."""
    global _crash_at, _log
    if name and name not in POINTS:
        raise ValueError(f"asyncreceive-dev-crash-at: unknown crash point {name!r}; one of {', '.join(POINTS)}")
    if name and not dev:
        raise ValueError("asyncreceive-dev-crash-at needs --asyncreceive-dev")
    _crash_at, _log = name or None, log


def _parent_is_lightningd(ppid: int) -> bool:
    try:
        with open(f"/proc/{ppid}/comm") as f:
            return f.read().strip() == "lightningd"
    except OSError:
        return False


def crashpoint(name: str) -> None:
    if _crash_at is None or name != _crash_at:
        return
    ppid = os.getppid()
    if not _parent_is_lightningd(ppid):
        _log(f"crashpoint {name}: parent {ppid} is not lightningd; not killing", "unusual")
        return
    _log(f"crashpoint {name}: killing lightningd", "info")
    time.sleep(LOG_GRACE)
    os.kill(ppid, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)
