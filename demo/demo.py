"""`make demo`: BOLT 12 async receive with asyncreceive, step by step, on regtest.

Three lightningd nodes, each running the plugin, on one line of announced channels:

    payer ---- server ---- recipient
               (static invoice server: keeps the recipient's static invoices, holds onion messages for it)

1. the recipient enrols at the server: `asyncserver-addclient` on the server, `asyncreceive-setserver`
   on the recipient with the paths it returned;
2. the recipient's async offers become ready (`asyncreceive-listoffers ready`), and it hands one out
   (`asyncreceive-getoffer`);
3. the recipient goes offline (`lightning-cli stop`);
4. the payer pays that offer with `asyncreceive-pay`: it gets the static invoice from the server and asks
   the recipient to release the payment; the server holds that message in its mailbox
   (`asyncserver-listclients`: `held_messages`);
5. the recipient comes back, gets the held message, releases the payment and is paid; both sides'
   records (`asyncreceive-listpays`, `asyncreceive-listpayments`) show the same payment.

Everything runs in a fresh temporary directory and is removed at the end (also on Ctrl-C or failure),
unless --keep is given: then the nodes stay up and the commands to reach and stop them are printed.
Only the plugin's real RPCs are used, through pyln.client. Run it with `make demo [KEEP=1]`.
"""

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PLUGIN = Path(__file__).resolve().parents[1] / "plugin.py"
NEEDED = ("bitcoind", "bitcoin-cli", "lightningd", "lightning-cli")
AMOUNT_MSAT = 50_000
SLOTS = 10  # asyncreceive-slots: async offers the recipient keeps ready (the default)
TTY = sys.stdout.isatty()


class DemoError(Exception):
    """A step failed: one line saying what."""


# ---- what a step looks like on screen: a live line, then its time ---------------------------------------

class Step:
    """One step of the demo: `with Step("2.", "...") as s: ... s.show("ready 3/10")` keeps one line up to
    date on a terminal (elsewhere each new status is printed once) and ends it with the time it took."""

    done = []  # (number and title, seconds) of every finished step, for the summary table

    def __init__(self, number: str, title: str):
        self.title, self.status, self.t0 = f"{number:>3} {title}", None, time.monotonic()

    def __enter__(self):
        self.show("")
        return self

    def line(self, status: str) -> str:
        return f"{self.title:<52} {time.monotonic() - self.t0:5.1f} s  {status}"

    def show(self, status: str) -> None:
        if TTY:
            width = shutil.get_terminal_size().columns - 1
            print("\r\033[K" + self.line(status)[:width], end="", flush=True)
        elif status != self.status:
            print(self.line(status), flush=True)
        self.status = status

    def note(self, text: str) -> None:
        """A line under the step: an RPC and what it answered."""
        print(("\r\033[K" if TTY else "") + f"      {text}", flush=True)
        if TTY:
            self.show(self.status)

    def __exit__(self, kind, value, tb):
        took = time.monotonic() - self.t0
        if kind is None:
            Step.done.append((self.title, took))
        mark = "ok" if kind is None else "interrupted" if kind is KeyboardInterrupt else "FAILED"
        print(("\r\033[K" if TTY else "") + self.line(mark), flush=True)

    def wait(self, check, timeout: float, what: str):
        """Poll `check()` -> (result or None, status text) until it gives a result; DemoError after timeout."""
        end = time.monotonic() + timeout
        while True:
            result, status = check()
            self.show(status)
            if result is not None:
                return result
            if time.monotonic() > end:
                raise DemoError(f"{what}: still not done after {timeout:.0f} s ({status})")
            time.sleep(0.2)


