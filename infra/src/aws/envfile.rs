//! `deployments/<env>.toml`: what an environment deploys, read and validated before anything
//! is changed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// An environment's settings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EnvFile {
    /// AWS region (overridden by `--region`).
    pub region: Option<String>,
    /// Prefix of every resource name (`ProjectName`), default `runvoy`.
    #[serde(default = "default_project")]
    pub project: String,
    /// Stack name, default `{project}-{env}`.
    pub stack_name: Option<String>,
    /// Bucket for function zips, default `{project}-artifacts-{account}-{region}` (created).
    pub artifacts_bucket: Option<String>,
    /// `arm64` (default) or `x86_64`.
    #[serde(default = "default_arch")]
    pub architecture: String,
    /// Further template parameters, e.g. `RetentionDays = "7"`.
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
}

fn default_project() -> String {
    "runvoy".into()
}

fn default_arch() -> String {
    "arm64".into()
}

/// Parameters the tool sets itself; an env file may not.
pub const MANAGED: [&str; 7] = [
    "ProjectName",
    "ArtifactsBucket",
    "ForwarderCodeKey",
    "ApiCodeKey",
    "WebsocketCodeKey",
    "CompletionCodeKey",
    "ApiKey",
];

pub fn path_of(dir: &Path, env: &str) -> PathBuf {
    dir.join(format!("{env}.toml"))
}

impl EnvFile {
    pub fn load(dir: &Path, env: &str) -> anyhow::Result<EnvFile> {
        if env.is_empty()
            || !env
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            anyhow::bail!("environment name '{env}' must be letters, digits, '-' or '_'");
        }
        let path = path_of(dir, env);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            anyhow::anyhow!(
                "cannot read {} ({e}); create it (see deployments/example.toml) or choose another --env",
                path.display()
            )
        })?;
        let file: EnvFile = toml::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "{} is not a valid environment file: {}",
                path.display(),
                e.message()
            )
        })?;
        if !matches!(file.architecture.as_str(), "arm64" | "x86_64") {
            anyhow::bail!(
                "{}: architecture must be arm64 or x86_64, not '{}'",
                path.display(),
                file.architecture
            );
        }
        let project_ok = file.project.len() >= 2
            && file.project.len() <= 31
            && file.project.starts_with(|c: char| c.is_ascii_lowercase())
            && file
                .project
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !project_ok {
            anyhow::bail!(
                "{}: project must be 2-31 lowercase letters, digits or '-', starting with a letter",
                path.display()
            );
        }
        if let Some(k) = file
            .parameters
            .keys()
            .find(|k| MANAGED.contains(&k.as_str()))
        {
            anyhow::bail!(
                "{}: parameter {k} is set by the deploy tool; remove it from [parameters]",
                path.display()
            );
        }
        Ok(file)
    }

    pub fn stack_name(&self, env: &str) -> String {
        self.stack_name
            .clone()
            .unwrap_or_else(|| format!("{}-{env}", self.project))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, env: &str, text: &str) {
        std::fs::write(path_of(dir, env), text).unwrap();
    }

    #[test]
    fn env_files_are_validated_with_one_clear_sentence() {
        let dir = std::env::temp_dir().join(format!("runvoy-envfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        write(
            &dir,
            "ok",
            "region = \"eu-west-1\"\n[parameters]\nRetentionDays = \"3\"\n",
        );
        let ok = EnvFile::load(&dir, "ok").unwrap();
        assert_eq!(
            (ok.project.as_str(), ok.stack_name("ok").as_str()),
            ("runvoy", "runvoy-ok")
        );
        let err = |env: &str| EnvFile::load(&dir, env).unwrap_err().to_string();
        assert!(err("missing").contains("cannot read"));
        write(&dir, "bad", "region = [");
        assert!(err("bad").contains("not a valid environment file"));
        write(&dir, "typo", "regoin = \"x\"");
        assert!(err("typo").contains("unknown field"));
        write(&dir, "arch", "architecture = \"sparc\"");
        assert!(err("arch").contains("arm64 or x86_64"));
        write(&dir, "managed", "[parameters]\nApiKey = \"x\"");
        assert!(err("managed").contains("set by the deploy tool"));
        assert!(err("../etc").contains("environment name"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
