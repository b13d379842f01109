"""`make bench-scale`: the static invoice server at scale (issue 11), on one real regtest server node.

Steps (``SIZES``, default 0,1000,10000 filler clients; ``make bench-scale SIZES=0,1000`` for a quick run):
the server (lightningd + plugin) has one real client (a recipient node that enrolled and keeps 10
slots over the real protocol) plus N filler clients x 10 slots.  Fillers are written straight into
lightningd's datastore with the project's record encoders (ClientRecord, InvoiceRecord, their keys),
through one JSON-RPC connection with many requests in flight: the protocol path is paced by CLN at 4
onion messages/s per peer, which would take hours.  Each filler invoice is a real signed static
invoice for that client and slot: its offer path is the one the server would issue (context: client,
enrolment, slot; authenticated with the server's context key, read with ``makesecret``), signed with
a per-client key; its payment and held_htlc paths and its forward path are copied from the real
client (so a request to a filler is forwarded to the real recipient, which drops it, as a real online
client's would be; paying a filler's invoice would fail, nothing here pays).

After each fill the server restarts (the plugin's start-up reads everything) and a payer node (our
plugin, dev mode) sends invoice_requests over offer paths of the real client and of filler clients
spread over the key range, each with a reply path, and times the static_invoice arriving back.
Prints one table, asserts nothing.
"""

import hashlib
import itertools
import json
import math
import os
import signal
import socket
import subprocess
import statistics
import time
from multiprocessing import Pool

import pytest
from coincurve import PrivateKey
from pyln.client import RpcError
from pyln.testing.utils import wait_for

from asyncreceive.crypto.context import ContextKey, Kind, PathContext
from asyncreceive.crypto.onion import build_reply_path
from asyncreceive.paying.payer import build_invoice_request
from asyncreceive.recipient.invoice import CHAINS, build_offer, build_static_invoice
from asyncreceive.server.service import OFFER_LIFETIME, ServerService
from asyncreceive.server.store import (TALLY_HEAD_KEY, TALLY_PREFIX, ClientRecord, InvoiceRecord, Tally,
                                       client_key, invoice_key)
from asyncreceive.wire import messages as m
from asyncreceive.wire.bolt12.static_invoice import StaticInvoice
from bench.bench_transport import HAVE_NODES, PLUGIN, plugin_cpu

pytestmark = pytest.mark.skipif(not HAVE_NODES, reason="needs lightningd, bitcoind, bitcoin-cli on PATH")

SIZES = sorted({int(x) for x in os.environ.get("SIZES", "0,1000,10000").split(",") if x.strip()})
SLOTS = 10
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "60"))   # invoice_requests timed per step
PAGE = 100                                                # clients / invoices per page timed
REAL = b"bench-real"
PHANTOM_LABEL, CONTEXT_LABEL = "asyncreceive/phantom/v1", "asyncreceive/context/v1"


# ---- filling ------------------------------------------------------------------------------------
def filler_id(i: int) -> bytes:
    return b"filler-%06d" % i


def _filler_client(i: int, now: int):
    """(key, value) of filler client ``i``'s ClientRecord."""
    return client_key(filler_id(i)), ClientRecord(filler_id(i), now, None, i.to_bytes(8, "big")).encode()


def _filler_invoices(args):
    """(key, value) of filler client ``i``'s SLOTS InvoiceRecords (in a worker)."""
    i, server_id, phantom_id, ctx_secret, template, forward, now = args
    cid, ctx_key = filler_id(i), ContextKey(ctx_secret)
    enrolment = i.to_bytes(8, "big")
    key = PrivateKey.from_int(1_000_003 + i).secret   # the filler's own offer/invoice signing key
    exp = now + OFFER_LIFETIME
    inv_t = StaticInvoice.decode(template)
    out = []
    for slot in range(SLOTS):
        ctx = PathContext(Kind.OFFER, exp, ServerService._fields(cid, enrolment, slot)).encode()
        path = build_reply_path([server_id], phantom_id, ctx_key.path_id(ctx), ctx)
        offer = build_offer(key, [path], exp, "regtest")
        inv = build_static_invoice(offer, key, now, inv_t.paths, inv_t.payinfos, inv_t.message_paths)
        out.append((invoice_key(cid, slot), InvoiceRecord(inv.encode(), forward, now).encode()))
    return out


