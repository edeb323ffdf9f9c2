//! The local stack's state directory: the SQLite database and the credentials, generated once.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::LocalError;

/// Secrets kept in `<state-dir>/credentials.toml` (mode 0600).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credentials {
    pub api_key: String,
    pub token_secret: String,
}

pub fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

pub fn database_path(state_dir: &Path) -> PathBuf {
    state_dir.join("runvoy.db")
}

/// Loads the credentials, creating them on first start; `api_key` replaces the stored key.
pub fn credentials(state_dir: &Path, api_key: Option<&str>) -> Result<Credentials, LocalError> {
    let io = |e: std::io::Error| LocalError::State(state_dir.to_path_buf(), e.to_string());
    std::fs::create_dir_all(state_dir).map_err(io)?;
    let path = state_dir.join("credentials.toml");
    let mut creds = match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str::<Credentials>(&text).map_err(|e| {
            LocalError::State(
                path.clone(),
                format!(
                    "unreadable credentials ({}); delete the file to regenerate",
                    e.message()
                ),
            )
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Credentials {
            api_key: random_hex(24),
            token_secret: random_hex(32),
        },
        Err(e) => return Err(io(e)),
    };
    if let Some(k) = api_key {
        if k.len() < 8 {
            return Err(LocalError::Usage(
                "--api-key must be at least 8 characters".into(),
            ));
        }
        creds.api_key = k.to_string();
    }
    let text = toml::to_string(&creds).expect("credentials serialize");
    std::fs::write(&path, text).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    Ok(creds)
}
