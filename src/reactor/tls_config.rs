//! The server's TLS settings: the certificate and key files read into one rustls `ServerConfig`,
//! shared by every worker, swapped whole on a reload; the file watch; the serving
//! certificate's expiry.
//!
//! Owns: `TlsShared`, building a `ServerConfig` from the PEM files, the watch thread, and a
//! minimal DER walk to the certificate's notAfter. A leaf: it knows no worker and no connection.
//! Invariants: a handshake always uses one complete pair (the config is replaced, never edited);
//! a pair that fails to load (unreadable, not PEM, a key that does not match the certificate)
//! leaves the serving one in place and says why; established connections keep the config they
//! started with (each holds its own `Arc`); the session cache and the ticket key outlive reloads,
//! so a client resumes across them; a worker reads the shared config only when the generation
//! it cached is stale (one relaxed load per TLS accept).

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ProducesTickets, ServerSessionMemoryCache, StoresServerSessions};
use rustls::ServerConfig;

/// Sessions the server remembers for TLS 1.2 resumption by id (a few hundred bytes each); TLS 1.3
/// clients resume with tickets, which the server does not store.
const SESSION_CACHE: usize = 1024;

/// The TLS configuration all workers of one server share.
pub(crate) struct TlsShared {
    cert: PathBuf,
    key: PathBuf,
    current: Mutex<Arc<ServerConfig>>,
    /// Bumped by every successful reload; workers compare it with the one they cached.
    generation: AtomicU64,
    /// The serving certificate's notAfter, in seconds since the Unix epoch (0: unknown).
    expiry: AtomicU64,
    /// What the files looked like when last loaded (or tried), for the watch.
    seen: Mutex<Stamp>,
    sessions: Arc<dyn StoresServerSessions>,
    ticketer: Arc<dyn ProducesTickets>,
}

/// What identifies a version of the two files without reading them.
type Stamp = [(u64, u64, i64, i64); 2];

impl TlsShared {
    /// Loads the pair; the error names the file and what is wrong with it.
    pub(crate) fn load(cert: &Path, key: &Path) -> io::Result<TlsShared> {
        let ticketer = rustls::crypto::ring::Ticketer::new().map_err(io::Error::other)?;
        let sessions: Arc<dyn StoresServerSessions> = ServerSessionMemoryCache::new(SESSION_CACHE);
        let seen = stamp(cert, key);
        let (config, expiry) = build(cert, key, &sessions, &ticketer)?;
        Ok(TlsShared {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: Mutex::new(config),
            generation: AtomicU64::new(1),
            expiry: AtomicU64::new(expiry),
            seen: Mutex::new(seen),
            sessions,
            ticketer,
        })
    }

    /// Reads the files again: new handshakes use the new pair; on error the serving pair stays.
    pub(crate) fn reload(&self) -> io::Result<()> {
        *self.seen.lock().unwrap_or_else(PoisonError::into_inner) = stamp(&self.cert, &self.key);
        let (config, expiry) = build(&self.cert, &self.key, &self.sessions, &self.ticketer)?;
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = config;
        self.expiry.store(expiry, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// True when either file changed since it was last loaded (or tried).
    fn files_changed(&self) -> bool {
        *self.seen.lock().unwrap_or_else(PoisonError::into_inner) != stamp(&self.cert, &self.key)
    }

    /// Refreshes `cached` if a reload happened since `generation` was read.
    pub(crate) fn refresh(&self, generation: &mut u64, cached: &mut Arc<ServerConfig>) {
        let now = self.generation.load(Ordering::Acquire);
        if now != *generation {
            *cached = self.current.lock().unwrap_or_else(PoisonError::into_inner).clone();
            *generation = now;
        }
    }

    /// The serving config and its generation.
    pub(crate) fn current(&self) -> (u64, Arc<ServerConfig>) {
        let generation = self.generation.load(Ordering::Acquire);
        (generation, self.current.lock().unwrap_or_else(PoisonError::into_inner).clone())
    }

    /// The serving certificate's notAfter, in seconds since the Unix epoch.
    pub(crate) fn expiry(&self) -> u64 {
        self.expiry.load(Ordering::Relaxed)
    }
}

/// Checks the files every `interval` on a thread of its own, and reloads a changed pair, until
/// `live` says the server is gone or stopping. A pair that fails is logged once per change.
pub(crate) fn watch<T: Send + Sync + 'static>(
    owner: Weak<T>,
    tls: impl Fn(&T) -> Option<&TlsShared> + Send + 'static,
    live: impl Fn(&T) -> bool + Send + 'static,
    interval: Duration,
) -> io::Result<()> {
    std::thread::Builder::new().name("fanout-tls-watch".into()).spawn(move || loop {
        std::thread::sleep(interval);
        let Some(owner) = owner.upgrade() else { return };
        if !live(&owner) {
            return;
        }
        let Some(shared) = tls(&owner) else { return };
        if shared.files_changed() {
            match shared.reload() {
                Ok(()) => log::info!("tls: {} changed: new handshakes use it", shared.cert.display()),
                Err(e) => log::warn!("tls: keeping the serving certificate: {e}"),
            }
        }
    })?;
    Ok(())
}

fn stamp(cert: &Path, key: &Path) -> Stamp {
    let of = |path: &Path| fs::metadata(path).map_or((0, 0, 0, 0), |m| (m.ino(), m.len(), m.mtime(), m.mtime_nsec()));
    [of(cert), of(key)]
}

fn bad(path: &Path, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{}: {what}", path.display()))
}

/// A `ServerConfig` from the PEM files, and the leaf certificate's notAfter.
fn build(
    cert: &Path,
    key: &Path,
    sessions: &Arc<dyn StoresServerSessions>,
    ticketer: &Arc<dyn ProducesTickets>,
) -> io::Result<(Arc<ServerConfig>, u64)> {
    let cert_pem = fs::read(cert).map_err(|e| bad(cert, e))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(cert, format_args!("not a PEM certificate chain ({e})")))?;
    let Some(leaf) = chain.first() else {
        return Err(bad(cert, "no CERTIFICATE block"));
    };
    let expiry = not_after(leaf).ok_or_else(|| bad(cert, "the first certificate is not valid DER"))?;
    let key_pem = fs::read(key).map_err(|e| bad(key, e))?;
    let key_der =
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| bad(key, format_args!("no PEM private key ({e})")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| bad(key, format_args!("does not fit {}: {e}", cert.display())))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.session_storage = sessions.clone();
    config.ticketer = ticketer.clone();
    Ok((Arc::new(config), expiry))
}