class Pipelined:
    """lightningd's JSON-RPC over one unix socket connection, up to ``depth`` requests in flight (their
    answers, which echo the value, must fit the socket's buffer: lightningd stops reading while it
    cannot write)."""

    def __init__(self, path: str, depth: int = 16):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)
        self.depth, self.buf, self.next_id, self.pending = depth, b"", 0, 0
        self.dec = json.JSONDecoder()

    def call(self, method: str, params: dict) -> None:
        if self.pending >= self.depth:
            self._read_one()
        self.next_id += 1
        self.sock.sendall(json.dumps({"jsonrpc": "2.0", "id": self.next_id, "method": method,
                                      "params": params}).encode())
        self.pending += 1

    def _read_one(self) -> None:
        while True:
            text = self.buf.decode("utf-8", "ignore").lstrip()
            if text:
                try:
                    obj, end = self.dec.raw_decode(text)
                except ValueError:
                    obj = None
                if obj is not None:
                    self.buf = text[end:].encode()
                    if "error" in obj:
                        raise RuntimeError(f"datastore write failed: {obj['error']}")
                    self.pending -= 1
                    return
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise RuntimeError("lightningd closed the RPC connection")
            self.buf += chunk

    def drain(self) -> None:
        while self.pending:
            self._read_one()
        self.sock.close()


def fill(server, first: int, last: int, template: bytes, forward, tally: Tally = None) -> dict:
    """Write filler clients first..last-1 (records built in 2 worker processes, written through one
    pipelined RPC connection), each also into ``tally`` if given.  Returns timings.

    The clients' records first, then their invoices, each in key order: on PostgreSQL lightningd's
    ``datastore`` looks the key up with ``key >= ?``, which fetches every row after it, so a client's
    record written after the invoices (which sort after every client) would cost all of them."""
    secret = lambda label: bytes.fromhex(server.rpc.call("makesecret", {"string": label})["secret"])  # noqa: E731
    phantom_id = PrivateKey(secret(PHANTOM_LABEL)).public_key.format()
    server_id = bytes.fromhex(server.info["id"])
    now = int(time.time())
    args = [(i, server_id, phantom_id, secret(CONTEXT_LABEL), template, forward, now) for i in range(first, last)]
    rpc = Pipelined(os.path.join(server.daemon.lightning_dir, "regtest", "lightning-rpc"))
    t0 = time.time()
    n = 0
    clients = [[_filler_client(i, now) for i in range(first, last)]]
    with Pool(2) as pool:
        for recs in itertools.chain(clients, pool.imap(_filler_invoices, args, chunksize=50)):
            for key, value in recs:
                rpc.call("datastore", {"key": key, "hex": value.hex(), "mode": "must-create"})
                if tally is not None:
                    tally.stored(key, len(value))
                n += 1
        rpc.drain()
    return {"records": n, "seconds": time.time() - t0}


#: On PostgreSQL a start after a crash counts the stored clients and invoices with a listing per client,
#: and lightningd's `key >= ?` makes each listing fetch every row after its key: O(N^2), 40 s at 1 000
#: clients and hours at 10 000.  A step with more filler clients than this is filled with our plugin
#: not loaded, which then leaves the tally's snapshot, as a clean stop would, and its start after a
#: crash is not run (env CRASH_START_MAX; SQLite always runs it).
CRASH_START_MAX = int(os.environ.get("CRASH_START_MAX", "1000"))


def our_options(server) -> dict:
    """The server's options that lightningd knows only with our plugin loaded (the plugin's own)."""
    return {k: v for k, v in server.daemon.opts.items()
            if k == "plugin" or k.startswith(("asyncserver-", "asyncreceive-"))}


def fill_offline(server, first: int, last: int, template: bytes, forward) -> dict:
    """``fill`` with our plugin not loaded, then the tally's snapshot for its next start, as a clean
    stop leaves it: the one the plugin left at its clean stop here (its real client and earlier
    fillers), with the new fillers added (``Tally``, the plugin's own encoder).  The server is left
    started, with the plugin."""
    server.stop()                       # a clean stop: the plugin leaves its tally's snapshot
    ours = our_options(server)
    for k in ours:
        del server.daemon.opts[k]
    server.start()
    try:
        listed = [(r["key"], bytes.fromhex(r["hex"]))
                  for r in server.rpc.listdatastore(key=TALLY_PREFIX)["datastore"] if "hex" in r]
        tally = Tally()
        tally.restore(listed)           # DecodeError if the plugin left none (it was still counting)
        for key, _ in sorted(listed, key=lambda kv: kv[0] != TALLY_HEAD_KEY):
            server.rpc.deldatastore(key)
        f = fill(server, first, last, template, forward, tally)
        for key, value in tally.snapshot():
            server.rpc.datastore(key=key, hex=value.hex(), mode="must-create")
    finally:
        server.stop()
        server.daemon.opts.update(ours)
    server.start()
    return f


