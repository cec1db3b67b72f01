//! One connection's TLS: rustls' unbuffered (sans-IO) server connection driven over byte
//! slices. Records in, plaintext out; plaintext in, records out.
//!
//! Owns: `TlsConn` (the state machine, the ciphertext not yet written) and `Scratch` (a
//! worker's buffers for encrypting). Must not: touch a socket or a worker; `tls_io.rs` does the
//! I/O. Invariants: the ciphertext a connection holds (`out`) is only what a short write left, a
//! handshake flight or a last alert, and its memory is released once written, so an idle TLS
//! connection holds rustls' state and no buffer; `out` is always written before anything newly
//! encrypted; once `failed`, nothing more is decrypted or encrypted (what is in `out`, an alert
//! or the plain-HTTP answer, goes out, then the close).

use std::sync::Arc;

use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncodeTlsData, EncryptError, InsufficientSizeError, WriteTraffic,
};
use rustls::ServerConfig;

use super::read_buf::ReadBuf;
use super::tls_config::TlsShared;

/// What the peer's bytes amounted to.
#[derive(Debug)]
pub(crate) enum Received {
    /// Everything complete was handled; the rest (a partial record) waits for more bytes.
    More,
    /// The peer sent close_notify: what it sent before is complete.
    PeerClosed,
    /// The first bytes look like a plain HTTP request, not a TLS record.
    PlainHttp,
    /// Not TLS, or TLS gone wrong; an alert, if rustls made one, is in `out`.
    Failed(rustls::Error),
}

/// The answer to plain HTTP on the TLS port, sent as it is (the client speaks no TLS).
pub(crate) const PLAIN_HTTP_RESPONSE: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 52\r\nConnection: close\r\n\r\nThis port speaks TLS: use https:// or wss:// here.\r\n";

/// One connection's TLS state. Boxed in the connection, so a plain connection pays one pointer.
pub(crate) struct TlsConn {
    conn: UnbufferedServerConnection,
    /// Ciphertext (or, once `failed`, the last raw bytes) to write before anything else.
    pub(crate) out: Vec<u8>,
    /// Bytes of `out` already written.
    pub(crate) out_written: usize,
    /// Decryption or the handshake failed, or the peer spoke plain HTTP.
    pub(crate) failed: bool,
    /// The partial record at the end of the last read, kept until the rest arrives (exactly
    /// its size, released once empty).
    pub(crate) tail: ReadBuf,
    /// Whether any byte arrived yet (the first one tells TLS from plain HTTP).
    started: bool,
    /// Whether the end of the handshake was counted.
    pub(crate) counted: bool,
}

impl TlsConn {
    pub(crate) fn new(config: Arc<ServerConfig>) -> Result<Box<TlsConn>, rustls::Error> {
        Ok(Box::new(TlsConn {
            conn: UnbufferedServerConnection::new(config)?,
            out: Vec::new(),
            out_written: 0,
            failed: false,
            tail: ReadBuf::default(),
            started: false,
            counted: false,
        }))
    }

    pub(crate) fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Whether the session was resumed (known once the handshake is done).
    pub(crate) fn resumed(&self) -> bool {
        self.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
    }

    /// True while ciphertext waits to be written.
    pub(crate) fn has_out(&self) -> bool {
        self.out_written < self.out.len()
    }

    /// Marks `n` bytes of `out` written; releases its memory once all are.
    pub(crate) fn wrote(&mut self, n: usize) {
        self.out_written += n;
        if self.out_written >= self.out.len() {
            self.out = Vec::new();
            self.out_written = 0;
        }
    }

