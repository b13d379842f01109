"""`make demo` (demo/demo.py) run as a user runs it: a subprocess, its output, its exit code, and nothing
left behind afterwards (no process, no directory), also with KEEP=1 and its printed stop command, and on
Ctrl-C."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

DEMO = Path(__file__).resolve().parents[2] / "demo" / "demo.py"


def start_demo(*args, env=None):
    return subprocess.Popen([sys.executable, str(DEMO), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)


def base_dir(first_line: str) -> Path:
    m = re.match(r"asyncreceive demo in (\S+)$", first_line.strip())
    assert m, first_line
    return Path(m.group(1))


def processes_in(base: Path):
    """Processes started under `base`: by command line (bitcoind, lightningd) or working directory (lightningd
    chdirs into its lightning-dir; its subdaemons and plugins inherit it)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if str(base) in cmd or cwd.startswith(str(base)):
            found.append((int(pid), cmd))
    return found


def assert_all_gone(base: Path):
    deadline = time.time() + 10
    while processes_in(base) and time.time() < deadline:
        time.sleep(0.2)
    assert processes_in(base) == []
    assert not base.exists()


def test_demo_runs_end_to_end_and_cleans_up():
    proc = start_demo()
    out, _ = proc.communicate(timeout=300)
    print(out)
    assert proc.returncode == 0
    base = base_dir(out.splitlines()[0])
    for step in ("recipient enrols at the server", "recipient's async offers become ready",
                 "recipient goes offline", "payer pays the offer; it waits, server holds",
                 "recipient comes back; the payment completes"):
        assert re.search(r"^ \d\. " + re.escape(step) + r" +[\d.]+ s  ok$", out, re.M), step
    assert "ready 10/10" in out
    assert re.search(r"waiting_release: the recipient may be offline: asking it to release", out)
    assert "asyncserver-listclients -> held_messages 1" in out
    assert "relayed to it by the server: {'held_htlc_available': 1}" in out
    records = re.findall(r"^   (payment_hash|preimage) +payer +(\w+)\n +recipient (\w+) +\(same\)$", out, re.M)
    assert [r[0] for r in records] == ["payment_hash", "preimage"] and all(r[1] == r[2] for r in records)
    total = float(re.search(r"^ +total +([\d.]+) s$", out, re.M).group(1))
    print(f"demo total {total} s")
    assert total < 90
    assert out.rstrip().endswith(f"stopped the nodes and removed {base}")
    assert_all_gone(base)


def test_demo_keep_leaves_nodes_up_until_its_stop_command():
    proc = start_demo("--keep")
    out, _ = proc.communicate(timeout=300)
    base = base_dir(out.splitlines()[0])
    try:
        assert proc.returncode == 0, out
        poke = re.search(r"^   (lightning-cli --lightning-dir=\S+/recipient) asyncreceive-status", out, re.M)
        status = subprocess.run(poke.group(1).split() + ["asyncreceive-listpayments"], capture_output=True,
                                text=True, check=True).stdout
        assert '"payer_note": "paid while you were out"' in status
        stop = out.split("Stop them and remove everything with:\n", 1)[1].strip()
        subprocess.run(["bash", "-c", stop], check=True, capture_output=True, timeout=60)
    finally:
        if base.exists():  # the stop command failed: do not leave nodes behind
            for pid, _ in processes_in(base):
                os.kill(pid, signal.SIGKILL)
            shutil.rmtree(base, ignore_errors=True)
    assert_all_gone(base)


def test_demo_ctrl_c_stops_everything():
    proc = start_demo()
    base = base_dir(proc.stdout.readline())
    for line in proc.stdout:  # interrupt once the nodes run and the recipient is filling its offers
        if line.startswith(" 2."):
            break
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    print(out)
    assert proc.returncode == 130
    assert "interrupted" in out and f"stopped the nodes and removed {base}" in out
    assert "Traceback" not in out
    assert_all_gone(base)


def test_demo_without_lightningd_says_what_is_missing():
    env = dict(os.environ, PATH=os.path.dirname(sys.executable))  # the venv's python, no lightningd/bitcoind
    proc = start_demo(env=env)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert out.splitlines() == ["make demo needs bitcoind, bitcoin-cli, lightningd, lightning-cli on PATH "
                                "(lightningd >= v24.11, bitcoind); see README.md, 'Install'"]