# ---- measuring ----------------------------------------------------------------------------------
def proc_of_plugin(node) -> int:
    ld = node.daemon.proc.pid
    for pid in os.listdir("/proc"):
        try:
            stat = open(f"/proc/{pid}/stat").read()
            cmd = open(f"/proc/{pid}/cmdline", "rb").read()
        except (OSError, ValueError):
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == ld and b"plugin.py" in cmd:
            return int(pid)
    raise RuntimeError("plugin process not found")


def lightningd_cpu(node) -> float:
    """User+system CPU seconds of lightningd and its subdaemons (connectd carries the onion messages),
    the plugins left out."""
    ld, total = node.daemon.proc.pid, 0.0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = open(f"/proc/{pid}/stat").read()
            cmd = open(f"/proc/{pid}/cmdline", "rb").read()
        except (OSError, ValueError):
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(pid) == ld or (int(fields[1]) == ld and b"plugin" not in cmd and b"python" not in cmd):
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def main_thread_cpu(node) -> float:
    """User+system CPU seconds of the plugin's main thread (pyln: reads lightningd's hooks and
    notifications, hands them to the worker); the process's threads share its pid, the main one's id."""
    pid = proc_of_plugin(node)
    fields = open(f"/proc/{pid}/task/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(node) -> float:
    for line in open(f"/proc/{proc_of_plugin(node)}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def db_bytes(node) -> int:
    db = node.db
    if hasattr(db, "conn"):   # PostgreSQL
        with db.conn.cursor() as cur:
            cur.execute("SELECT pg_database_size(current_database())")
            size = cur.fetchone()[0]
        db.conn.rollback()
        return size
    return sum(os.path.getsize(p) for p in (db.path, db.path + "-wal") if os.path.exists(p))


def offer_of(server, cid: bytes, slot: int) -> StaticInvoice:
    rec = server.rpc.listdatastore(key=invoice_key(cid, slot))["datastore"][0]
    return StaticInvoice.decode(InvoiceRecord.decode(bytes.fromhex(rec["hex"])).invoice)


class Payer:
    """A payer node (our plugin in dev mode): sends invoice_requests with a reply path to it and sees
    what comes back (its dev-received list, read from the entry after the last it saw: a poll every
    2 ms that listed all 200 kept entries, bodies in hex, took the 2 cores from the nodes measured)."""

    def __init__(self, node, server):
        self.node, self.server = node, server
        self.key = os.urandom(32)
        self.next = 0     # created_index of the next entry to read

    def new(self) -> list:
        got = self.node.rpc.call("asyncreceive-dev-received", {"start": self.next})["received"]
        if got:
            self.next = got[-1]["created_index"] + 1
        return got

    def request(self, inv: StaticInvoice, amount: int, timeout: float = 10) -> float:
        """Seconds from sending an invoice_request for ``inv``'s offer to ``inv`` arriving back as a
        static_invoice (nan: none came within ``timeout``)."""
        want = hashlib.sha256(inv.encode()).hexdigest()
        self.new()
        offer = inv.offer
        req = build_invoice_request(offer, amount, self.key, CHAINS["regtest"])
        t0 = time.perf_counter()
        self.node.rpc.call("asyncreceive-dev-send", {
            "path": offer.paths[0].encode().hex(), "msgtype": m.INVOICE_REQUEST, "body": req.encode().hex(),
            "reply": True, "reply_via": [self.server.info["id"]]})
        while time.perf_counter() - t0 < timeout:
            if any(r["type"] == m.STATIC_INVOICE and r["sha256"] == want for r in self.new()):
                return time.perf_counter() - t0
            time.sleep(0.002)
        return float("nan")


def timed(fn, n=5) -> float:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def profiler(server, fillers: int):
    """With PYSPY=<py-spy binary>: sample the server's plugin during the timed requests (on-CPU only)
    into $PROFILE_DIR (default /tmp)/bench-scale-profile-<N>.txt (collapsed stacks; threads holding the
    GIL only, i.e. Python on CPU); ``python -m bench.profile_summary <file>`` prints where it went."""
    spy = os.environ.get("PYSPY")
    if not spy:
        return None
    out = os.path.join(os.environ.get("PROFILE_DIR", "/tmp"), f"bench-scale-profile-{fillers}.txt")
    gil = ([] if os.environ.get("PYSPY_ALL") else ["--gil"]) + (["--native"] if os.environ.get("PYSPY_NATIVE") else [])
    return subprocess.Popen([spy, "record", "-p", str(proc_of_plugin(server)), "-f", "raw", "-r", "500",
                             "-o", out, "--nonblocking"] + gil, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def restart(server, recipient, payer, fillers: int, clean: bool) -> tuple:
    """Stop the server (``clean``: lightningd's stop, after which the plugin leaves its tally for the next
    start; else SIGKILL, as a crash: the next start counts) and start it again; (seconds to lightningd
    answering, to a payer's invoice_request answered, to the tally ready: status no longer says
    counting), and the real client's static invoices."""
    if clean:
        server.stop()
    else:
        server.daemon.kill()
    if STAGES:
        server.daemon.env["ASYNCRECEIVE_STAGES_OUT"] = stages_out(fillers)
    t0 = time.time()
    server.start()
    started = time.time() - t0
    payer.node.connect(server)
    recipient.connect(server)
    # the real client's first invoice only, until it is answered: on PostgreSQL each of our reads costs
    # lightningd every row after its key (this one sorts first: all of them, 2.6 s at 10 000 x 10)
    first_offer = offer_of(server, REAL, 0)
    first = float("nan")
    while time.time() - t0 < 120:
        try:
            if not math.isnan(payer.request(first_offer, 1000, timeout=1)):
                first = time.time() - t0
                break
        except RpcError:   # not connected yet
            time.sleep(0.1)
    while server.rpc.call("asyncreceive-status")["static_invoice_server"]["counting"]:   # the tally not ready
        time.sleep(0.05)
    counted = time.time() - t0
    return (started, first, counted), [first_offer] + [offer_of(server, REAL, s) for s in range(1, SLOTS)]


def measure(server, recipient, payer, fillers: int, crash: bool = True) -> dict:
    row = {}
    # start-up, twice: after a crash (the filler records were written behind the plugin's back, so its
    # tally is counted: lightningd is killed, which leaves no snapshot of it), then after a clean stop
    # (the tally read from what the plugin left at shutdown)
    if crash:
        (row["start_rpc"], row["start_first"], row["start_tally"]), real = restart(server, recipient, payer,
                                                                                   fillers, clean=False)
    else:
        row["start_rpc"] = row["start_first"] = row["start_tally"] = None
    (_, row["clean_first"], row["clean_tally"]), real = restart(server, recipient, payer, fillers, clean=True)
    row["rss_start"] = rss_mb(server)
    # targets: the real client's slots and filler clients spread over the key range
    picks = [filler_id(i * fillers // 10) for i in range(10)] if fillers else []
    targets = real + [offer_of(server, cid, i % SLOTS) for i, cid in enumerate(picks)]
    time.sleep(1)
    spy = profiler(server, fillers)
    stages0 = stages_totals(fillers) if STAGES else {}
    cpu0, main0, ld0 = plugin_cpu(server, split=True), main_thread_cpu(server), lightningd_cpu(server)
    lat = []
    for i in range(REQUESTS):
        lat.append(payer.request(targets[i % len(targets)], 1000 + i))
        time.sleep(0.5)   # stay clear of CLN's 4 onion messages/s per peer: the payer gets two per request
        #                   (our static_invoice, and the online recipient's invoice, relayed by the server)
    user, system = (b - a for a, b in zip(cpu0, plugin_cpu(server, split=True)))
    main = main_thread_cpu(server) - main0
    lightningd = lightningd_cpu(server) - ld0
    cpu = user + system
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(60)
    kinds = {"real": [x for i, x in enumerate(lat) if i % len(targets) < SLOTS and x == x],
             "filler": [x for i, x in enumerate(lat) if i % len(targets) >= SLOTS and x == x]}
    row["lat_real"], row["lat_filler"] = (1e3 * statistics.median(v) if v else float("nan")
                                          for v in (kinds["real"], kinds["filler"]))
    got = [x for x in lat if x == x]
    got.sort()
    row["answered"] = f"{len(got)}/{len(lat)}"
    row["lat_median"] = 1e3 * statistics.median(got) if got else float("nan")
    row["lat_p99"] = 1e3 * got[min(len(got) - 1, int(0.99 * len(got)))] if got else float("nan")
    row["cpu_req"] = 1e3 * cpu / max(1, len(got))
    row["cpu_user"] = 1e3 * user / max(1, len(got))
    row["cpu_system"] = 1e3 * system / max(1, len(got))
    row["cpu_main"] = 1e3 * main / max(1, len(got))
    row["cpu_lightningd"] = 1e3 * lightningd / max(1, len(got))
    if STAGES:
        row["stages"] = stages_per_request(fillers, stages0, len(got))
    row["rss"] = rss_mb(server)
    totals = server.rpc.call("asyncreceive-status")["static_invoice_server"]
    row["invoices"] = totals["invoices"]
    row["db"] = db_bytes(server)
    row["value_bytes"] = totals["bytes_stored"] / max(1, totals["invoices"])
    row["listclients_first"] = 1e3 * timed(lambda: server.rpc.call("asyncserver-listclients", {"limit": PAGE}), 1)
    row["listclients"] = 1e3 * timed(lambda: server.rpc.call("asyncserver-listclients", {"limit": PAGE}))
    row["listinvoices"] = 1e3 * timed(lambda: server.rpc.call("asyncserver-listinvoices", {"limit": PAGE}))
    return row


#: STAGES=1: the server's plugin runs through bench/stages_plugin.py, which adds up the CPU of each
#: stage of its hot path; the table then shows them per served request
STAGES = os.environ.get("STAGES", "") not in ("", "0")
STAGES_PLUGIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "stages_plugin.py")


def stages_out(fillers: int) -> str:
    return os.path.join(os.environ.get("PROFILE_DIR", "/tmp"), f"bench-scale-stages-{fillers}.json")


def stages_totals(fillers: int) -> dict:
    """{stage: (CPU s, wall s)} so far, as the stages plugin wrote them."""
    time.sleep(1.5)                      # it writes once a second while they change
    with open(stages_out(fillers)) as f:
        return {name: (cpu, wall) for name, (_, cpu, wall) in json.load(f).items()}


def stages_per_request(fillers: int, before: dict, served: int) -> dict:
    """Each stage's (CPU, wall time) per served request (ms) since ``before``, from the totals the
    stages plugin wrote; for a size, (mean bytes, None)."""
    time.sleep(1.5)                      # it writes once a second while they change
    with open(stages_out(fillers)) as f:
        after = {name: tuple(v) for name, v in json.load(f).items()}

    def per_request(name, calls, cpu, wall):
        if name.endswith("(bytes, mean)"):
            return cpu / max(1, calls), None
        b = before.get(name, (0.0, 0.0))
        return 1e3 * (cpu - b[0]) / max(1, served), 1e3 * (wall - b[1]) / max(1, served)
    return {name: per_request(name, *v) for name, v in after.items()}


def test_bench_scale(node_factory):
    top = max(SIZES)
    opts = {"plugin": PLUGIN, "may_reconnect": True}
    # the server logs at info, as in production (pyln-testing's default is trace); a payer that gets the
    # static invoice and the online recipient's invoice within 250 ms warns of CLN's onion message pacing
    server_opts = dict(opts, **{"asyncserver-max-clients": top + 10, "log-level": "info", "allow_warning": True})
    if STAGES:
        server_opts["plugin"] = STAGES_PLUGIN
    server, recipient = node_factory.line_graph(2, fundchannel=True, opts=[server_opts, opts])
    payer_node = node_factory.get_node(options={"plugin": PLUGIN, "asyncreceive-dev": None}, may_reconnect=True)
    payer_node.connect(server)
    payer = Payer(payer_node, server)
    r = server.rpc.call("asyncserver-addclient", {"client_id": REAL.decode()})
    recipient.rpc.call("asyncreceive-setserver", {"paths": r["paths_hex"]})
    wait_for(lambda: len(recipient.rpc.call("asyncreceive-listoffers", {"status": "ready"})["offers"]) == SLOTS,
             timeout=120)
    rec = InvoiceRecord.decode(bytes.fromhex(
        server.rpc.listdatastore(key=invoice_key(REAL, 0))["datastore"][0]["hex"]))
    db = "PostgreSQL" if hasattr(server.db, "conn") else "SQLite"
    print(f"\nBENCH-SCALE lightningd {server.rpc.getinfo()['version']}, {db}; 1 real client enrolled over the "
          f"protocol + N filler clients x {SLOTS} slots written straight into the datastore (the protocol "
          f"is paced by CLN at 4 onion messages/s per peer) with the plugin's record encoders")
    rows, filled, base_db = {}, 0, None
    for n in sorted(SIZES):
        crash = db == "SQLite" or n <= CRASH_START_MAX
        if n > filled:
            f = (fill if crash else fill_offline)(server, filled, n, rec.invoice, rec.forward_path)
            print(f"BENCH-SCALE fill {filled}..{n}: {f['records']} records in {f['seconds']:.1f} s "
                  f"({f['records'] / f['seconds']:.0f} records/s, signing included)"
                  + ("" if crash else f"; with our plugin not loaded, then the tally's snapshot as a clean stop "
                     f"leaves it, and no start after a crash: on {db} it counts in O(N^2) (CRASH_START_MAX)"))
            filled = n
        rows[n] = measure(server, recipient, payer, n, crash)
        if base_db is None:
            base_db = (rows[n]["db"], rows[n]["invoices"])
        added = rows[n]["invoices"] - base_db[1]
        rows[n]["db_per_inv"] = (rows[n]["db"] - base_db[0]) / added if added else float("nan")
    print_table(rows, db)


LINES = [
    ("stored invoices", "invoices", "{:.0f}"),
    ("invoice_requests answered", "answered", "{}"),
    ("latency invoice_request->static_invoice, median (ms)", "lat_median", "{:.1f}"),
    ("latency, p99 (ms)", "lat_p99", "{:.1f}"),
    ("  median, the real client's invoices (ms)", "lat_real", "{:.1f}"),
    ("  median, filler clients' invoices (ms)", "lat_filler", "{:.1f}"),
    ("plugin CPU per served request (ms)", "cpu_req", "{:.2f}"),
    ("  of it in user mode (ms)", "cpu_user", "{:.2f}"),
    ("  of it in the kernel (ms)", "cpu_system", "{:.2f}"),
    ("  of it on pyln's main thread (ms)", "cpu_main", "{:.2f}"),
    ("lightningd + subdaemons CPU per served request (ms)", "cpu_lightningd", "{:.2f}"),
    ("plugin RSS after start-up (MB)", "rss_start", "{:.1f}"),
    ("plugin RSS after the requests (MB)", "rss", "{:.1f}"),
    ("database size (MB)", "db", "{:.2f}"),
    ("database bytes per added invoice (incl. client)", "db_per_inv", "{:.0f}"),
    ("datastore value bytes per invoice", "value_bytes", "{:.0f}"),
    ("start-up after a crash: lightningd+plugin start (s)", "start_rpc", "{:.2f}"),
    ("start-up after a crash: to first answer (s)", "start_first", "{:.2f}"),
    ("start-up after a crash: to all counted (status: counting false) (s)", "start_tally", "{:.2f}"),
    ("start-up after a clean stop: to first answer (s)", "clean_first", "{:.2f}"),
    ("start-up after a clean stop: to the tally read (s)", "clean_tally", "{:.2f}"),
    (f"asyncserver-listclients limit={PAGE}, first view (ms)", "listclients_first", "{:.1f}"),
    (f"asyncserver-listclients limit={PAGE}, again (ms)", "listclients", "{:.1f}"),
    (f"asyncserver-listinvoices limit={PAGE} (ms)", "listinvoices", "{:.1f}"),
]


def print_table(rows: dict, db: str) -> None:
    sizes = sorted(rows)
    print(f"BENCH-SCALE {'N clients (' + db + ')':<52}" + "".join(f"{n:>12}" for n in sizes))
    for label, key, fmt in LINES:
        vals = [rows[n][key] / (1 << 20) if key == "db" else rows[n][key] for n in sizes]
        print(f"BENCH-SCALE {label:<52}" + "".join(f"{'not run' if v is None else fmt.format(v):>12}" for v in vals))
    if STAGES:
        print("BENCH-SCALE plugin CPU / wall time per served request by stage (ms; thread CPU; a stage includes those below it):")
        for name in rows[sizes[0]]["stages"]:
            cells = []
            for n in sizes:
                cpu, wall = rows[n]["stages"].get(name, (0.0, None))
                cells.append(f"{cpu:>10.0f}" if wall is None else f"{cpu:>6.2f} /{wall:>6.2f}")
            print(f"BENCH-SCALE   {name:<66}" + "".join(f"{c:>16}" for c in cells))
