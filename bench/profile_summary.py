"""Where the plugin's CPU went, from py-spy's collapsed stacks (``make bench-scale PYSPY=...`` writes
them): ``python -m bench.profile_summary bench-scale-profile-0.txt`` prints the functions of our
package and of pyln/coincurve/json with the share of on-CPU samples spent in them (inclusive) and in
their own code (self)."""

import re
import sys
from collections import Counter


def summarize(path: str, top: int = 25) -> None:
    incl, own, total = Counter(), Counter(), 0
    for line in open(path):
        stack, _, n = line.rstrip().rpartition(" ")
        if not n.isdigit():
            continue
        n = int(n)
        total += n
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        for f in set(frames):
            incl[f] += n
        own[frames[-1]] += n
    print(f"{total} samples")
    for f, n in incl.most_common(top * 3)[:top]:
        print(f"{100 * n / total:6.1f}% incl {100 * own[f] / total:6.1f}% self  {f}")


if __name__ == "__main__":
    summarize(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 25)
