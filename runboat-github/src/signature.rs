//! Webhook signature verification: `X-Hub-Signature-256: sha256=<hex>` is
//! the HMAC-SHA256 of the raw request body keyed with the webhook secret.
//!
//! The comparison is constant time (`hmac`'s `verify_slice`), so a forger
//! learns nothing from how long a rejection takes.

use std::fmt;

use hmac::{KeyInit, Mac};

use crate::error::SignatureError;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The header GitHub puts the signature in.
pub const SIGNATURE_HEADER: &str = "X-Hub-Signature-256";

const PREFIX: &str = "sha256=";
const DIGEST_LEN: usize = 32;

/// The webhook secret shared with GitHub. Its `Debug` never shows it.
#[derive(Clone)]
pub struct WebhookSecret(Vec<u8>);

impl WebhookSecret {
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        Self(secret.into())
    }

    /// The secret from configuration, where unset and empty both mean "no
    /// secret" (the server then refuses to start unless unsigned webhooks
    /// are explicitly allowed).
    pub fn from_config(secret: Option<&str>) -> Option<Self> {
        secret.filter(|s| !s.is_empty()).map(Self::new)
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length: this cannot fail.
        match HmacSha256::new_from_slice(&self.0) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC accepts keys of any length"),
        }
    }

    /// Check `header` (the value of `X-Hub-Signature-256`, if present)
    /// against `body`, the raw bytes exactly as received.
    pub fn verify(&self, header: Option<&str>, body: &[u8]) -> Result<(), SignatureError> {
        let header = header.ok_or(SignatureError::Missing)?;
        let hex_digest = header
            .strip_prefix(PREFIX)
            .ok_or(SignatureError::Malformed { reason: "expected the sha256= prefix" })?;
        if hex_digest.len() != DIGEST_LEN * 2 {
            return Err(SignatureError::Malformed { reason: "expected 64 hex digits" });
        }
        let tag = hex::decode(hex_digest)
            .map_err(|_| SignatureError::Malformed { reason: "expected 64 hex digits" })?;
        let mut mac = self.mac();
        mac.update(body);
        mac.verify_slice(&tag).map_err(|_| SignatureError::Mismatch)
    }

    /// The header value GitHub would send for `body` (`sha256=<hex>`): for
    /// tests, simulators and tools that replay webhooks.
    pub fn sign(&self, body: &[u8]) -> String {
        let mut mac = self.mac();
        mac.update(body);
        format!("{PREFIX}{}", hex::encode(mac.finalize().into_bytes()))
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const BODY: &[u8] = br#"{"zen":"Keep it logically awesome.","hook_id":1}"#;

    fn secret() -> WebhookSecret {
        WebhookSecret::new("It's a Secret to Everybody")
    }

    #[test]
    fn github_documented_example_verifies() {
        // The example from GitHub's "Validating webhook deliveries" page.
        let header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(secret().verify(Some(header), b"Hello, World!"), Ok(()));
        assert_eq!(secret().sign(b"Hello, World!"), header);
    }

    #[test]
    fn valid_signature_is_accepted() {
        let header = secret().sign(BODY);
        assert_eq!(secret().verify(Some(&header), BODY), Ok(()));
    }

    #[test]
    fn upper_case_hex_is_accepted() {
        let header = secret().sign(BODY);
        let upper = format!("sha256={}", header["sha256=".len()..].to_uppercase());
        assert_eq!(secret().verify(Some(&upper), BODY), Ok(()));
    }

    #[test]
    fn invalid_signature_is_a_mismatch() {
        let header = format!("sha256={}", "ab".repeat(32));
        assert_eq!(secret().verify(Some(&header), BODY), Err(SignatureError::Mismatch));
    }

    #[test]
    fn signature_with_another_secret_is_a_mismatch() {
        let header = WebhookSecret::new("other").sign(BODY);
        assert_eq!(secret().verify(Some(&header), BODY), Err(SignatureError::Mismatch));
    }

    #[test]
    fn missing_header_is_rejected() {
        assert_eq!(secret().verify(None, BODY), Err(SignatureError::Missing));
    }

    #[test]
    fn sha1_prefix_is_malformed() {
        let header = format!("sha1={}", "ab".repeat(20));
        assert_eq!(
            secret().verify(Some(&header), BODY),
            Err(SignatureError::Malformed { reason: "expected the sha256= prefix" })
        );
        // Even a correct digest under the wrong prefix is refused.
        let good = secret().sign(BODY).replace("sha256=", "sha1=");
        assert!(matches!(
            secret().verify(Some(&good), BODY),
            Err(SignatureError::Malformed { .. })
        ));
    }

    #[test]
    fn bad_hex_and_bad_length_are_malformed() {
        for header in [
            "sha256=".to_owned(),
            format!("sha256={}", "zz".repeat(32)),
            format!("sha256={}", "ab".repeat(31)),
            format!("sha256={}", "ab".repeat(33)),
            format!(" sha256={}", "ab".repeat(32)),
            "SHA256=00".to_owned(),
        ] {
            assert!(
                matches!(
                    secret().verify(Some(&header), BODY),
                    Err(SignatureError::Malformed { .. })
                ),
                "{header}"
            );
        }
    }

    #[test]
    fn body_altered_by_one_byte_is_a_mismatch() {
        let header = secret().sign(BODY);
        for i in 0..BODY.len() {
            let mut altered = BODY.to_vec();
            altered[i] ^= 0x01;
            assert_eq!(secret().verify(Some(&header), &altered), Err(SignatureError::Mismatch));
        }
        let mut longer = BODY.to_vec();
        longer.push(b'\n');
        assert_eq!(secret().verify(Some(&header), &longer), Err(SignatureError::Mismatch));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let debug = format!("{:?}", secret());
        assert!(!debug.contains("Secret to Everybody"), "{debug}");
    }

    #[test]
    fn empty_configured_secret_means_none() {
        assert!(WebhookSecret::from_config(None).is_none());
        assert!(WebhookSecret::from_config(Some("")).is_none());
        assert!(WebhookSecret::from_config(Some("s")).is_some());
    }

    proptest! {
        #[test]
        fn any_change_to_body_or_secret_fails(
            secret_bytes in proptest::collection::vec(any::<u8>(), 0..64),
            body in proptest::collection::vec(any::<u8>(), 0..512),
            other_secret in proptest::collection::vec(any::<u8>(), 0..64),
            other_body in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let secret = WebhookSecret::new(secret_bytes.clone());
            let header = secret.sign(&body);
            prop_assert_eq!(secret.verify(Some(&header), &body), Ok(()));
            if other_body != body {
                prop_assert_eq!(secret.verify(Some(&header), &other_body), Err(SignatureError::Mismatch));
            }
            // HMAC pads short keys with zeros, so keys that differ only by
            // trailing zero bytes are the same key: compare them that way.
            let trimmed = |k: &[u8]| k.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
            if other_secret[..trimmed(&other_secret)] != secret_bytes[..trimmed(&secret_bytes)] {
                let other = WebhookSecret::new(other_secret);
                prop_assert_eq!(other.verify(Some(&header), &body), Err(SignatureError::Mismatch));
            }
        }

        #[test]
        fn arbitrary_headers_never_panic(header in ".{0,100}", body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = secret().verify(Some(&header), &body);
        }
    }
}
