"""Run the fuzz targets: ``python -m fuzz.run [--runs N] [--smoke] [--jobs J] [target ...]``.

Engines:

- atheris (libFuzzer, coverage-guided; the default when atheris is installed): each target runs in its
  own child process (libFuzzer exits when it is done), with its corpus in fuzz/corpus/<target>/
  (seeded from fuzz/seeds.py on every run) and crashing inputs written to fuzz/crashes/.
- ``--smoke``: in-process random mutation of the seeds, no coverage feedback; what the unit test and,
  without atheris, ``make fuzz-smoke`` use.

Every input is timed in CPU seconds: one slower than the bound (``FUZZ_MAX_MS``, default 100 ms for byte-level
targets, 1000 ms for the structured ones, which run real crypto and the services) is a failure.  The
exit status is non-zero when any target failed.
"""

import argparse
import os
import random
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CRASHES = HERE / "crashes"
CORPUS = HERE / "corpus"
LOGS = HERE / "logs"


def time_bound(structured: bool) -> float:
    env = os.environ.get("FUZZ_MAX_MS")
    return float(env) / 1000 if env else (1.0 if structured else 0.1)


@dataclass
class Result:
    name: str
    runs: int = 0
    seconds: float = 0.0
    coverage: str = "n/a"
    crashes: List[str] = field(default_factory=list)
    slowest: float = 0.0
    slowest_input: str = ""

    def row(self) -> str:
        rate = self.runs / self.seconds if self.seconds else 0.0
        crash = f"{len(self.crashes)} {' '.join(self.crashes)}" if self.crashes else "0"
        return (f"{self.name:16} {self.runs:>9} {rate:>9.0f}/s {self.coverage:>18}  crashes {crash:3}  "
                f"slowest {self.slowest * 1000:7.1f} ms CPU {self.slowest_input}")


class Timer:
    """Times one input in CPU seconds of this process (world setup excluded), so that other load on the
    machine does not count; an input past the bound is run again and fails only if it is slow again."""

    def __init__(self, target):
        from . import structured
        self.target, self.structured = target, structured
        self.bound = time_bound(target.structured)
        self.slowest, self.slowest_input = 0.0, ""

    def _time(self, data: bytes) -> float:
        setup = self.structured.setup_seconds
        t0 = time.process_time()
        self.target.run(data)
        return time.process_time() - t0 - (self.structured.setup_seconds - setup)

    def __call__(self, data: bytes) -> bool:
        """Run one input; True if it is the slowest so far.  Raises what the target raised."""
        from .targets import Failure
        dt = self._time(data)
        if dt > self.bound:
            dt = min(dt, self._time(data))
            if dt > self.bound:
                raise Failure(f"slow input: {dt * 1000:.0f} ms CPU (bound {self.bound * 1000:.0f} ms)")
        if dt <= self.slowest:
            return False
        self.slowest, self.slowest_input = dt, f"len {len(data)} {data[:24].hex()}"
        return True


def save_crash(name: str, data: bytes) -> Path:
    import hashlib
    CRASHES.mkdir(parents=True, exist_ok=True)
    p = CRASHES / f"{name}-crash-{hashlib.sha1(data).hexdigest()}"
    p.write_bytes(data)
    return p


# ---- smoke engine (in-process) -------------------------------------------------------------------------

INTERESTING = [0, 1, 0x7F, 0x80, 0xFC, 0xFD, 0xFE, 0xFF]


def mutate(rng: random.Random, data: bytes, corpus: List[bytes], max_len: int) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        i = rng.randrange(len(b) + 1)
        if op == 0 and b:
            b[i % len(b)] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[i % len(b)] = rng.choice(INTERESTING)
        elif op == 2:
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 3:
            del b[i:i + rng.randint(1, 16)]
        elif op == 4:
            del b[i:]
        elif op == 5 and b:
            j = rng.randrange(len(b))
            b[i:i] = b[j:j + rng.randint(1, 32)]
        else:
            other = rng.choice(corpus)
            b = b[:i] + other[rng.randrange(len(other) + 1):]
    return bytes(b[:max_len])


def smoke(name: str, runs: int, seed: int = 0) -> Result:
    """Seeds, then random mutations of them, in this process; stops at the first failure."""
    from . import seeds, structured, targets
    target = targets.get(name)
    res = Result(name)
    rng = random.Random(seed)
    t0 = time.perf_counter()
    try:
        corpus = seeds.seeds(name) or [b""]
        timer = Timer(target)
        for i in range(runs):
            data = corpus[i] if i < len(corpus) else mutate(rng, rng.choice(corpus), corpus, target.max_len)
            res.runs += 1
            try:
                timer(data)
            except Exception as e:
                res.crashes.append(str(save_crash(name, data)))
                print(f"{name}: {type(e).__name__}: {e}", file=sys.stderr)
                break
    finally:
        structured.reset()
    res.seconds = time.perf_counter() - t0
    res.slowest, res.slowest_input = timer.slowest, timer.slowest_input
    return res


