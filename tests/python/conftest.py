"""Fixtures for the independent-client interoperability suite.

The server under test is the `echo` example. Build it first:

    cargo build --example echo

Set FANOUT_ECHO_BIN to test another build (e.g. target/release/examples/echo).
"""

import os
import queue
import re
import subprocess
import threading
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO_ROOT / "target" / "debug" / "examples" / "echo"
LISTEN_RE = re.compile(r"echo: listening on ws://127\.0\.0\.1:(\d+)/")
STARTUP_TIMEOUT = 30.0


class EchoServer:
    """A running echo server: its URL, host, port and a tail of what it printed."""

    def __init__(self, proc, port, stderr_lines):
        self.proc = proc
        self.host = "127.0.0.1"
        self.port = port
        self.url = f"ws://127.0.0.1:{port}/"
        self.stderr_lines = stderr_lines

    def assert_alive(self):
        code = self.proc.poll()
        assert code is None, (
            f"echo server exited with status {code}; stderr tail:\n"
            + "".join(self.stderr_lines[-50:])
        )


def _echo_binary() -> Path:
    env = os.environ.get("FANOUT_ECHO_BIN")
    path = Path(env) if env else DEFAULT_BIN
    if not path.is_absolute():
        path = REPO_ROOT / path
    return path


def _run_echo(args):
    """Starts the echo example with `args` after its address; yields it, killed at the end."""
    binary = _echo_binary()
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.fail(
            f"echo server binary not found or not executable: {binary}\n"
            "Build it with `cargo build --example echo` in the repository root, "
            "or point FANOUT_ECHO_BIN at a built echo example.",
            pytrace=False,
        )

    proc = subprocess.Popen(
        [str(binary), "127.0.0.1:0", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
    )
    lines = []
    first_lines = queue.Queue()

    def drain():
        # Keep reading stderr for the whole session so the pipe can never fill up and
        # block the server; the first lines also go to the queue the fixture waits on.
        for line in proc.stderr:
            lines.append(line)
            first_lines.put(line)
        first_lines.put(None)  # EOF: the process closed stderr (exited)

    threading.Thread(target=drain, name="echo-stderr", daemon=True).start()

    try:
        port = None
        while port is None:
            try:
                line = first_lines.get(timeout=STARTUP_TIMEOUT)
            except queue.Empty:
                pytest.fail(
                    f"echo server printed no listening line within {STARTUP_TIMEOUT} s; "
                    f"stderr so far:\n{''.join(lines)}",
                    pytrace=False,
                )
            if line is None:
                proc.wait(timeout=5)
                pytest.fail(
                    f"echo server exited with status {proc.returncode} before listening; "
                    f"stderr:\n{''.join(lines)}",
                    pytrace=False,
                )
            m = LISTEN_RE.search(line)
            if m:
                port = int(m.group(1))

        server = EchoServer(proc, port, lines)
        yield server
        # Still alive after the whole session: no test crashed it.
        server.assert_alive()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def echo_server():
    yield from _run_echo([])


@pytest.fixture(scope="session")
def echo_server_compressed():
    """The echo example with permessage-deflate on (`--compression`)."""
    yield from _run_echo(["--compression"])


@pytest.fixture
def server(echo_server):
    """Per-test view of the session server that also checks it survived the test."""
    echo_server.assert_alive()
    yield echo_server
    echo_server.assert_alive()


@pytest.fixture
def cserver(echo_server_compressed):
    """Per-test view of the compressing server that also checks it survived the test."""
    echo_server_compressed.assert_alive()
    yield echo_server_compressed
    echo_server_compressed.assert_alive()
