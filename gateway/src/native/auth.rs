//! Who a client is and which channels it may use: JWT HS256 tokens and channel patterns.
//!
//! Owns: `Claims`, token verification and minting (the `jsonwebtoken` crate), where a token may
//! come from in a request, and `Permissions`. Invariants: a token is never logged or echoed (the
//! `bearer.<token>` subprotocol entry is never selected); an expired or badly signed token is
//! refused at the handshake; a pattern matches exactly, or as a prefix when it ends in `*`.

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

/// Why a token was refused (said in the 401 body; never contains the token).
pub fn verify(token: &str, secret: &str) -> Result<Claims, String> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 0;
    validation.set_required_spec_claims(&["exp", "sub"]);
    decode::<Claims>(token, &DecodingKey::from_secret(secret.as_bytes()), &validation).map(|data| data.claims).map_err(
        |e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => "token expired".to_string(),
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
        Claims { sub: "alice".into(), exp, subscribe: vec!["news".into(), "chat:*".into()], publish: vec![] }
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
    fn permissions_follow_the_claims() {
        let p = Permissions::Token { subscribe: vec!["news".into(), "chat:*".into()], publish: vec!["chat:*".into()] };
        assert!(p.may_subscribe("chat:x") && p.may_subscribe("news") && !p.may_subscribe("sport"));
        assert!(p.may_publish("chat:x") && !p.may_publish("news"));
        assert!(Permissions::Anonymous.may_publish("anything"));
    }
}