# ---- atheris engine (one child process per target) ---------------------------------------------------

def child(name: str, runs: int, extra: List[str]) -> None:
    """Inside the child: instrument asyncreceive, write the seeds into the corpus, hand over to libFuzzer."""
    import atheris
    with atheris.instrument_imports(include=["asyncreceive"]):
        import asyncreceive.shell.transport  # noqa: F401  (everything the structured targets reach)
        import asyncreceive.recipient.service  # noqa: F401
        import asyncreceive.server.service  # noqa: F401
        from . import seeds, targets
    import hashlib
    target = targets.get(name)
    corpus = CORPUS / name
    corpus.mkdir(parents=True, exist_ok=True)
    for s in seeds.seeds(name):
        (corpus / f"seed-{hashlib.sha1(s).hexdigest()}").write_bytes(s)
    CRASHES.mkdir(parents=True, exist_ok=True)
    timer = Timer(target)

    def one(data: bytes) -> None:
        if timer(data):
            print(f"FUZZ-SLOWEST {timer.slowest:.6f} {timer.slowest_input}", file=sys.stderr, flush=True)

    argv = [sys.argv[0], f"-runs={runs}", f"-max_len={target.max_len}", f"-artifact_prefix={CRASHES}/{name}-",
            "-print_final_stats=1", "-timeout=20", "-rss_limit_mb=4096", *extra]
    if not any(os.path.isfile(a) for a in extra):  # given input files, libFuzzer runs just those
        argv.append(str(corpus))
    atheris.Setup(argv, one)
    print(f"FUZZ-T0 {time.time():.3f}", file=sys.stderr, flush=True)
    atheris.Fuzz()


def parse_child(name: str, log: str, t0: float, t1: float, rc: int) -> Result:
    res = Result(name)
    m = re.search(r"stat::number_of_executed_units:\s*(\d+)", log)
    res.runs = int(m.group(1)) if m else 0
    starts = re.findall(r"FUZZ-T0 ([\d.]+)", log)
    res.seconds = t1 - (float(starts[-1]) if starts else t0)
    cov = re.findall(r"cov: (\d+) ft: (\d+)", log)
    if cov:
        res.coverage = f"edges {cov[-1][0]} ft {cov[-1][1]}"
    slow = re.findall(r"FUZZ-SLOWEST ([\d.]+) (.*)", log)
    if slow:
        res.slowest, res.slowest_input = float(slow[-1][0]), slow[-1][1]
    if rc != 0:
        res.crashes = re.findall(r"Test unit written to (\S+)", log) or [f"exit status {rc}, see {LOGS / name}.log"]
    return res


def run_atheris(name: str, runs: int, extra: List[str]) -> Result:
    LOGS.mkdir(parents=True, exist_ok=True)
    logfile = LOGS / f"{name}.log"
    cmd = ["nice", "-n", "10", sys.executable, "-m", "fuzz.run", "--child", name, "--runs", str(runs), "--", *extra]
    t0 = time.time()
    with open(logfile, "w") as f:
        rc = subprocess.call(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT)
    return parse_child(name, logfile.read_text(errors="replace"), t0, time.time(), rc)


def have_atheris() -> bool:
    try:
        import atheris  # noqa: F401
        return True
    except ImportError:
        return False


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("targets", nargs="*", help="targets to run (default: all)")
    ap.add_argument("--runs", type=int, default=int(os.environ.get("FUZZ_RUNS", 1_000_000)),
                    help="inputs per target (env FUZZ_RUNS, default 1000000)")
    ap.add_argument("--smoke", action="store_true", help="in-process mutation of the seeds (no atheris)")
    ap.add_argument("--jobs", type=int, default=int(os.environ.get("FUZZ_JOBS", 1)), help="targets at once")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []   # after --: libFuzzer flags and inputs
    args = ap.parse_args(argv[:len(argv) - len(extra) - (1 if "--" in argv else 0)])
    if args.child:
        child(args.child, args.runs, extra)
        return 0
    from .targets import all_targets
    names = args.targets or list(all_targets())
    unknown = [n for n in names if n not in all_targets()]
    if unknown:
        ap.error(f"unknown target(s) {unknown}; known: {', '.join(all_targets())}")
    engine = "smoke" if args.smoke or not have_atheris() else "atheris"
    print(f"fuzz: {len(names)} target(s), {args.runs} inputs each, engine {engine}", flush=True)
    t0 = time.time()
    if engine == "smoke":
        results = []
        for n in names:
            results.append(smoke(n, args.runs))
            print(results[-1].row(), flush=True)
    else:
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            results = []
            for r in pool.map(lambda n: run_atheris(n, args.runs, extra), names):
                results.append(r)
                print(r.row(), flush=True)
    total = sum(r.runs for r in results)
    failed = [r.name for r in results if r.crashes]
    print(f"fuzz: {total} inputs in {time.time() - t0:.0f} s; "
          + (f"FAILED: {', '.join(failed)} (inputs in {CRASHES})" if failed else "no failures"), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
