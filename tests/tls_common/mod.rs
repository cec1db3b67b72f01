//! TLS test helpers: a test CA made by the test itself (rcgen), certificates it issues with a
//! chosen serial, written to files the server reads, and rustls clients that trust only that CA
//! (tungstenite for WebSocket, a bare stream for everything else).
//!
//! The gateway's TLS tests include this file too (`#[path = "../../tests/tls_common/mod.rs"]`).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SerialNumber};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Connector, WebSocket};

/// A test certificate authority and the directory its files go to.
pub struct Pki {
    ca: rcgen::Certificate,
    ca_key: KeyPair,
    pub dir: PathBuf,
}

/// A certificate the test CA issued: the chain (leaf, then the CA) and key in PEM, the leaf in DER.
pub struct Issued {
    pub chain_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
    pub serial: u64,
}

impl Pki {
    /// A new CA, with a fresh directory named after `name` and the process.
    pub fn new(name: &str) -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "fanout test CA");
        let ca = params.self_signed(&ca_key).unwrap();
        let dir = std::env::temp_dir().join(format!("fanout-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Pki { ca, ca_key, dir }
    }

    /// The CA certificate in PEM (for clients outside Rust).
    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// A certificate for localhost and 127.0.0.1 with `serial`, valid until 1 January of `year`.
    pub fn issue(&self, serial: u64, year: i32) -> Issued {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "localhost");
        params.serial_number = Some(SerialNumber::from(serial));
        params.not_after = rcgen::date_time_ymd(year, 1, 1);
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        Issued {
            chain_pem: format!("{}{}", cert.pem(), self.ca.pem()),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
            serial,
        }
    }

    /// Writes `issued` to `cert.pem` and `key.pem` in the directory, each replaced whole (a new
    /// file renamed over the old), and returns their paths.
    pub fn install(&self, issued: &Issued) -> (PathBuf, PathBuf) {
        let (cert, key) = self.paths();
        replace(&cert, issued.chain_pem.as_bytes());
        replace(&key, issued.key_pem.as_bytes());
        (cert, key)
    }

    pub fn paths(&self) -> (PathBuf, PathBuf) {
        (self.dir.join("cert.pem"), self.dir.join("key.pem"))
    }

    /// A rustls client that trusts this CA only, offers `http/1.1` and resumes sessions.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

/// Replaces `path` whole: written beside it, then renamed over it.
pub fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

pub type Wss = WebSocket<MaybeTlsStream<TcpStream>>;

/// Opens `wss://localhost:PORT/PATH` on `addr` with `config`.
pub fn wss_connect(addr: SocketAddr, path: &str, config: &Arc<ClientConfig>) -> Wss {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let url = format!("wss://localhost:{}{path}", addr.port());
    let (ws, response) =
        tungstenite::client_tls_with_config(url, stream, None, Some(Connector::Rustls(config.clone())))
            .unwrap_or_else(|e| panic!("wss handshake: {e}"));
    assert_eq!(response.status(), 101);
    ws
}

/// The client's TLS connection under a tungstenite WebSocket.
pub fn tls_of(ws: &Wss) -> &ClientConnection {
    match ws.get_ref() {
        MaybeTlsStream::Rustls(stream) => &stream.conn,
        _ => panic!("not a rustls stream"),
    }
}

/// The serial number of the certificate the server presented.
pub fn peer_serial(conn: &ClientConnection) -> u64 {
    let leaf: &CertificateDer<'_> = &conn.peer_certificates().expect("a server certificate")[0];
    serial_of(leaf)
}

/// A certificate's serial number (RFC 5280: the INTEGER after the optional [0] version).
pub fn serial_of(der: &[u8]) -> u64 {
    fn tlv(d: &[u8]) -> (u8, &[u8], &[u8]) {
        let (tag, first) = (d[0], d[1]);
        let (len, at) = if first < 0x80 {
            (first as usize, 2)
        } else {
            let n = (first & 0x7F) as usize;
            (d[2..2 + n].iter().fold(0, |a, &b| (a << 8) | b as usize), 2 + n)
        };
        (tag, &d[at..at + len], &d[at + len..])
    }
    let (_, cert, _) = tlv(der);
    let (_, tbs, _) = tlv(cert);
    let (tag, _, rest) = tlv(tbs);
    let serial = if tag == 0xA0 { tlv(rest).1 } else { tlv(tbs).1 };
    serial.iter().fold(0u64, |a, &b| (a << 8) | u64::from(b))
}

/// A TLS stream to `addr` (for HTTP over TLS, or to read what the server sends).
pub fn tls_stream(addr: SocketAddr, config: &Arc<ClientConfig>) -> StreamOwned<ClientConnection, TcpStream> {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let conn = ClientConnection::new(config.clone(), ServerName::try_from("localhost").unwrap()).unwrap();
    let mut tls = StreamOwned::new(conn, stream);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).unwrap();
    }
    tls
}

/// Sends a plain HTTP request over TLS and reads the response until the server closes.
pub fn https_exchange(addr: SocketAddr, config: &Arc<ClientConfig>, request: &str) -> String {
    let mut tls = tls_stream(addr, config);
    tls.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        match tls.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => panic!("reading the response: {e}"),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
