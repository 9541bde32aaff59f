#!/usr/bin/env python3
"""Reads `perf script --ns -F comm,tid,cpu,time,event,trace` of the
raw_syscalls tracepoints recorded on every CPU during a c=1 run (see
benches/load.sh and benches/grpc.sh, TRACE=1) and prints, for the proxy on PROXY_CPU:

  * turnaround: from its epoll wait returning to its next send starting
    (read, routing, parsing, writing: the proxy's own part of the critical
    path), per direction;
  * legs: from one process's send starting to the receiver's epoll wait
    returning (the kernel's delivery and the cross-core wake-up).

usage: c1trace.py PROXY_CPU < perf-script-output
"""
import collections
import re
import statistics
import sys

# The load generators: wrk (benches/load.sh) and grpc-peer's client thread
# (benches/grpc.sh); anything else on another CPU is the upstream.
CLIENTS = ("wrk", "grpc-client")
SEND = {1: "write", 20: "writev", 44: "sendto", 46: "sendmsg"}
WAIT = {232: "epoll_wait", 281: "epoll_pwait", 441: "epoll_pwait2"}
LINE = re.compile(r"(\S+)\s+(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+raw_syscalls:sys_(enter|exit):\s+NR (\d+)")


def main():
    proxy_cpu = int(sys.argv[1])
    events = []
    for line in sys.stdin:
        m = LINE.search(line)
        if not m:
            continue
        comm, _tid, cpu, t, kind, nr = m.groups()
        if comm in ("perf", "sleep", "swapper", "taskset", "bash"):
            continue
        role = "client" if comm.startswith(CLIENTS) else ("proxy" if int(cpu) == proxy_cpu else "upstream")
        events.append((float(t) * 1e6, kind, int(nr), role))
    events.sort()
    turnaround = collections.defaultdict(list)
    legs = collections.defaultdict(list)
    last_send = {}
    woken = None  # (time the proxy's wait returned, who woke it)
    for t, kind, nr, role in events:
        if kind == "enter" and nr in SEND:
            last_send[role] = t
            if role == "proxy" and woken is not None:
                turnaround[f"after {woken[1]}"].append(t - woken[0])
                woken = None
        elif kind == "exit" and nr in WAIT:
            senders = [(ts, who) for who, ts in last_send.items() if who != role]
            if senders:
                ts, who = max(senders)
                legs[f"{who} -> {role}"].append(t - ts)
                del last_send[who]
                if role == "proxy":
                    woken = (t, who)
    def show(name, values):
        if len(values) >= 100:
            values.sort()
            q = lambda f: values[int(f * (len(values) - 1))]
            print(f"  {name:26} p50 {statistics.median(values):6.2f} us  (p25 {q(0.25):6.2f}, p75 {q(0.75):6.2f}; n={len(values)})")
    print(" proxy turnaround (wait returns -> send starts):")
    for k in sorted(turnaround):
        show(k, turnaround[k])
    print(" legs (send starts -> receiver's wait returns):")
    for k in sorted(legs):
        show(k, legs[k])


if __name__ == "__main__":
    main()
