//! TLS for `wss://` URLs: the one rustls client configuration of a run and the names servers'
//! certificates are checked against.
//!
//! Owns: `client_config` (trust a PEM file, or anything with `--tls-insecure`; ALPN `http/1.1`;
//! session resumption only with `--tls-resume`, so that by default every upgrade pays for a full
//! handshake, the cost a reconnect storm of new clients puts on a server) and `server_name`.
//! The bytes of a TLS connection are moved by `net`. Must not: open sockets or know any scenario.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::{ring, verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The client side of every `wss://` connection of the run.
pub fn client_config(ca: Option<&Path>, insecure: bool, resume: bool) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let mut config = match (ca, insecure) {
        (Some(_), true) => return Err("--tls-ca and --tls-insecure: give one".into()),
        (None, false) => return Err("wss:// needs --tls-ca FILE (the server's CA) or --tls-insecure".into()),
        (Some(file), false) => {
            let mut roots = RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(file)
                .map_err(|e| format!("--tls-ca {}: {e}", file.display()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("--tls-ca {}: {e}", file.display()))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!("--tls-ca {}: no certificate in it", file.display()));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        (None, true) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    if !resume {
        config.resumption = Resumption::disabled();
    }
    Ok(Arc::new(config))
}

/// The name in a `wss://` URL's authority (`localhost:9443` -> `localhost`), as TLS checks it.
pub fn server_name(authority: &str) -> Result<ServerName<'static>, String> {
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    };
    ServerName::try_from(host.to_owned()).map_err(|e| format!("{host:?}: not a TLS server name: {e}"))
}

/// `--tls-insecure`: every certificate is taken, but the handshake's signatures are still
/// checked, so the server does all the work of a real handshake.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_authority() {
        assert_eq!(server_name("localhost:9443").unwrap(), ServerName::try_from("localhost").unwrap());
        assert_eq!(server_name("127.0.0.1").unwrap(), ServerName::try_from("127.0.0.1").unwrap());
        assert!(server_name("bad name:1").is_err());
    }

    #[test]
    fn a_config_needs_a_ca_or_insecure() {
        assert!(client_config(None, false, false).is_err());
        assert!(client_config(None, true, false).is_ok());
        assert!(client_config(None, true, true).is_ok());
        assert!(client_config(Some(Path::new("/nonexistent.pem")), false, false).is_err());
    }
}
