//! A TLS connection's I/O: records read and decrypted into the plaintext path, queued plaintext
//! encrypted and written.
//!
//! Owns: the TLS branch of reading (`on_readable_tls`) and of flushing (`flush_tls`), and the
//! TLS outcomes (plain HTTP on the TLS port, a failed handshake, close_notify). Must not: parse
//! TLS (that is `tls.rs`, over rustls) or WebSocket and HTTP (decrypted bytes go to `process`
//! like a plain connection's). Invariants: records are read into the worker's record buffer and
//! only a partial record's tail stays with the connection; plaintext takes the plain path's
//! buffers (`stash` keeps an incomplete frame's tail); a flush gathers at most `CHUNK` bytes of
//! plaintext at a time, encrypts them into the worker's scratch and writes them with one `send`,
//! so under backpressure the pending bytes stay plaintext in the write queue, counted against
//! its cap, and the connection holds at most one chunk of ciphertext; nothing is encrypted
//! before the handshake ends.

use std::io::{self, Read, Write};
use std::mem;

use bytes::Buf;

use super::connection::Phase;
use super::proxy::HeaderStep;
use super::read::{AfterRead, ReadUntil, ADOPT_LIMIT, MIN_READ, READ_BLOCK};
use super::read_buf::ReadBuf;
use super::service::Service;
use super::tls::{Gather, Received};
use super::token::ConnId;
use super::worker::{get, Worker};

/// Plaintext encrypted and written at a time: four full records.
const CHUNK: usize = 64 * 1024;

