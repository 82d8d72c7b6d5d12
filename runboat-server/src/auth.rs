//! Admin HTTP Basic authentication.
//!
//! Both the user and the password are compared in constant time (with
//! respect to where they differ), and both are always compared, so the
//! answer time tells nothing about which one was wrong.

use axum::http::{HeaderMap, header};
use base64::Engine;
use runboat_core::Secret;

use crate::error::ApiError;

/// The admin credentials from the settings.
#[derive(Debug, Clone)]
pub struct AdminCredentials {
    user: Secret,
    passwd: Secret,
}

impl AdminCredentials {
    /// Credentials to check requests against.
    pub fn new(user: &str, passwd: Secret) -> Self {
        AdminCredentials { user: Secret::new(user), passwd }
    }

    /// Ok when `headers` carry `Authorization: Basic` with these credentials,
    /// else [`ApiError::Unauthorized`].
    pub fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some((user, passwd)) = basic_credentials(headers) else {
            return Err(ApiError::Unauthorized);
        };
        // Evaluate both comparisons, whatever the first gives.
        let user_ok = self.user.matches(&user);
        let passwd_ok = self.passwd.matches(&passwd);
        if user_ok & passwd_ok { Ok(()) } else { Err(ApiError::Unauthorized) }
    }
}

/// The user and password of an `Authorization: Basic` header, if there is a
/// well-formed one.
pub fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, passwd) = decoded.split_once(':')?;
    Some((user.to_owned(), passwd.to_owned()))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use proptest::prelude::*;

    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).expect("header"));
        h
    }

    fn basic(user: &str, passwd: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{passwd}"))
        )
    }

    #[test]
    fn accepts_only_the_right_pair() {
        let creds = AdminCredentials::new("admin", Secret::new("s3cret"));
        assert!(creds.check(&headers(&basic("admin", "s3cret"))).is_ok());
        assert!(creds.check(&headers(&basic("admin", "s3cre"))).is_err());
        assert!(creds.check(&headers(&basic("admin", "s3cret!"))).is_err());
        assert!(creds.check(&headers(&basic("Admin", "s3cret"))).is_err());
        assert!(creds.check(&headers(&basic("", ""))).is_err());
        assert!(creds.check(&HeaderMap::new()).is_err());
        assert!(creds.check(&headers("Bearer abc")).is_err());
        assert!(creds.check(&headers("Basic !!!notbase64")).is_err());
    }

    #[test]
    fn password_may_contain_colons() {
        let creds = AdminCredentials::new("admin", Secret::new("a:b:c"));
        assert!(creds.check(&headers(&basic("admin", "a:b:c"))).is_ok());
        assert_eq!(
            basic_credentials(&headers(&basic("u", "p:q"))),
            Some(("u".to_owned(), "p:q".to_owned()))
        );
    }

    proptest! {
        #[test]
        fn any_header_is_handled_without_panic(value in "[ -~]{0,80}") {
            let creds = AdminCredentials::new("admin", Secret::new("pw"));
            if let Ok(h) = HeaderValue::from_str(&value) {
                let mut map = HeaderMap::new();
                map.insert(header::AUTHORIZATION, h);
                let _ = creds.check(&map);
            }
        }

        #[test]
        fn round_trips(user in "[a-z]{1,10}", passwd in "[ -~]{0,20}") {
            prop_assert_eq!(
                basic_credentials(&headers(&basic(&user, &passwd))),
                Some((user, passwd))
            );
        }
    }
}