    /// Runs the records at the front of `incoming` through rustls: application data is appended
    /// to `plain`, handshake records to send to `out`. Returns the bytes consumed (the rest is a
    /// partial record) and what they amounted to.
    pub(crate) fn receive(&mut self, incoming: &mut [u8], plain: &mut ReadBuf) -> (usize, Received) {
        if self.failed {
            return (incoming.len(), Received::More);
        }
        if !self.started && !incoming.is_empty() {
            self.started = true;
            // A TLS record starts with its content type (20-24), an SSLv2 hello with 0x80 or
            // more; a request line starts with its method's capital letters.
            if incoming[0].is_ascii_uppercase() {
                self.failed = true;
                self.out = PLAIN_HTTP_RESPONSE.to_vec();
                return (incoming.len(), Received::PlainHttp);
            }
        }
        let mut consumed = 0;
        loop {
            let status = self.conn.process_tls_records(&mut incoming[consumed..]);
            let mut discard = status.discard;
            let outcome = match status.state {
                Err(e) => Some(Received::Failed(e)),
                Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                    let mut failure = None;
                    while let Some(record) = traffic.next_record() {
                        match record {
                            Ok(record) => {
                                discard += record.discard;
                                let n = record.payload.len();
                                plain.spare(n, n.max(16 * 1024))[..n].copy_from_slice(record.payload);
                                plain.commit(n);
                            }
                            Err(e) => {
                                failure = Some(Received::Failed(e));
                                break;
                            }
                        }
                    }
                    failure
                }
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    encode_into(&mut encode, &mut self.out);
                    None
                }
                // The encoded records stay in `out`, which is written before anything else.
                Ok(ConnectionState::TransmitTlsData(transmit)) => {
                    transmit.done();
                    None
                }
                Ok(ConnectionState::BlockedHandshake | ConnectionState::WriteTraffic(_)) => Some(Received::More),
                Ok(ConnectionState::PeerClosed | ConnectionState::Closed) => Some(Received::PeerClosed),
                Ok(_) => Some(Received::Failed(rustls::Error::General("unexpected TLS state".into()))),
            };
            consumed += discard;
            if let Some(outcome) = outcome {
                if matches!(outcome, Received::Failed(_)) {
                    self.failed = true;
                    self.take_alert();
                    consumed = incoming.len();
                }
                return (consumed, outcome);
            }
        }
    }

    /// After an error rustls may have queued a fatal alert: encode it into `out`.
    fn take_alert(&mut self) {
        for _ in 0..4 {
            match self.conn.process_tls_records(&mut []).state {
                Ok(ConnectionState::EncodeTlsData(mut encode)) => encode_into(&mut encode, &mut self.out),
                Ok(ConnectionState::TransmitTlsData(transmit)) => transmit.done(),
                _ => return,
            }
        }
    }

    /// Encrypts `plaintext` onto the end of `out` (the worker's scratch). Handshake records
    /// rustls still owes (session tickets, a key update) go first, into `self.out`.
    pub(crate) fn encrypt(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), rustls::Error> {
        self.with_writer(out, |writer, buf| writer.encrypt(plaintext, buf), plaintext.len())
    }

    /// Encrypts a close_notify alert onto the end of `out`.
    pub(crate) fn close_notify(&mut self, out: &mut Vec<u8>) -> Result<(), rustls::Error> {
        self.with_writer(out, |writer, buf| writer.queue_close_notify(buf), 0)
    }

    fn with_writer(
        &mut self,
        out: &mut Vec<u8>,
        mut write: impl FnMut(&mut WriteTraffic<'_, ServerConnectionData>, &mut [u8]) -> Result<usize, EncryptError>,
        len: usize,
    ) -> Result<(), rustls::Error> {
        if self.failed {
            return Err(rustls::Error::General("the connection failed".into()));
        }
        for _ in 0..8 {
            let status = self.conn.process_tls_records(&mut []);
            match status.state? {
                ConnectionState::WriteTraffic(mut writer) => {
                    let at = out.len();
                    // A record adds at most 5 + 16 + 1 bytes (TLS 1.3) or 5 + 8 + 16 (TLS 1.2)
                    // per 16 KiB of plaintext.
                    let mut need = len + 64 * (len / (16 * 1024) + 1);
                    loop {
                        out.resize(at + need, 0);
                        match write(&mut writer, &mut out[at..]) {
                            Ok(n) => {
                                out.truncate(at + n);
                                return Ok(());
                            }
                            Err(EncryptError::InsufficientSize(InsufficientSizeError { required_size })) => {
                                need = required_size;
                            }
                            Err(EncryptError::EncryptExhausted) => {
                                out.truncate(at);
                                return Err(rustls::Error::EncryptError);
                            }
                        }
                    }
                }
                ConnectionState::EncodeTlsData(mut encode) => encode_into(&mut encode, &mut self.out),
                ConnectionState::TransmitTlsData(transmit) => transmit.done(),
                _ => return Err(rustls::Error::General("TLS not ready for application data".into())),
            }
        }
        Err(rustls::Error::General("TLS state machine did not settle".into()))
    }
}

/// Appends a handshake record (or an alert) rustls has ready to `out`.
fn encode_into(encode: &mut EncodeTlsData<'_, ServerConnectionData>, out: &mut Vec<u8>) {
    let at = out.len();
    let mut need = 1024;
    loop {
        out.resize(at + need, 0);
        match encode.encode(&mut out[at..]) {
            Ok(n) => return out.truncate(at + n),
            Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => need = required_size,
            Err(EncodeError::AlreadyEncoded) => return out.truncate(at),
        }
    }
}

/// A worker's buffers for TLS writes, reused by every connection: the plaintext gathered from a
/// write queue, and the records it became.
#[derive(Default)]
pub(crate) struct Scratch {
    pub(crate) plain: Vec<u8>,
    pub(crate) cipher: Vec<u8>,
}

/// Collects a write queue's buffers into one contiguous plaintext, up to a limit, so a turn's
/// small frames become one record rather than a record each.
pub(crate) struct Gather<'a> {
    pub(crate) buf: &'a mut Vec<u8>,
    pub(crate) limit: usize,
}

impl std::io::Write for Gather<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = self.limit.saturating_sub(self.buf.len());
        if room == 0 {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        Ok(n)
    }

    fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        let mut total = 0;
        for b in bufs {
            match self.write(b) {
                Ok(n) => {
                    total += n;
                    if n < b.len() {
                        break;
                    }
                }
                Err(e) if total == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(total)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A worker's TLS side: the shared settings, the config it cached from them, its scratch
/// buffers and its read buffer for records.
pub(crate) struct WorkerTls {
    pub(crate) shared: Arc<TlsShared>,
    generation: u64,
    config: Arc<ServerConfig>,
    pub(crate) scratch: Scratch,
    /// Where records are read; only a partial record's tail moves to its connection.
    pub(crate) rbuf: ReadBuf,
}

impl WorkerTls {
    pub(crate) fn new(shared: Arc<TlsShared>) -> WorkerTls {
        let (generation, config) = shared.current();
        WorkerTls { shared, generation, config, scratch: Scratch::default(), rbuf: ReadBuf::default() }
    }

    /// A connection's TLS state on the config serving now (the one a reload last installed).
    pub(crate) fn accept(&mut self) -> Result<Box<TlsConn>, rustls::Error> {
        self.shared.refresh(&mut self.generation, &mut self.config);
        TlsConn::new(self.config.clone())
    }
}
