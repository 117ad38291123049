#!/usr/bin/env python3
"""Where a proxy's CPU goes, by crate: each sample of a `perf record --call-graph dwarf`
profile is charged to the innermost frame on its stack that belongs to a crate other than
the standard library's and the futures helpers' (so a `memmove` or `malloc` is charged to
the crate that called it, and kernel time to the crate that made the syscall). With
`--crate NAME`, that crate's samples by its innermost function instead.

    perf record -e cpu-clock -F 1000 --call-graph dwarf,16384 -p PID -o p.data -- sleep 4
    perf script -i p.data -F ip,sym,dso > p.txt
    benches/scripts/perf-by-crate.py p.txt [--crate ringlink_engine]
"""
import collections
import re
import sys

GENERIC = {"core", "alloc", "std", "futures_core", "futures_util", "futures_lite",
           "pin_project_lite"}
FRAME = re.compile(r"\s*[0-9a-f]+\s+(.*?)\s*(?:\((.*)\))?$")
CRATE = re.compile(r"<?([a-z_0-9]+)::")


def stacks(path):
    stack = []
    with open(path, errors="replace") as lines:
        for line in lines:
            if not line.strip():
                if stack:
                    yield stack
                stack = []
                continue
            frame = FRAME.match(line.rstrip("\n"))
            if frame:
                stack.append((frame.group(1), frame.group(2) or ""))
    if stack:
        yield stack


def owner(stack):
    for sym, dso in stack:
        if "kernel" in dso or "libc" in dso or "vdso" in dso:
            continue
        crate = CRATE.match(sym)
        if crate and crate.group(1) not in GENERIC:
            return crate.group(1), sym
    return "?", stack[0][0]


def main():
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    only = args[args.index("--crate") + 1] if "--crate" in args else None
    counts = collections.Counter()
    total = 0
    for stack in stacks(args[0]):
        total += 1
        crate, sym = owner(stack)
        if only is None:
            counts[crate] += 1
        elif crate == only:
            counts[sym[:120]] += 1
    print(f"{total} samples")
    for name, n in counts.most_common(30):
        print(f"{100 * n / total:6.2f}%  {name}")


if __name__ == "__main__":
    main()
