#!/usr/bin/env python3
"""Who owns a member's CPU samples: `perf script -F comm,ip,sym` of a recording made with
`--call-graph dwarf` on stdin; each sample is charged to the innermost frame of its call
chain that belongs to one of the layers below (so an allocation, a memmove or a hash made
for the HTTP/2 codec counts for the codec). Used by `bench/profile.sh --owners`.

Usage: perf script -i leader.data -F comm,ip,sym | bench/perf_owners.py [EXAMPLES]
"""
import collections
import re
import sys

# First match wins, innermost frame first.
LAYERS = [
    ("kernel: syscalls", r"entry_SYSCALL|do_syscall_64|__x64_sys|^syscall$|^__libc_|^__GI___|epoll_wait|writev|recv|futex|fdatasync"),
    ("routing and middleware (axum, tower, front)", r"axum|tower::|from_fn|metrics::grpc|caller::|budget::|access_control|hyper_util::service::glue|InterceptedService|matchit|skiff_server::front"),
    ("tonic", r"tonic::"),
    ("HTTP/2 (h2, hyper)", r"h2::|hyper::"),
    ("protobuf (prost, generated servers)", r"prost|skiff_proto"),
    ("request facade and services", r"skiff_server::facade|skiff_server::api::"),
    ("server (propose, wait)", r"skiff_server::server|skiff_server::wait|EtcdServer"),
    ("Raft and the node loop", r"skiff_raft|skiff_server::node"),
    ("peer transport", r"skiff_server::peer"),
    ("apply and storage", r"skiff_server::apply|skiff_storage|redb"),
    ("tokio", r"tokio::"),
]
LAYERS = [(name, re.compile(p)) for name, p in LAYERS]
FRAME = re.compile(r"^\s+[0-9a-f]+ (.*)$")


def samples(lines):
    chain = None
    for line in lines:
        if not line.strip():
            if chain is not None:
                yield chain
            chain = None
            continue
        m = FRAME.match(line)
        if m and chain is not None:
            chain.append(m.group(1))
        else:
            if chain is not None:
                yield chain
            chain = []
    if chain is not None:
        yield chain


def main():
    examples = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    owners = collections.Counter()
    frames = collections.defaultdict(collections.Counter)
    n = 0
    for chain in samples(sys.stdin):
        n += 1
        owner, frame = "other", chain[0] if chain else "?"
        for f in chain:
            hit = next((name for name, r in LAYERS if r.search(f)), None)
            if hit:
                owner, frame = hit, f
                break
        owners[owner] += 1
        frames[owner][frame[:100]] += 1
    if n == 0:
        print("no samples")
        return
    print(f"{n} samples")
    for owner, count in owners.most_common():
        print(f"{100 * count / n:5.1f}%  {owner}")
        for frame, c in frames[owner].most_common(examples):
            print(f"         {100 * c / n:4.1f}%  {frame}")


if __name__ == "__main__":
    main()
