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
    /// The project: the default stack name is `{project}-{env}`, and every resource's name
    /// starts with the stack name. Default `runvoy`.
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
pub const MANAGED: [&str; 8] = [
    "Architecture",
    "ArtifactsBucket",
    "ForwarderCodeKey",
    "ApiCodeKey",
    "WebsocketCodeKey",
    "CompletionCodeKey",
    "ApiKey",
    "QueueRetentionSeconds",
];

impl EnvFile {
    /// How long the on-failure queues keep a record: the stack's retention (they hold log
    /// lines, which must not outlive it), at most SQS's 14 days.
    pub fn queue_retention_secs(&self) -> u64 {
        let days: u64 = self
            .parameters
            .get("RetentionDays")
            .and_then(|d| d.parse().ok())
            .unwrap_or(7);
        (days * 86_400).clamp(60, 1_209_600)
    }
}

pub fn path_of(dir: &Path, env: &str) -> PathBuf {
    dir.join(format!("{env}.toml"))
}

impl EnvFile {
    pub fn load(dir: &Path, env: &str) -> anyhow::Result<EnvFile> {
        if !is_name(env, 1, 20) {
            anyhow::bail!(
                "environment name '{env}' must be 1-20 lowercase letters, digits or '-', starting with a letter (it becomes part of every resource name, and CloudFormation and S3 refuse '_')"
            );
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
        if !is_name(&file.project, 2, 20) {
            anyhow::bail!(
                "{}: project must be 2-20 lowercase letters, digits or '-', starting with a letter",
                path.display()
            );
        }
        let stack = file.stack_name(env);
        if !is_name(&stack, 1, MAX_STACK_NAME) {
            anyhow::bail!(
                "{}: stack name '{stack}' must be at most {MAX_STACK_NAME} lowercase letters, digits or '-', starting with a letter (function and queue names are built from it)",
                path.display()
            );
        }
        if let Some(b) = &file.artifacts_bucket
            && !is_bucket_name(b)
        {
            anyhow::bail!(
                "{}: artifacts_bucket '{b}' is not a valid S3 bucket name (3-63 lowercase letters, digits, '-' or '.', starting and ending with a letter or digit)",
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
        let template = crate::template::backend();
        for (k, v) in &file.parameters {
            template
                .check_parameter(k, v)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        }
        Ok(file)
    }

    /// The bucket the zips go to: `artifacts_bucket`, or `{project}-artifacts-{account}-{region}`.
    pub fn bucket(&self, account: &str, region: &str) -> anyhow::Result<String> {
        let b = self
            .artifacts_bucket
            .clone()
            .unwrap_or_else(|| format!("{}-artifacts-{account}-{region}", self.project));
        if !is_bucket_name(&b) {
            anyhow::bail!(
                "the artifacts bucket name '{b}' is not valid for S3 (at most 63 characters); set a shorter project or artifacts_bucket in the environment file"
            );
        }
        Ok(b)
    }

    pub fn stack_name(&self, env: &str) -> String {
        self.stack_name
            .clone()
            .unwrap_or_else(|| format!("{}-{env}", self.project))
    }
}

/// The longest stack name: `{stack}-completion-failures` must stay a valid queue name and
/// `{stack}-completion` a function name (64).
pub const MAX_STACK_NAME: usize = 40;

/// Lowercase letters, digits and '-', starting with a letter, `min..=max` long.
fn is_name(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// S3's rules for bucket names (without the rarely useful dotted forms).
fn is_bucket_name(s: &str) -> bool {
    (3..=63).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
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
        assert!(
            err("my_env").contains("refuse '_'"),
            "names CloudFormation and S3 refuse are refused before any call"
        );
        write(&dir, "longproj", "project = \"a-very-long-project-name\"");
        assert!(err("longproj").contains("project must be 2-20"));
        write(
            &dir,
            "longstack",
            &format!("stack_name = \"{}\"", "s".repeat(41)),
        );
        assert!(err("longstack").contains("at most 40"));
        // Parameters are checked as CloudFormation will, before any call.
        write(
            &dir,
            "stream",
            "[parameters]\nStreamTemplate = \"task/runner\"",
        );
        assert!(
            err("stream").ends_with(
                "StreamTemplate = 'task/runner' must contain {execution_id} once, e.g. task/runner/{execution_id}"
            ),
            "{}",
            err("stream")
        );
        write(&dir, "days", "[parameters]\nRetentionDays = \"2\"");
        assert!(
            err("days").ends_with(
                "RetentionDays = '2' must be one of 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365"
            ),
            "{}",
            err("days")
        );
        write(&dir, "unknown", "[parameters]\nRetentionDayz = \"7\"");
        assert!(err("unknown").contains("RetentionDayz is not a parameter of the template"));
        write(
            &dir,
            "container",
            "[parameters]\nRunnerContainerName = \"my runner\"",
        );
        assert!(err("container").contains("RunnerContainerName = 'my runner' must match"));
        write(&dir, "bucket", "artifacts_bucket = \"Bad_Bucket\"");
        assert!(err("bucket").contains("not a valid S3 bucket name"));
        let f = EnvFile::load(&dir, "ok").unwrap();
        assert!(f.bucket("123456789012", "ap-southeast-1").is_ok());
        let long = EnvFile {
            project: "a-twenty-char-projec".into(),
            ..f.clone()
        };
        // With a 20-character project the default name stays within 63 characters in every
        // region that exists today; a longer region name (or partition) must not slip through.
        assert!(long.bucket("123456789012", "ap-southeast-1").is_ok());
        let e = long
            .bucket("123456789012", "xx-someplace-central-1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("at most 63"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
