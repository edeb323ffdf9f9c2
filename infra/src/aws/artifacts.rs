//! Function artifacts: built with cargo-lambda, named by content hash, uploaded once.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use runvoy_core::function::Function;
use sha2::{Digest, Sha256};

/// One function's zip.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// The function whose code it is.
    pub function: Function,
    pub path: PathBuf,
    /// sha256 of the `bootstrap` executable inside the zip: what the function runs. The zip's
    /// own bytes are not used: cargo-lambda writes the binary's modification time into it, so
    /// every fresh build (every CI run) would look like new code.
    pub sha256: String,
}

impl Artifact {
    /// The S3 key: changes exactly when the function's code does.
    pub fn key(&self) -> String {
        format!(
            "functions/{}-{}.zip",
            self.function.name(),
            &self.sha256[..16]
        )
    }
}

/// `target/lambda/<bin>/bootstrap.zip` (cargo-lambda's layout), or the same under `dir`.
pub fn find(dir: &Path) -> anyhow::Result<Vec<Artifact>> {
    Function::ALL
        .into_iter()
        .map(|function| {
            let path = dir.join(function.name()).join("bootstrap.zip");
            let bytes = std::fs::read(&path).with_context(|| {
                format!(
                    "missing {}; run `cargo run -p deploy -- build` first",
                    path.display()
                )
            })?;
            Ok(Artifact {
                function,
                sha256: bootstrap_sha256(&bytes)
                    .with_context(|| format!("reading {}", path.display()))?,
                path,
            })
        })
        .collect()
}

/// The sha256 (hex) of the `bootstrap` entry of a function zip.
pub fn bootstrap_sha256(zip_bytes: &[u8]) -> anyhow::Result<String> {
    use std::io::Read;
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip_bytes))
        .context("a function zip that is not a zip")?;
    let mut entry = archive
        .by_name("bootstrap")
        .context("a function zip without a `bootstrap` executable")?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = entry.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
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
    for f in Function::ALL {
        cmd.args(["-p", f.name()]);
    }
    let status = cmd.status().context(
        "cannot run `cargo lambda`; install it with `pip install cargo-lambda` (and, for arm64, `rustup target add aarch64-unknown-linux-gnu`)",
    )?;
    if !status.success() {
        anyhow::bail!("cargo lambda build failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn zip_of(bootstrap: &[u8], minute: u8) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        let mut z = zip::ZipWriter::new(&mut out);
        let when = zip::DateTime::from_date_and_time(2026, 12, 7, 12, minute, 0).unwrap();
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .last_modified_time(when)
            .unix_permissions(0o755);
        z.start_file("bootstrap", options).unwrap();
        z.write_all(bootstrap).unwrap();
        z.finish().unwrap();
        out.into_inner()
    }

    /// Two builds of the same code zip it at different times: the same key. Other code: another.
    #[test]
    fn keys_follow_the_code_not_the_zip() {
        let (a, b) = (
            zip_of(b"\x7fELF same code", 1),
            zip_of(b"\x7fELF same code", 59),
        );
        assert_ne!(a, b, "the zips differ by their timestamps");
        let key = |bytes: &[u8]| {
            Artifact {
                function: Function::Forwarder,
                path: PathBuf::new(),
                sha256: bootstrap_sha256(bytes).unwrap(),
            }
            .key()
        };
        assert_eq!(key(&a), key(&b));
        assert_ne!(key(&a), key(&zip_of(b"\x7fELF other code", 1)));
        assert!(bootstrap_sha256(b"not a zip").is_err());
    }
}