impl<S: Service> Worker<S> {
    /// `on_readable` for a TLS connection: reads records until the socket is empty (or the
    /// budget runs out), decrypting as they come.
    pub(super) fn on_readable_tls(&mut self, id: ConnId, until: ReadUntil) {
        let Some(tls) = self.tls.as_mut() else { return };
        let Some(conn) = get(&mut self.conns, id) else { return };
        let Some(state) = conn.tls.as_mut() else { return };
        let mut records = mem::take(&mut tls.rbuf);
        if !state.tail.is_empty() {
            records.append(&state.tail);
            state.tail = ReadBuf::default();
        }
        let mut reads = 0;
        while let Some(conn) = get(&mut self.conns, id) {
            let room = records.spare(MIN_READ, READ_BLOCK);
            let offered = room.len();
            match (&conn.stream).read(room) {
                Ok(0) => {
                    self.stash_records(id, records);
                    self.peer_closed(id);
                    return;
                }
                Ok(n) => {
                    records.commit(n);
                    self.metrics.bytes_in.add(n as u64);
                    // A PROXY header precedes the TLS records.
                    let ready = match self.take_proxy_header(id, &mut records) {
                        HeaderStep::Ready => true,
                        HeaderStep::Wait => false,
                        HeaderStep::Closed => break,
                    };
                    if ready && !self.decrypt(id, &mut records) {
                        break;
                    }
                    reads += 1;
                    match self.after_read(id, until, n, offered, reads) {
                        AfterRead::Again => {}
                        AfterRead::Stop | AfterRead::Yield => break,
                        end => {
                            self.stash_records(id, records);
                            self.end_read(id, end);
                            return;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.stash_records(id, records);
                    self.remove(id);
                    return;
                }
            }
        }
        self.stash_records(id, records);
        if let Some(conn) = get(&mut self.conns, id) {
            if conn.dirty {
                conn.dirty = false;
                self.flush(id);
            }
        }
    }

    /// Keeps a partial record with its connection (a copy of exactly its size); the block goes
    /// back to the worker.
    fn stash_records(&mut self, id: ConnId, mut records: ReadBuf) {
        if let Some(state) = get(&mut self.conns, id).and_then(|c| c.tls.as_mut()) {
            if !records.is_empty() {
                state.tail = records.take_copy();
            }
        } else {
            drop(records.take_filled());
        }
        if let Some(tls) = self.tls.as_mut() {
            tls.rbuf = records;
        }
    }

    /// Runs the received records through the connection's TLS and the plaintext through
    /// `process`. Returns false when reading should stop (the connection ended or failed).
    fn decrypt(&mut self, id: ConnId, records: &mut ReadBuf) -> bool {
        let Some(conn) = get(&mut self.conns, id) else { return false };
        let Some(state) = conn.tls.as_mut() else { return false };
        // The plaintext joins an incomplete frame's tail, as `on_readable` does.
        let own = conn.rbuf.filled() >= ADOPT_LIMIT;
        let mut plain = if own {
            mem::take(&mut conn.rbuf)
        } else {
            let mut worker_buf = mem::take(&mut self.rbuf);
            if !conn.rbuf.is_empty() {
                worker_buf.append(&conn.rbuf);
                conn.rbuf = ReadBuf::default();
            }
            worker_buf
        };
        let mut data = records.take_filled();
        let (used, received) = state.receive(&mut data, &mut plain);
        data.advance(used);
        records.give_back(data);
        let wrote = state.has_out();
        if !state.counted && !state.is_handshaking() && !state.failed {
            state.counted = true;
            self.metrics.tls_handshakes.add(1);
            if state.resumed() {
                self.metrics.tls_resumed.add(1);
            }
        }
        if wrote {
            self.mark_dirty(id);
        }
        if !plain.is_empty() {
            self.process(id, &mut plain);
        }
        self.stash(id, plain, own);
        match received {
            Received::More => get(&mut self.conns, id).is_some(),
            Received::PeerClosed => {
                self.peer_closed(id);
                false
            }
            Received::PlainHttp => {
                log::debug!("connection {id}: plain HTTP on the TLS port");
                self.metrics.tls_plain_http.add(1);
                self.end_tls(id);
                false
            }
            Received::Failed(e) => {
                log::debug!("connection {id}: TLS: {e}");
                self.metrics.tls_failures.add(1);
                self.end_tls(id);
                false
            }
        }
    }

    /// Ends a connection whose TLS failed: its last bytes (an alert, or the answer to plain
    /// HTTP) go out, then the close; an HTTP phase counts as a refused handshake.
    fn end_tls(&mut self, id: ConnId) {
        let Some(conn) = get(&mut self.conns, id) else { return };
        if conn.phase == Phase::Handshake {
            self.metrics.handshake_failures.add(1);
            self.metrics.handshake_bad_requests.add(1);
        }
        // Frames queued for a connection that can no longer encrypt are dropped.
        conn.wq.clear(&self.metrics.queued_bytes);
        conn.rbuf = ReadBuf::default();
        self.close_and_linger(id, crate::proto::CloseCode::ABNORMAL, "TLS failed");
    }

    /// `flush` for a TLS connection: what is pending goes out first; then queued plaintext is
    /// gathered a chunk at a time, encrypted and written until the socket is full.
    pub(super) fn flush_tls(&mut self, id: ConnId) {
        let Some(tls) = self.tls.as_mut() else { return };
        let Some(conn) = get(&mut self.conns, id) else { return };
        let Some(state) = conn.tls.as_mut() else { return };
        let mut bytes = 0;
        let mut calls = 0;
        let mut failed = false;
        loop {
            if state.has_out() {
                calls += 1;
                match (&conn.stream).write(&state.out[state.out_written..]) {
                    Ok(0) => {
                        failed = true;
                        break;
                    }
                    Ok(n) => {
                        bytes += n;
                        state.wrote(n);
                        if state.has_out() {
                            break; // the socket is full
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            if state.failed {
                conn.wq.clear(&self.metrics.queued_bytes);
                break;
            }
            if conn.wq.is_empty() || state.is_handshaking() {
                break;
            }
            let scratch = &mut tls.scratch;
            scratch.plain.clear();
            let mut gather = Gather { buf: &mut scratch.plain, limit: CHUNK };
            if conn.wq.write_to(&mut gather, &self.metrics.queued_bytes).is_err() {
                failed = true;
                break;
            }
            scratch.cipher.clear();
            if let Err(e) = state.encrypt(&scratch.plain, &mut scratch.cipher) {
                log::debug!("connection {id}: TLS: {e}");
                failed = true;
                break;
            }
            // What rustls owed first (a ticket, a key update) is already in `out`: the new
            // records go behind it.
            if state.has_out() {
                state.out.extend_from_slice(&scratch.cipher);
                continue;
            }
            calls += 1;
            match (&conn.stream).write(&scratch.cipher) {
                Ok(n) if n == scratch.cipher.len() => bytes += n,
                Ok(n) => {
                    bytes += n;
                    state.out = scratch.cipher[n..].to_vec();
                    state.out_written = 0;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {
                    state.out = scratch.cipher.clone();
                    state.out_written = 0;
                    break;
                }
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        self.metrics.bytes_out.add(bytes as u64);
        self.metrics.writev_calls.add(calls);
        if failed {
            return self.remove(id);
        }
        let Some(conn) = get(&mut self.conns, id) else { return };
        let Some(state) = conn.tls.as_mut() else { return };
        let handshaking = state.is_handshaking() && !state.failed;
        let pending = state.has_out() || (!conn.wq.is_empty() && !handshaking);
        if !pending && conn.phase == Phase::Lingering && !state.failed && !handshaking {
            // The last word of TLS before our FIN; best effort, as the FIN itself.
            let mut notify = Vec::new();
            if state.close_notify(&mut notify).is_ok() {
                let _ = (&conn.stream).write(&notify);
            }
        }
        self.after_write(id, pending);
    }
}
