"""Profile a server under one of the benchmark's loads with py-spy, and print where its time goes.

Usage: .venv/bin/python -m benchmarks.profile [--server item_socket-ws] [--profile light|heavy]
       [--seconds 10] [--out /tmp/item_socket.raw]
Starts the server (pinned to CPU 0) and the load generator as ``benchmarks.run`` does, warms up,
then records ``py-spy record --nonblocking`` (200 Hz, raw "collapsed" stacks) over the measured
step. Prints deliveries, server CPU per delivery, and the frames with the most samples: their own
("self") and with their callees ("inclusive"). Python servers only (py-spy reads CPython).
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import subprocess
import sys
from pathlib import Path

from . import harness
from .run import HEAVY, LIGHT


def summarize(raw: Path, top: int) -> str:
    """The ``top`` frames by own and by inclusive samples of a py-spy raw (collapsed) file."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        if not line.strip():
            continue
        stack, count_text = line.rsplit(" ", 1)
        count = int(count_text)
        total += count
        frames = stack.split(";")
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"{total} samples", "--- self"]
    lines += [f"{100 * n / total:5.1f}% {f[:140]}" for f, n in own.most_common(top)]
    lines.append("--- inclusive")
    lines += [f"{100 * n / total:5.1f}% {f[:140]}" for f, n in inclusive.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the load, record, print the summary; 0 on success."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--server", default="item_socket-ws", choices=list(harness.SERVERS))
    parser.add_argument("--profile", default="light", choices=["light", "heavy"])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("/tmp/benchmark-profile.raw"))
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    server = harness.SERVERS[args.server]
    load = LIGHT if args.profile == "light" else HEAVY
    with harness.running(server) as srv:
        config = harness.throughput_config(server, srv.url, load)
        with harness.generator(config) as gen:
            gen.read(timeout=180)
            gen.send("go " + json.dumps({"rate": load.rate, "duration": harness.WARMUP_S, "index": 0}))
            gen.read(timeout=60)
            spy_cmd = [py_spy, "record", "-p", str(srv.proc.pid), "-d", str(args.seconds), "-r", "200"]
            spy_cmd += ["-f", "raw", "-o", str(args.out), "--nonblocking"]
            spy = subprocess.Popen(spy_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            try:
                cpu0 = srv.cpu()
                gen.send("go " + json.dumps({"rate": load.rate, "duration": args.seconds, "index": 1}))
                result = gen.read(timeout=args.seconds + 60)
                cpu = srv.cpu() - cpu0
                _, err = spy.communicate(timeout=args.seconds + 60)
            finally:
                if spy.poll() is None:
                    spy.kill()
                    spy.wait(timeout=10)
            gen.send("stop")
    if spy.returncode != 0:
        print(f"py-spy failed: {err[-1000:]}", file=sys.stderr)
        return 1
    delivered = int(result["delivered"])
    print(
        f"{args.server} {args.profile}: {delivered} of {result['expected']} delivered, "
        f"server CPU {cpu:.2f} s, {1e6 * cpu / max(1, delivered):.1f} us per delivery "
        f"({delivered / max(cpu, 1e-9):,.0f} per core-s); py-spy adds a little"
    )
    print(summarize(args.out, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
