//! The CLI configuration file, `$XDG_CONFIG_HOME/runvoy/config.toml` (default
//! `~/.config/runvoy/config.toml`): one profile per environment, written by `deploy up` and read
//! by `runvoy`.
//!
//! ```toml
//! default_profile = "local"
//! [profiles.local]
//! api_url = "http://127.0.0.1:8787"
//! api_key = "…"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}; check that the directory is writable")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid runvoy config file: {detail}; fix or delete it")]
    Parse { path: PathBuf, detail: String },
    #[error("neither XDG_CONFIG_HOME nor HOME is set, so there is no place for the config file")]
    NoHome,
}

/// One environment's connection details.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub api_url: String,
    pub api_key: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_profile: Option<String>,
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

/// Where the config file lives, from the environment.
pub fn default_path() -> Result<PathBuf, ConfigError> {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(x).join("runvoy").join("config.toml"));
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .ok_or(ConfigError::NoHome)?;
    Ok(PathBuf::from(home)
        .join(".config")
        .join("runvoy")
        .join("config.toml"))
}

impl Config {
    /// Reads the file; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.into(),
                    source,
                });
            }
        };
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            detail: e.message().to_string(),
        })
    }

    /// Writes the file atomically (temp file + rename), readable only by its owner.
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let write = |source| ConfigError::Write {
            path: path.into(),
            source,
        };
        if let Some(dir) = path.parent() {
            create_private_dir(dir).map_err(write)?;
        }
        let text = toml::to_string_pretty(self).expect("config always serializes");
        write_private(path, text.as_bytes()).map_err(write)
    }

    /// Sets a profile, making it the default when there is none yet.
    pub fn upsert(&mut self, name: &str, profile: Profile) {
        self.profiles.insert(name.to_string(), profile);
        if self.default_profile.is_none() {
            self.default_profile = Some(name.to_string());
        }
    }

    /// The named profile, or the default one.
    pub fn profile(&self, name: Option<&str>) -> Option<&Profile> {
        let name = name.or(self.default_profile.as_deref())?;
        self.profiles.get(name)
    }
}

/// Creates `dir` (and its parents) readable by its owner only (0700 on Unix); an existing one
/// keeps its mode.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

/// Writes a file holding secrets: created readable by its owner only (0600 on Unix) from its
/// first byte — never written first and restricted after — and put in place atomically.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension(format!(
        "tmp{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    ));
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let result = o.open(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    match result.and_then(|()| std::fs::rename(&tmp, path)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_keeps_other_profiles() {
        let dir = std::env::temp_dir().join(format!("runvoy-config-{}", std::process::id()));
        let path = dir.join("runvoy/config.toml");
        let mut c = Config::load(&path).unwrap();
        assert_eq!(c, Config::default());
        c.upsert(
            "prod",
            Profile {
                api_url: "https://p".into(),
                api_key: "kp".into(),
            },
        );
        c.upsert(
            "local",
            Profile {
                api_url: "http://l".into(),
                api_key: "kl".into(),
            },
        );
        c.save(&path).unwrap();
        let back = Config::load(&path).unwrap();
        assert_eq!(back.default_profile.as_deref(), Some("prod"));
        assert_eq!(back.profile(Some("local")).unwrap().api_key, "kl");
        assert_eq!(back.profile(None).unwrap().api_url, "https://p");
        std::fs::write(&path, "profiles = 3").unwrap();
        assert!(matches!(
            Config::load(&path),
            Err(ConfigError::Parse { .. })
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
