#!/usr/bin/env python3
"""The plugin, with the thread CPU time of each stage of the server's hot path added up
(``make bench-scale STAGES=1`` runs the server's plugin through this file).

Each stage is one function, timed inclusively (a stage's time holds the stages it calls) with
``time.thread_time`` (the CPU of the calling thread: user and kernel, no waiting); the totals go to
``$ASYNCRECEIVE_STAGES_OUT`` as JSON ({stage: [calls, CPU seconds, wall seconds]}) once a second while
they change.  Benchmark tooling only: nothing in the package knows of it.
"""

import json
import os
import runpy
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from pyln.client import plugin as pyln_plugin  # noqa: E402

from asyncreceive.server.service import ServerService  # noqa: E402
from asyncreceive.shell import lightningd, transport  # noqa: E402
from asyncreceive.shell.rpc import KeptConnectionRpc  # noqa: E402
from asyncreceive.wire.bolt12.invoice_request import InvoiceRequest  # noqa: E402
from asyncreceive.crypto import onion  # noqa: E402

#: (stage name as printed, owner, attribute): in the order the bench prints them
STAGES = [
    ("main thread: pyln reads a message from lightningd and hands it on", pyln_plugin.Plugin, "_multi_dispatch"),
    ("worker: one onion message, all of it", transport.Transport, "handle_forward_fail"),
    ("  peel the phantom layer, authenticate the path context", transport.Transport, "_open"),
    ("    of which the onion layer (ECDH, HMAC, ChaCha20)", onion, "peel_phantom"),
    ("  the server's answer (decode, look up, two sends)", ServerService, "on_invoice_request"),
    ("    decode the invoice_request", InvoiceRequest, "decode"),
    ("    route the two sends (a decryptencrypteddata when uncached)", transport.Transport, "_attempts"),
    ("    hand the two onions to lightningd", lightningd.Lightningd, "send_onion"),
    ("      of which createonion (lightningd builds them)", lightningd.Lightningd, "createonion"),
    ("      of which injectonionmessage", KeptConnectionRpc, "call_hex"),
    ("every JSON-RPC call to lightningd", KeptConnectionRpc, "_call"),
]

totals = {name: [0, 0.0, 0.0] for name, _, _ in STAGES}
changed = threading.Event()


def timed(name, fn):
    acc = totals[name]

    def run(*args, **kwargs):
        cpu, wall = time.thread_time(), time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            acc[0] += 1
            acc[1] += time.thread_time() - cpu
            acc[2] += time.perf_counter() - wall
            changed.set()
    return run


def write_out(path):
    while True:
        changed.wait()
        time.sleep(1)
        changed.clear()
        with open(path + ".tmp", "w") as f:
            json.dump(totals, f)
        os.replace(path + ".tmp", path)


for name, owner, attr in STAGES:
    setattr(owner, attr, timed(name, getattr(owner, attr)))

#: the size of the onion messages the worker handled (the outgoing onion of onionmessage_forward_fail)
SIZE = "onion message received (bytes, mean)"
totals[SIZE] = [0, 0.0, 0.0]
_handle = transport.Transport.handle_forward_fail


def handle_and_count(self, notification):
    if isinstance(notification, dict) and isinstance(notification.get("outgoing"), str):
        totals[SIZE][0] += 1
        totals[SIZE][1] += len(notification["outgoing"]) / 2
    return _handle(self, notification)


transport.Transport.handle_forward_fail = handle_and_count
transport.peel_phantom = onion.peel_phantom     # imported by name there
if os.environ.get("ASYNCRECEIVE_STAGES_OUT"):
    threading.Thread(target=write_out, args=(os.environ["ASYNCRECEIVE_STAGES_OUT"],), daemon=True).start()
sys.argv[0] = os.path.join(ROOT, "plugin.py")
runpy.run_path(sys.argv[0], run_name="__main__")
