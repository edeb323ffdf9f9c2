//! Function code both ways: the binaries built for this machine are zipped as cargo-lambda
//! zips them (`<dir>/<bin>/bootstrap.zip`, one executable named `bootstrap`) for the deploy, and
//! what a function runs is the `bootstrap` of the zip its `Code` names in S3 (cached by key,
//! which names the content).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use runvoy_core::function::Function;

use crate::SimError;

/// Writes the zips the deploy uploads; unchanged binaries keep their zip (and so their hash).
pub fn zip_functions(functions_dir: &Path, out: &Path) -> Result<(), SimError> {
    for bin in Function::ALL.map(Function::name) {
        let src = functions_dir.join(bin);
        let meta = std::fs::metadata(&src).map_err(|e| {
            SimError::Functions(format!(
                "{} is missing ({e}); build the functions first (cargo build -p forwarder -p api -p websocket -p completion)",
                src.display()
            ))
        })?;
        let stamp = format!("{}:{:?}", meta.len(), meta.modified().ok());
        let dir = out.join(bin);
        let zip_path = dir.join("bootstrap.zip");
        let stamp_path = dir.join("stamp");
        if zip_path.exists() && std::fs::read_to_string(&stamp_path).ok().as_deref() == Some(&stamp)
        {
            continue;
        }
        let fail = |e: &dyn std::fmt::Display| {
            SimError::Functions(format!("zipping {}: {e}", src.display()))
        };
        std::fs::create_dir_all(&dir).map_err(|e| fail(&e))?;
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&zip_path).map_err(|e| fail(&e))?);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .unix_permissions(0o755)
            .large_file(meta.len() > u32::MAX as u64);
        zip.start_file("bootstrap", options).map_err(|e| fail(&e))?;
        let mut f = std::fs::File::open(&src).map_err(|e| fail(&e))?;
        std::io::copy(&mut f, &mut zip).map_err(|e| fail(&e))?;
        zip.finish().map_err(|e| fail(&e))?;
        std::fs::write(&stamp_path, stamp).map_err(|e| fail(&e))?;
    }
    Ok(())
}

/// The executable inside the zip at `s3://bucket/key`, downloaded and unpacked once.
pub async fn bootstrap(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    cache: &Path,
) -> Result<PathBuf, SimError> {
    let dir = cache.join(key.replace('/', "_"));
    let exe = dir.join("bootstrap");
    if exe.exists() {
        return Ok(exe);
    }
    let fail = |e: String| SimError::Functions(format!("function code s3://{bucket}/{key}: {e}"));
    let obj = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| fail(format!("{e:?}")))?;
    let bytes = obj
        .body
        .collect()
        .await
        .map_err(|e| fail(e.to_string()))?
        .into_bytes();
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| fail(format!("not a zip: {e}")))?;
    let mut entry = archive
        .by_name("bootstrap")
        .map_err(|e| fail(format!("no bootstrap in the zip: {e}")))?;
    let mut data = Vec::new();
    entry
        .read_to_end(&mut data)
        .map_err(|e| fail(e.to_string()))?;
    std::fs::create_dir_all(&dir).map_err(|e| fail(e.to_string()))?;
    let tmp = dir.join(format!(
        "bootstrap.{}.partial",
        runvoy_runtime::random_hex(4)
    ));
    {
        let mut f = std::fs::File::create(&tmp).map_err(|e| fail(e.to_string()))?;
        f.write_all(&data).map_err(|e| fail(e.to_string()))?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| fail(e.to_string()))?;
    }
    std::fs::rename(&tmp, &exe).map_err(|e| fail(e.to_string()))?;
    Ok(exe)
}
