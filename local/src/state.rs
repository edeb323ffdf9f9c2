//! The local stack's state directory: the SQLite database and the credentials, generated once.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use runvoy_runtime::random_hex;

use crate::LocalError;

/// Secrets kept in `<state-dir>/credentials.toml` (created 0600, in a 0700 directory).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credentials {
    pub api_key: String,
    pub token_secret: String,
}

pub fn database_path(state_dir: &Path) -> PathBuf {
    state_dir.join("runvoy.db")
}

/// Loads the credentials, creating them on first start; `api_key` replaces the stored key.
pub fn credentials(state_dir: &Path, api_key: Option<&str>) -> Result<Credentials, LocalError> {
    let io = |e: std::io::Error| LocalError::State(state_dir.to_path_buf(), e.to_string());
    runvoy_config::create_private_dir(state_dir).map_err(io)?;
    #[cfg(unix)]
    {
        // The state holds the key and the database of every log: its owner's only.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(state_dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    }
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
    runvoy_config::write_private(&path, text.as_bytes()).map_err(io)?;
    Ok(creds)
}

#[cfg(all(test, unix))]
mod private_files {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_state_directory_and_the_key_are_their_owners_only() {
        let dir = std::env::temp_dir()
            .join(format!("runvoy-state-{}", random_hex(4)))
            .join("state");
        let creds = credentials(&dir, None).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("credentials.toml")), 0o600);
        // Kept across starts, and no temporary file left beside it.
        assert_eq!(credentials(&dir, None).unwrap().api_key, creds.api_key);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        // A directory made loose by someone else is tightened again.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        credentials(&dir, None).unwrap();
        assert_eq!(mode(&dir), 0o700);
    }
}
