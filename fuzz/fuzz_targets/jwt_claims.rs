//! Fuzz target: JWT tokens and their claims (`fanout_gateway::native::auth::verify`, `mint`).
//! (Where a request carries a token is read by the request accessors `http_request` covers.)
//!
//! Structure-aware: a token's claims are read only once its HS256 signature checks, which random
//! bytes never pass. So the target signs what the input gives, as an issuer holding the secret
//! would, and `verify` then parses arbitrary headers and claims.
//! Input: `[mode]` then, by `mode % 3`:
//! - 0: header JSON, NUL, claims JSON, NUL, secret: signed by the target, then verified;
//! - 1: a token as a client might send it, verified against a fixed secret;
//! - 2: `[exp: 8 bytes]` then sub, NUL, subscribe patterns (one per line), NUL, publish
//!   patterns: minted as claims, then verified.
//!
//! Invariants checked, beyond "no panic, no hang":
//! - a refusal is one of the four documented reasons, which never echo the token;
//! - accepted claims are unexpired and already valid (`exp`, `nbf`, both with the leeway),
//!   round-trip through `mint`, and fail under another secret;
//! - minted claims verify to themselves while unexpired, and are refused as expired after;
//! - a guessed token never verifies.
#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use fanout_fuzz::Input;
use fanout_gateway::native::auth::{mint, verify, Claims, LEEWAY_SECS};
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;

const REASONS: [&str; 4] = ["token expired", "token not yet valid (nbf)", "invalid token signature", "invalid token"];

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_secs()
}

fn sign(header: &[u8], claims: &[u8], secret: &[u8]) -> String {
    let signing_input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

fn check_verified(token: &str, secret: &str) {
    match verify(token, secret) {
        Ok(claims) => {
            // Both times are taken with the same leeway; a second may pass between them and now.
            assert!(claims.exp.saturating_add(LEEWAY_SECS + 1) >= now(), "an expired token was accepted");
            assert!(claims.nbf.is_none_or(|nbf| nbf <= now() + LEEWAY_SECS), "a token not yet valid was accepted");
            if claims.exp > now() + LEEWAY_SECS {
                assert_eq!(verify(&mint(&claims, secret), secret), Ok(claims.clone()), "mint does not round-trip");
            }
            let other = format!("{secret}x");
            assert_eq!(verify(token, &other), Err("invalid token signature".to_string()));
        }
        Err(reason) => assert!(REASONS.contains(&reason.as_str()), "reason {reason:?}"),
    }
}

fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::to_owned).collect()
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    match input.byte() % 3 {
        0 => {
            let header = input.until(0);
            let claims = input.until(0);
            let secret = input.text_until(0);
            check_verified(&sign(header, claims, secret.as_bytes()), &secret);
        }
        1 => {
            let token = String::from_utf8_lossy(input.rest());
            let answer = verify(&token, "fuzz-secret");
            assert!(answer.as_ref().is_err_and(|r| REASONS.contains(&r.as_str())), "{answer:?}");
        }
        _ => {
            let exp = u64::from_le_bytes(std::array::from_fn(|_| input.byte()));
            let sub = input.text_until(0);
            let subscribe = lines(&input.text_until(0));
            let publish = lines(&input.text_until(0));
            let claims = Claims { sub, exp, nbf: None, subscribe, publish };
            let answer = verify(&mint(&claims, "s3cret"), "s3cret");
            let now = now();
            if exp > now + LEEWAY_SECS {
                assert_eq!(answer, Ok(claims), "unexpired claims do not round-trip");
            } else if exp.saturating_add(LEEWAY_SECS + 1) < now {
                assert_eq!(answer, Err("token expired".to_string()));
            }
        }
    }
});
