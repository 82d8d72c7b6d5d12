//! Where the server URL and the admin credentials come from: flags, then
//! `RUNBOAT_*` environment variables (both handled by clap), then the
//! config file, then the defaults.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

use crate::error::{Error, Result};

/// The server URL when none is given.
pub const DEFAULT_URL: &str = "http://localhost:8000";

/// A password. Its `Debug` never shows it and it has no `Display`: it only
/// leaves this type inside the `Authorization` header.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(password: impl Into<String>) -> Self {
        Password(password.into())
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

impl FromStr for Password {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(Password(s.to_owned()))
    }
}

/// The config file: every key optional, unknown keys refused.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub url: Option<String>,
    pub user: Option<String>,
    pub password: Option<Password>,
}

impl ConfigFile {
    /// Parses the TOML text of `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| Error::ConfigInvalid {
            path: path.to_owned(),
            // toml's message quotes the offending line, which may hold the
            // password: keep only its first line (what was wrong, where).
            reason: e.message().lines().next().unwrap_or("syntax error").to_owned(),
        })
    }

    /// Reads `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| Error::ConfigRead { path: path.to_owned(), source })?;
        ConfigFile::parse(path, &text)
    }
}

/// The default config file, `$XDG_CONFIG_HOME/runboat/cli.toml` (or
/// `~/.config/runboat/cli.toml`), when it exists.
pub fn default_config_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    let path = base.join("runboat").join("cli.toml");
    path.is_file().then_some(path)
}

/// The connection settings after resolution.
#[derive(Debug, Clone, PartialEq)]
pub struct Connection {
    pub url: String,
    pub user: Option<String>,
    pub password: Option<Password>,
}

impl Connection {
    /// Flags/env values (`Some` wins) over the file's, over the defaults.
    pub fn resolve(
        url: Option<String>,
        user: Option<String>,
        password: Option<Password>,
        file: ConfigFile,
    ) -> Connection {
        let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
        Connection {
            url: nonempty(url).or(nonempty(file.url)).unwrap_or_else(|| DEFAULT_URL.to_owned()),
            user: nonempty(user).or(nonempty(file.user)),
            password: password.or(file.password).filter(|p| !p.0.is_empty()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_redacted() {
        let c = Connection {
            url: DEFAULT_URL.into(),
            user: Some("admin".into()),
            password: Some(Password::new("hunter2")),
        };
        let debug = format!("{c:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("<redacted>"));
    }

    #[test]
    fn flags_win_over_file_over_defaults() {
        let file = ConfigFile {
            url: Some("http://file:1".into()),
            user: Some("fileuser".into()),
            password: Some(Password::new("filepw")),
        };
        let c = Connection::resolve(Some("http://flag:2".into()), None, None, file);
        assert_eq!(c.url, "http://flag:2");
        assert_eq!(c.user.as_deref(), Some("fileuser"));
        assert_eq!(c.password.as_ref().map(Password::expose), Some("filepw"));
        let c = Connection::resolve(None, None, None, ConfigFile::default());
        assert_eq!((c.url.as_str(), c.user, c.password), (DEFAULT_URL, None, None));
    }

    #[test]
    fn config_errors_name_the_key_and_never_the_password() {
        let path = Path::new("cli.toml");
        let err = ConfigFile::parse(path, "url = \"x\"\npasswd = \"hunter2\"\n").expect_err("bad");
        let msg = err.to_string();
        assert!(msg.contains("passwd"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
        let err = ConfigFile::parse(path, "password = hunter2\n").expect_err("bad");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let ok = ConfigFile::parse(path, "url = \"http://h\"\nuser = \"a\"\npassword = \"p\"\n")
            .expect("ok");
        assert_eq!(ok.user.as_deref(), Some("a"));
    }
}
