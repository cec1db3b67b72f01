#!/usr/bin/env python3
"""Upgrades per second over TLS against the echo example, with both sides' CPU.

    cargo build --release --example echo
    python3 loadtest/scripts/tls-upgrades.py [--seconds 10] [--clients 2] [--resume]

Each client process loops: TCP connect, TLS handshake (Python's ssl, which is OpenSSL; a fresh
session, or with --resume the previous one), WebSocket upgrade, read the 101, close. The test CA
and certificate are made here (tests/python/conftest.py's helper, the cryptography package).
fanout-load speaks no TLS yet; this stands in for it. Prints upgrades/s, the server's CPU (from
/proc/PID/stat) and the clients' (their rusage), as shares of one core.
"""

import argparse
import multiprocessing
import os
import re
import resource
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "python"))
from conftest import _test_pki  # noqa: E402

REQUEST = (
    b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def client(port, ca, seconds, resume, out):
    context = ssl.create_default_context(cafile=ca)
    context.set_alpn_protocols(["http/1.1"])
    session, done, resumed = None, 0, 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        raw = socket.create_connection(("127.0.0.1", port))
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tls = context.wrap_socket(raw, server_hostname="localhost", session=session if resume else None)
        tls.sendall(REQUEST)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = tls.recv(4096)
            assert chunk, "closed during the upgrade"
            head += chunk
        assert head.startswith(b"HTTP/1.1 101 "), head
        done += 1
        resumed += tls.session_reused
        if resume:
            session = tls.session
        tls.close()
    out.put((done, resumed))


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--bin", default=str(ROOT / "target" / "release" / "examples" / "echo"))
    args = parser.parse_args()
    ca, cert, key = _test_pki(Path(tempfile.mkdtemp(prefix="fanout-tls-bench-")))
    server = subprocess.Popen(
        [args.bin, "127.0.0.1:0", "--tls-cert", str(cert), "--tls-key", str(key)],
        stderr=subprocess.PIPE, text=True,
    )
    try:
        line = server.stderr.readline()
        port = int(re.search(r"wss://127\.0\.0\.1:(\d+)/", line).group(1))
        out = multiprocessing.Queue()
        procs = [
            multiprocessing.Process(target=client, args=(port, str(ca), args.seconds, args.resume, out))
            for _ in range(args.clients)
        ]
        server_cpu = cpu_seconds(server.pid)
        started = time.monotonic()
        for p in procs:
            p.start()
        results = [out.get() for _ in procs]
        for p in procs:
            p.join()
        wall = time.monotonic() - started
        server_cpu = cpu_seconds(server.pid) - server_cpu
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        client_cpu = usage.ru_utime + usage.ru_stime
        done = sum(r[0] for r in results)
        resumed = sum(r[1] for r in results)
        print(
            f"{done} upgrades over TLS in {wall:.1f} s: {done / wall:,.0f}/s "
            f"({resumed} resumed); server CPU {100 * server_cpu / wall:.1f}% of a core "
            f"({done / max(server_cpu, 1e-9):,.0f} upgrades per server CPU second); "
            f"clients' CPU {100 * client_cpu / wall:.1f}%"
        )
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    main()