# ---- the processes: bitcoind and three lightningd ----------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Bitcoind:
    def __init__(self, base: Path):
        self.dir, self.rpcport = base / "bitcoind", free_port()
        self.dir.mkdir()
        (self.dir / "bitcoin.conf").write_text(
            "regtest=1\nserver=1\nlisten=0\nfallbackfee=0.00001\n"
            f"[regtest]\nrpcport={self.rpcport}\nrpcuser=demo\nrpcpassword=demo\n")
        self.proc = subprocess.Popen(["bitcoind", f"-datadir={self.dir}"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)

    def cli_command(self) -> str:
        return f"bitcoin-cli -datadir={self.dir}"

    def cli(self, *args: str) -> str:
        r = subprocess.run(["bitcoin-cli", f"-datadir={self.dir}", *map(str, args)], capture_output=True,
                           text=True)
        if r.returncode:
            raise DemoError(f"bitcoin-cli {' '.join(map(str, args))}: {r.stderr.strip()}")
        return r.stdout.strip()

    def mine(self, blocks: int) -> None:
        self.cli("generatetoaddress", blocks, self.address)

    def start(self) -> None:
        deadline = time.monotonic() + 30
        while subprocess.run(["bitcoin-cli", f"-datadir={self.dir}", "-rpcwait", "-rpcwaittimeout=1",
                              "getblockchaininfo"], capture_output=True).returncode:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise DemoError("bitcoind did not start")
        self.cli("createwallet", "demo")
        self.address = self.cli("getnewaddress")
        self.mine(101)  # coinbase outputs can be spent after 100 blocks


class Node:
    """One lightningd with the plugin; its options are in <lightning-dir>/config, so that
    `lightning-cli --lightning-dir=<dir>` finds it."""

    def __init__(self, base: Path, name: str, bitcoind: Bitcoind):
        self.name, self.dir, self.port, self.proc, self.rpc = name, base / name, free_port(), None, None
        self.dir.mkdir()
        (self.dir / "config").write_text("\n".join([
            "network=regtest",
            "developer",                  # for the two dev- options below (regtest only)
            "dev-fast-gossip",            # gossip in seconds, not minutes
            "dev-bitcoind-poll=1",        # see new blocks within a second
            f"alias={name}",
            f"addr=127.0.0.1:{self.port}",
            f"bitcoin-datadir={bitcoind.dir}",
            f"bitcoin-rpcport={bitcoind.rpcport}",
            "bitcoin-rpcuser=demo",
            "bitcoin-rpcpassword=demo",
            f"log-file={self.dir / 'log'}",
            f"plugin={PLUGIN}",
            "",
        ]))

    def cli_command(self) -> str:
        return f"lightning-cli --lightning-dir={self.dir}"

    def start(self) -> None:
        from pyln.client import LightningRpc, RpcError
        # lightningd starts plugin.py with the `python3` on PATH: ours, which has requirements.txt
        env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
        with open(self.dir / "stderr", "ab") as err:  # a file, not a pipe: with KEEP=1 lightningd outlives us
            self.proc = subprocess.Popen(["lightningd", f"--lightning-dir={self.dir}"], env=env,
                                         stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        self.rpc = LightningRpc(str(self.dir / "regtest" / "lightning-rpc"))
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                err = (self.dir / "stderr").read_text(errors="replace").strip().splitlines()
                raise DemoError(f"{self.name}: lightningd exited: {err[-1] if err else 'see its log'}")
            try:
                self.info = self.rpc.getinfo()
                self.rpc.call("asyncreceive-status")  # the plugin is up too
                return
            except RpcError as e:  # lightningd runs, but without the plugin's methods
                raise DemoError(f"{self.name}: the asyncreceive plugin is not running ({e.error.get('message')}); "
                                f"is {PLUGIN} executable, and does the python3 first on PATH have "
                                "requirements.txt (`make install`)?")
            except OSError:  # not listening yet
                if time.monotonic() > deadline:
                    raise DemoError(f"{self.name}: lightningd did not answer within 30 s")
                time.sleep(0.2)

    def stop(self) -> None:
        """`lightning-cli stop`, and wait until the process is gone."""
        self.rpc.stop()
        self.proc.wait(timeout=30)
        self.proc = None

    def call(self, method: str, params: dict = None):
        return self.rpc.call(method, params or {})


def shut_down(procs, gentle: bool) -> None:
    """Stop what we started: RPC `stop` first when `gentle`, then SIGTERM, then SIGKILL of the whole
    process group (lightningd's subdaemons and plugins)."""
    for proc, stop in procs:
        if proc is None or proc.poll() is not None:
            continue
        if gentle:
            try:
                stop()
                proc.wait(timeout=15)
                continue
            except Exception:
                pass
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=wait)
                break
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue


# ---- the demo -------------------------------------------------------------------------------------------

def open_channels(bitcoind: Bitcoind, payer: Node, server: Node, recipient: Node) -> None:
    """payer -> server -> recipient, 1 000 000 sat each, announced (6 confirmations) and gossiped."""
    with Step("", "open and announce the channels") as s:
        for node in (payer, server):
            bitcoind.cli("sendtoaddress", node.rpc.newaddr("p2tr")["p2tr"], 0.1)
        bitcoind.mine(1)
        s.wait(lambda: (True if all(n.rpc.listfunds()["outputs"] for n in (payer, server)) else None,
                        "funding the wallets"), 30, "wallets funded")
        for a, b in ((payer, server), (server, recipient)):
            a.rpc.connect(b.info["id"], "127.0.0.1", b.port)
            a.rpc.fundchannel(b.info["id"], 1_000_000, announce=True)
        bitcoind.mine(6)  # channels are announced after 6 confirmations

        def gossiped():
            n = len(payer.rpc.listchannels()["channels"])
            return (True if n == 4 else None), f"payer knows {n}/4 channel directions"
        s.wait(gossiped, 60, "channel announcements reaching the payer")


def enrol(server: Node, recipient: Node) -> None:
    with Step("1.", "recipient enrols at the server") as s:
        r = server.call("asyncserver-addclient", {"client_id": "recipient"})
        s.note(f"server:    asyncserver-addclient recipient  -> paths_hex {r['paths_hex'][:24]}… "
               f"({len(r['paths_hex']) // 2} bytes)")
        recipient.call("asyncreceive-setserver", {"paths": r["paths_hex"]})
        s.note("recipient: asyncreceive-setserver <paths_hex>")


def offers_ready(recipient: Node) -> str:
    with Step("2.", "recipient's async offers become ready") as s:
        def ready():
            offers = recipient.call("asyncreceive-listoffers")["offers"]
            n = sum(o["status"] == "ready" for o in offers)
            return (True if offers and n == len(offers) else None), f"ready {n}/{SLOTS} ({len(offers) - n} pending)"
        s.wait(ready, 60, "async offers ready")
        offer = recipient.call("asyncreceive-getoffer")["offer"]
        s.note(f"recipient: asyncreceive-getoffer  -> {offer[:40]}… (handed to the payer)")
        return offer


def go_offline(server: Node, recipient: Node) -> None:
    with Step("3.", "recipient goes offline") as s:
        recipient.stop()
        s.note("recipient: lightning-cli stop  (lightningd has exited)")
        s.wait(lambda: (None if server.rpc.listpeers(recipient.info["id"])["peers"][0]["connected"] else True,
                        "server still sees it connected"), 10, "the server noticing the recipient left")
        s.note("server:    listpeers -> recipient not connected")


def pay_offline(payer: Node, server: Node, offer: str) -> str:
    with Step("4.", "payer pays the offer; it waits, server holds") as s:
        r = payer.call("asyncreceive-pay", {"offer": offer, "amount_msat": AMOUNT_MSAT,
                                            "payer_note": "paid while you were out"})
        s.note(f"payer:     asyncreceive-pay <offer> {AMOUNT_MSAT}  -> payment_id {r['payment_id'][:16]}…")

        def waiting_and_held():
            p = payer.call("asyncreceive-listpays")["pays"][-1]
            held = server.call("asyncserver-listclients")["clients"][0]["held_messages"]
            asked = "release" in p["step"] and p["status"] == "waiting_release"
            return (p if asked and held else None), f"{p['status']}; server holds {held} message(s)"
        p = s.wait(waiting_and_held, 60, "payment waiting for the offline recipient")
        s.note(f"payer:     asyncreceive-listpays  -> {p['status']}: {p['step']}")
        s.note("server:    asyncserver-listclients -> held_messages "
               f"{server.call('asyncserver-listclients')['clients'][0]['held_messages']}")
        return r["payment_id"]


def come_back_and_get_paid(payer: Node, recipient: Node, payment_id: str):
    with Step("5.", "recipient comes back; the payment completes") as s:
        recipient.start()
        s.note("recipient: lightningd started again; it reconnects to the server")

        def complete():
            p = next(x for x in payer.call("asyncreceive-listpays")["pays"] if x["payment_id"] == payment_id)
            if p["status"] in ("failed", "cancelled"):
                raise DemoError(f"payment {p['status']}: {p.get('error') or p['step']}")
            return (p if p["status"] == "complete" else None), f"{p['status']}: {p['step']}"
        sent = s.wait(complete, 60, "payment completing")
        got = s.wait(lambda: (next((x for x in recipient.call("asyncreceive-listpayments")["payments"]
                                    if x["payment_hash"] == sent["payment_hash"]), None), "recipient recording"),
                     10, "the recipient's record of the payment")
        relayed = recipient.call("asyncreceive-status")["messages"].get("relayed", {})
        s.note(f"recipient: asyncreceive-status -> relayed to it by the server: {relayed}")
    print("\n   payer's record (asyncreceive-listpays) and the recipient's (asyncreceive-listpayments):")
    for label, key_sent, key_got in (("payment_hash", "payment_hash", "payment_hash"),
                                     ("preimage", "payment_preimage", "preimage"),
                                     ("amount_msat", "amount_msat", "amount_msat")):
        same = "same" if sent[key_sent] == got[key_got] else "sent + blinded-path fee rounding"
        print(f"   {label:<13} payer     {sent[key_sent]}\n   {'':<13} recipient {got[key_got]}   ({same})")
    print(f"   {'route':<13} {sent['route']} (the static invoice's payment path); payer_note "
          f"{got['payer_note']!r}")
    if sent["payment_hash"] != got["payment_hash"] or sent["payment_preimage"] != got["preimage"]:
        raise DemoError("the payer's and the recipient's records differ")


def summary(total: float) -> None:
    print("\n   step                                                  time")
    for title, took in Step.done:
        print(f"   {title:<52} {took:5.1f} s")
    print(f"   {'    total':<52} {total:5.1f} s")


def keep_instructions(base: Path, bitcoind: Bitcoind, nodes) -> None:
    print("\nThe nodes keep running (KEEP=1). Poke them with:")
    for n in nodes:
        print(f"   {n.cli_command()} asyncreceive-status        # {n.name}")
    print(f"   {bitcoind.cli_command()} getblockchaininfo")
    print("Stop them and remove everything with:\n"
          f"   for n in {' '.join(n.name for n in nodes)}; do lightning-cli --lightning-dir={base}/$n stop; done; "
          f"{bitcoind.cli_command()} stop; sleep 2; rm -rf {base}")


def missing_prerequisites() -> str:
    missing = [b for b in NEEDED if shutil.which(b) is None]
    if missing:
        return (f"make demo needs {', '.join(missing)} on PATH (lightningd >= v24.11, bitcoind); "
                "see README.md, 'Install'")
    try:
        import pyln.client  # noqa: F401
    except ImportError:
        return "make demo needs pyln-client (requirements.txt): run `make install` first"
    return ""


def main(argv=None) -> int:
    args = _args(argv)
    problem = missing_prerequisites()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    from pyln.client import RpcError
    # a Ctrl-C (SIGINT) or a SIGTERM both end up in the `finally` below (SIGINT set too: a process started
    # in the background inherits it ignored, and Python then leaves it so)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    base = Path(tempfile.mkdtemp(prefix="asyncreceive-demo-"))
    print(f"asyncreceive demo in {base}", flush=True)
    bitcoind, nodes, ok, t0 = None, [], False, time.monotonic()
    try:
        with Step("", "start bitcoind and 3 lightningd with the plugin") as s:
            bitcoind = Bitcoind(base)
            bitcoind.start()
            nodes = [Node(base, name, bitcoind) for name in ("payer", "server", "recipient")]
            for n in nodes:
                s.show(f"starting {n.name}")
                n.start()
        payer, server, recipient = nodes
        open_channels(bitcoind, payer, server, recipient)
        enrol(server, recipient)
        offer = offers_ready(recipient)
        go_offline(server, recipient)
        payment_id = pay_offline(payer, server, offer)
        come_back_and_get_paid(payer, recipient, payment_id)
        summary(time.monotonic() - t0)
        ok = True
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything", file=sys.stderr)
        return 130
    except (DemoError, RpcError) as e:
        print(f"\ndemo failed: {e}", file=sys.stderr)
        print_log_tails(nodes)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave things half stopped
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if ok and args.keep:
            keep_instructions(base, bitcoind, nodes)
        else:
            procs = [(n.proc, n.rpc.stop if n.rpc else None) for n in nodes]
            if bitcoind is not None:
                procs.append((bitcoind.proc, lambda: bitcoind.cli("stop")))
            shut_down(procs, gentle=ok)
            shutil.rmtree(base, ignore_errors=True)
            print(f"stopped the nodes and removed {base}", flush=True)
    return 0


def print_log_tails(nodes, lines: int = 6) -> None:
    for n in nodes:
        log = n.dir / "log"
        if log.exists():
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            if tail:
                print(f"--- last lines of {n.name}'s log:", *tail, sep="\n   ",
                      file=sys.stderr)


def _args(argv):
    p = argparse.ArgumentParser(description="BOLT 12 async receive with asyncreceive, step by step, on regtest")
    p.add_argument("--keep", action="store_true", help="leave the nodes running and print how to reach them")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
