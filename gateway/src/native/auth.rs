//! Who a client is and which channels it may use: JWT HS256 tokens and channel patterns.
//!
//! Owns: `Claims`, token verification and minting (the `jsonwebtoken` crate), where a token may
//! come from in a request, and `Permissions`. Invariants: a token is never logged or echoed (the
//! `bearer.<token>` subprotocol entry is never selected); an expired, not yet valid (`nbf` in
//! the future) or badly signed token is refused at the handshake, `exp` and `nbf` with the same
//! leeway (`LEEWAY_SECS`); a pattern matches exactly, or as a prefix when it ends in `*`.

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use fanout::Request;

/// The claims fanout reads from a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who the client is (for the application; fanout only carries it).
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Not before: seconds since the Unix epoch before which the token is refused (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Channel patterns the client may subscribe to.
    #[serde(default)]
    pub subscribe: Vec<String>,
    /// Channel patterns the client may publish to.
    #[serde(default)]
    pub publish: Vec<String>,
}

/// What a connection may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Permissions {
    /// No token, allowed by configuration: every channel.
    Anonymous,
    Token {
        subscribe: Vec<String>,
        publish: Vec<String>,
    },
}

impl Permissions {
    pub fn may_subscribe(&self, channel: &str) -> bool {
        match self {
            Permissions::Anonymous => true,
            Permissions::Token { subscribe, .. } => subscribe.iter().any(|p| pattern_matches(p, channel)),
        }
    }

    pub fn may_publish(&self, channel: &str) -> bool {
        match self {
            Permissions::Anonymous => true,
            Permissions::Token { publish, .. } => publish.iter().any(|p| pattern_matches(p, channel)),
        }
    }
}

/// `news` matches only `news`; `chat:*` matches every channel starting with `chat:`; `*` all.
pub fn pattern_matches(pattern: &str, channel: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => channel.starts_with(prefix),
        None => pattern == channel,
    }
}

/// Seconds of clock difference allowed on both `exp` and `nbf`: a backend whose clock runs a
/// little ahead of this server's mints tokens with `nbf` = its now (many JWT libraries do), and
/// they must work at once; a few seconds more on `exp` is the same allowance the other way.
pub const LEEWAY_SECS: u64 = 5;

/// Why a token was refused (said in the 401 body; never contains the token).
pub fn verify(token: &str, secret: &str) -> Result<Claims, String> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = LEEWAY_SECS;
    // Off by default in jsonwebtoken: a token minted for later would be accepted at once.
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp", "sub"]);
    decode::<Claims>(token, &DecodingKey::from_secret(secret.as_bytes()), &validation).map(|data| data.claims).map_err(
        |e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => "token expired".to_string(),
            jsonwebtoken::errors::ErrorKind::ImmatureSignature => "token not yet valid (nbf)".to_string(),
            jsonwebtoken::errors::ErrorKind::InvalidSignature => "invalid token signature".to_string(),
            _ => "invalid token".to_string(),
        },
    )
}

/// Signs `claims` with HS256.
pub fn mint(claims: &Claims, secret: &str) -> String {
    encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret.as_bytes()))
        .expect("HS256 encoding of plain claims cannot fail")
}

/// The subprotocol prefix that carries a token: `Sec-WebSocket-Protocol: fanout.v1, bearer.<jwt>`.
pub const BEARER_PROTOCOL_PREFIX: &str = "bearer.";

/// The token a request carries, looked for in this order: the `token` query parameter, an
/// `Authorization: Bearer` header, the `fanout_token` cookie, a `bearer.<token>` subprotocol.
pub fn token_from_request<'a>(request: &'a Request<'_>) -> Option<&'a str> {
    request
        .query_param("token")
        .filter(|t| !t.is_empty())
        .or_else(|| bearer(request))
        .or_else(|| request.cookie("fanout_token").filter(|t| !t.is_empty()))
        .or_else(|| {
            request.offered_protocols().find_map(|p| p.strip_prefix(BEARER_PROTOCOL_PREFIX)).filter(|t| !t.is_empty())
        })
}

/// The credential of an `Authorization: Bearer <credential>` header.
pub fn bearer<'a>(request: &'a Request<'_>) -> Option<&'a str> {
    let value = request.header_str("authorization")?.trim();
    let (scheme, credential) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| credential.trim()).filter(|c| !c.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> Claims {
        Claims { sub: "alice".into(), exp, nbf: None, subscribe: vec!["news".into(), "chat:*".into()], publish: vec![] }
    }

    fn now() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
    }

    #[test]
    fn patterns() {
        assert!(pattern_matches("news", "news"));
        assert!(!pattern_matches("news", "news2"));
        assert!(pattern_matches("chat:*", "chat:lobby"));
        assert!(pattern_matches("chat:*", "chat:"));
        assert!(!pattern_matches("chat:*", "chat"));
        assert!(pattern_matches("*", "anything"));
    }

    #[test]
    fn verify_accepts_good_tokens_and_names_what_is_wrong_with_bad_ones() {
        let c = claims(now() + 60);
        let good = mint(&c, "s3cret");
        assert_eq!(verify(&good, "s3cret").unwrap(), c);
        assert_eq!(verify(&good, "other").unwrap_err(), "invalid token signature");
        assert_eq!(verify(&mint(&claims(now() - 10), "s3cret"), "s3cret").unwrap_err(), "token expired");
        assert_eq!(verify("not.a.token", "s3cret").unwrap_err(), "invalid token");
    }

    #[test]
    fn verify_honours_nbf_with_the_leeway_of_exp() {
        let valid = |nbf: Option<u64>, exp: u64| verify(&mint(&Claims { nbf, ..claims(exp) }, "s3cret"), "s3cret");
        let (now, leeway) = (now(), LEEWAY_SECS);
        assert_eq!(valid(Some(now + leeway + 60), now + 600).unwrap_err(), "token not yet valid (nbf)");
        assert_eq!(valid(Some(now + 1), now + 600).unwrap().nbf, Some(now + 1), "within the leeway");
        assert_eq!(valid(Some(now - 1), now + 600).unwrap().nbf, Some(now - 1));
        assert!(valid(None, now - 1).is_ok(), "exp has the same leeway");
        assert_eq!(valid(None, now - leeway - 10).unwrap_err(), "token expired");
        assert_eq!(valid(None, now + 600).unwrap().nbf, None, "nbf is optional");
    }

    #[test]
    fn permissions_follow_the_claims() {
        let p = Permissions::Token { subscribe: vec!["news".into(), "chat:*".into()], publish: vec!["chat:*".into()] };
        assert!(p.may_subscribe("chat:x") && p.may_subscribe("news") && !p.may_subscribe("sport"));
        assert!(p.may_publish("chat:x") && !p.may_publish("news"));
        assert!(Permissions::Anonymous.may_publish("anything"));
    }
}
