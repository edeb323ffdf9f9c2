//! Function artifacts: built with cargo-lambda, named by content hash, uploaded once.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use sha2::{Digest, Sha256};

use crate::template::stack::FUNCTIONS;

/// One function's zip.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// Logical id prefix in the template (`Forwarder`).
    pub id: &'static str,
    pub path: PathBuf,
    pub sha256: String,
}

impl Artifact {
    /// The S3 key: changes exactly when the content does.
    pub fn key(&self) -> String {
        format!(
            "functions/{}-{}.zip",
            self.id.to_lowercase(),
            &self.sha256[..16]
        )
    }
}

/// `target/lambda/<bin>/bootstrap.zip` (cargo-lambda's layout), or the same under `dir`.
pub fn find(dir: &Path) -> anyhow::Result<Vec<Artifact>> {
    FUNCTIONS
        .iter()
        .map(|(id, bin, _)| {
            let path = dir.join(bin).join("bootstrap.zip");
            let bytes = std::fs::read(&path).with_context(|| {
                format!(
                    "missing {}; run `cargo run -p deploy -- build` first",
                    path.display()
                )
            })?;
            Ok(Artifact {
                id,
                sha256: Sha256::digest(&bytes)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect(),
                path,
            })
        })
        .collect()
}

/// Builds every function with cargo-lambda (profile `lambda`), zipped.
pub fn build(workspace: &Path, architecture: &str, lambda_dir: &Path) -> anyhow::Result<()> {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(workspace)
        .args([
            "lambda",
            "build",
            // Workspace Cargo.toml: `release` optimised for size (zips under 4 MB).
            "--profile",
            "lambda",
            "--output-format",
            "zip",
            "--lambda-dir",
        ])
        .arg(lambda_dir);
    if architecture == "arm64" {
        cmd.arg("--arm64");
    } else {
        cmd.arg("--x86-64");
    }
    for (_, bin, _) in FUNCTIONS {
        cmd.args(["-p", bin]);
    }
    let status = cmd.status().context(
        "cannot run `cargo lambda`; install it with `pip install cargo-lambda` (and, for arm64, `rustup target add aarch64-unknown-linux-gnu`)",
    )?;
    if !status.success() {
        anyhow::bail!("cargo lambda build failed ({status})");
    }
    Ok(())
}