/// The certificate's notAfter in seconds since the Unix epoch (RFC 5280 §4.1: Certificate ::=
/// SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber, signature, issuer,
/// validity SEQUENCE { notBefore, notAfter }, ... } ... }). A walk of five TLVs: a crate for
/// X.509 would bring a DER derive (syn) into the library's build for this one field.
pub(crate) fn not_after(der: &[u8]) -> Option<u64> {
    let (_, cert, _) = tlv(der)?;
    let (_, mut tbs, _) = tlv(cert)?;
    let (tag, _, rest) = tlv(tbs)?;
    if tag == 0xA0 {
        tbs = rest; // the explicit version
    }
    for _ in 0..3 {
        tbs = tlv(tbs)?.2; // serial, signature algorithm, issuer
    }
    let (_, validity, _) = tlv(tbs)?;
    let (_, _, validity) = tlv(validity)?; // notBefore
    let (tag, time, _) = tlv(validity)?;
    parse_time(tag, time)
}

/// One DER TLV off the front: (tag, value, rest).
fn tlv(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, der) = der.split_first()?;
    let (&first, mut der) = der.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7F);
        if n == 0 || n > 4 || der.len() < n {
            return None;
        }
        let len = der[..n].iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        der = &der[n..];
        len
    };
    (der.len() >= len).then(|| (tag, &der[..len], &der[len..]))
}

/// UTCTime (0x17, YYMMDDHHMMSSZ, years 1950-2049) or GeneralizedTime (0x18, YYYYMMDDHHMMSSZ).
fn parse_time(tag: u8, text: &[u8]) -> Option<u64> {
    let digits = |s: &[u8]| -> Option<u64> {
        s.iter().try_fold(0u64, |acc, &b| b.is_ascii_digit().then(|| acc * 10 + u64::from(b - b'0')))
    };
    let (year, rest) = match (tag, text.len()) {
        (0x17, 13) => {
            let yy = digits(&text[..2])?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &text[2..])
        }
        (0x18, 15) => (digits(&text[..4])?, &text[4..]),
        _ => return None,
    };
    if rest[10] != b'Z' {
        return None;
    }
    let field = |i: usize| digits(&rest[i..i + 2]);
    let (month, day, hour, minute, second) = (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || year < 1970 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm), for years from 1970.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe).checked_sub(719_468)?;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Seconds since the Unix epoch as a `SystemTime`.
pub(crate) fn unix_time(seconds: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_both_encodings() {
        assert_eq!(parse_time(0x17, b"700101000000Z"), Some(0));
        assert_eq!(parse_time(0x17, b"491231235959Z"), Some(2_524_607_999));
        assert_eq!(parse_time(0x18, b"20380119031408Z"), Some(2_147_483_648));
        assert_eq!(parse_time(0x18, b"20000229120000Z"), Some(951_825_600));
        assert_eq!(parse_time(0x17, b"700101000000+"), None);
        assert_eq!(parse_time(0x17, b"701301000000Z"), None);
        assert_eq!(parse_time(0x05, b"700101000000Z"), None);
    }

    #[test]
    fn truncated_der_is_refused_not_panicked_on() {
        let cert = [0x30, 0x82, 0x01];
        assert_eq!(not_after(&cert), None);
        assert_eq!(not_after(&[]), None);
        assert_eq!(tlv(&[0x02, 0x01, 0x07, 0xFF]), Some((0x02, &[0x07][..], &[0xFF][..])));
        assert_eq!(tlv(&[0x02, 0x85, 0, 0, 0, 0, 1]), None);
    }
}
