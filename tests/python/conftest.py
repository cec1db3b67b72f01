"""Fixtures for the independent-client interoperability suite.

The server under test is the `echo` example. Build it first:

    cargo build --example echo

Set FANOUT_ECHO_BIN to test another build (e.g. target/release/examples/echo). A second echo
server runs with `--compression` for the permessage-deflate tests. The TLS fixture
makes its own test CA and certificate (the `cryptography` package) and starts a second echo
server with `--tls-cert FILE --tls-key FILE`.
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
TLS_LISTEN_RE = re.compile(r"echo: listening on wss://127\.0\.0\.1:(\d+)/")
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


def _start_echo(extra_args, listen_re):
    """Starts the echo example on port 0 with `extra_args` after the address; yields
    (process, port, stderr lines) and kills the process at the end."""
    binary = _echo_binary()
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.fail(
            f"echo server binary not found or not executable: {binary}\n"
            "Build it with `cargo build --example echo` in the repository root, "
            "or point FANOUT_ECHO_BIN at a built echo example.",
            pytrace=False,
        )

    proc = subprocess.Popen(
        [str(binary), "127.0.0.1:0", *extra_args],
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
            m = listen_re.search(line)
            if m:
                port = int(m.group(1))
        yield proc, port, lines
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def _run_echo(args):
    """The echo example with `args` after its address, as an `EchoServer`; checked alive at
    the end of the session (no test crashed it)."""
    for proc, port, lines in _start_echo(args, LISTEN_RE):
        server = EchoServer(proc, port, lines)
        yield server
        server.assert_alive()


@pytest.fixture(scope="session")
def echo_server():
    yield from _run_echo([])


@pytest.fixture(scope="session")
def echo_server_compressed():
    """The echo example with permessage-deflate on (`--compression`)."""
    yield from _run_echo(["--compression"])


def _test_pki(directory):
    """A test CA and a certificate for localhost and 127.0.0.1 that it signed, written to
    `directory`: returns (ca.pem, cert.pem with the chain, key.pem) paths."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fanout python test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    paths = [directory / "ca.pem", directory / "cert.pem", directory / "key.pem"]
    paths[0].write_bytes(ca.public_bytes(pem))
    paths[1].write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    paths[2].write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


class TlsEchoServer(EchoServer):
    """The echo example serving wss:// with a certificate from a CA the fixture made."""

    def __init__(self, proc, port, stderr_lines, ca_path):
        super().__init__(proc, port, stderr_lines)
        self.url = f"wss://localhost:{port}/"
        self.ca_path = ca_path

    def ssl_context(self):
        """A client context that trusts the test CA only."""
        import ssl

        context = ssl.create_default_context(cafile=str(self.ca_path))
        context.set_alpn_protocols(["http/1.1"])
        return context


def _run_tls_echo(directory, extra_args):
    ca, cert, key = _test_pki(directory)
    args = ["--tls-cert", str(cert), "--tls-key", str(key), *extra_args]
    for proc, port, lines in _start_echo(args, TLS_LISTEN_RE):
        server = TlsEchoServer(proc, port, lines, ca)
        yield server
        server.assert_alive()


@pytest.fixture(scope="session")
def echo_tls_server(tmp_path_factory):
    yield from _run_tls_echo(tmp_path_factory.mktemp("pki"), [])


@pytest.fixture(scope="session")
def echo_tls_server_compressed(tmp_path_factory):
    """Both at once: wss:// with permessage-deflate, compressed frames inside TLS records."""
    yield from _run_tls_echo(tmp_path_factory.mktemp("pki-deflate"), ["--compression"])


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
