//! The artifacts bucket: owned by the deploying account (checked on every call), created
//! private and encrypted; the function zips and large templates are uploaded to it, each named
//! by its content.

use super::artifacts::Artifact;
use super::readable;

/// The metadata key of an uploaded zip naming the sha256 of its `bootstrap`.
const BOOTSTRAP_SHA256: &str = "bootstrap-sha256";

pub(super) fn s3_client(sdk: &aws_config::SdkConfig, emulator: bool) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::from(sdk)
        .force_path_style(emulator)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// The sentence for a bucket this account does not own.
fn not_our_bucket(bucket: &str, account: &str, env: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "the artifacts bucket s3://{bucket} exists but does not belong to account {account} (or these credentials may not list it: s3:ListBucket), so no function code is uploaded to it; set artifacts_bucket in deployments/{env}.toml to a bucket of this account"
    )
}

/// The artifacts bucket, owned by `account`: checked, or created private and encrypted.
pub(super) async fn ensure_bucket(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    region: &str,
    account: &str,
    env: &str,
) -> anyhow::Result<()> {
    use aws_sdk_s3::error::ProvideErrorMetadata as _;
    match s3
        .head_bucket()
        .bucket(bucket)
        .expected_bucket_owner(account)
        .send()
        .await
    {
        Ok(_) => return Ok(()),
        Err(e) => match e.raw_response().map(|r| r.status().as_u16()) {
            Some(404) => {}
            // Another account's bucket (or one this account may not read): never ours.
            Some(403) => return Err(not_our_bucket(bucket, account, env)),
            _ => {
                return Err(readable(
                    &format!("checking the artifacts bucket s3://{bucket}"),
                    e,
                ));
            }
        },
    }
    let mut req = s3.create_bucket().bucket(bucket);
    if region != "us-east-1" {
        req = req.create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(region))
                .build(),
        );
    }
    if let Err(e) = req.send().await {
        return Err(match e.code() {
            // Taken between the check and the creation.
            Some("BucketAlreadyExists") => not_our_bucket(bucket, account, env),
            _ => readable(&format!("creating the artifacts bucket {bucket}"), e),
        });
    }
    s3.put_public_access_block()
        .bucket(bucket)
        .expected_bucket_owner(account)
        .public_access_block_configuration(
            aws_sdk_s3::types::PublicAccessBlockConfiguration::builder()
                .block_public_acls(true)
                .block_public_policy(true)
                .ignore_public_acls(true)
                .restrict_public_buckets(true)
                .build(),
        )
        .send()
        .await
        .map_err(|e| readable(&format!("blocking public access to s3://{bucket}"), e))?;
    let sse = aws_sdk_s3::types::ServerSideEncryptionByDefault::builder()
        .sse_algorithm(aws_sdk_s3::types::ServerSideEncryption::Aes256)
        .build()?;
    s3.put_bucket_encryption()
        .bucket(bucket)
        .expected_bucket_owner(account)
        .server_side_encryption_configuration(
            aws_sdk_s3::types::ServerSideEncryptionConfiguration::builder()
                .rules(
                    aws_sdk_s3::types::ServerSideEncryptionRule::builder()
                        .apply_server_side_encryption_by_default(sse)
                        .build(),
                )
                .build()?,
        )
        .send()
        .await
        .map_err(|e| readable(&format!("enabling encryption of s3://{bucket}"), e))?;
    eprintln!("  created      s3://{bucket} (private, encrypted)");
    Ok(())
}

/// Uploads the zips whose code the bucket does not hold yet.
pub(super) async fn upload_artifacts(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    account: &str,
    arts: &[Artifact],
) -> anyhow::Result<()> {
    for a in arts {
        let key = a.key();
        // An object under this key is trusted only when it says it holds this code: the key
        // is a prefix of the hash, and an object may have been written by hand or half-way.
        let existing = s3
            .head_object()
            .bucket(bucket)
            .key(&key)
            .expected_bucket_owner(account)
            .send()
            .await
            .ok()
            .and_then(|h| h.metadata().and_then(|m| m.get(BOOTSTRAP_SHA256).cloned()));
        if existing.as_deref() == Some(a.sha256.as_str()) {
            eprintln!("  unchanged    s3://{bucket}/{key}");
            continue;
        }
        let body = aws_sdk_s3::primitives::ByteStream::from_path(&a.path).await?;
        s3.put_object()
            .bucket(bucket)
            .key(&key)
            .expected_bucket_owner(account)
            .metadata(BOOTSTRAP_SHA256, &a.sha256)
            .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
            .body(body)
            .send()
            .await
            .map_err(|e| {
                readable(
                    &format!("uploading {} to s3://{bucket}/{key}", a.path.display()),
                    e,
                )
            })?;
        eprintln!("  uploaded     s3://{bucket}/{key}");
    }
    Ok(())
}

/// Uploads a template under a key named by its content; returns the key.
pub(super) async fn upload_template(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    account: &str,
    body: &str,
) -> anyhow::Result<String> {
    let digest: String = {
        use sha2::Digest;
        sha2::Sha256::digest(body.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let key = format!("templates/{}.yaml", &digest[..16]);
    s3.put_object()
        .bucket(bucket)
        .key(&key)
        .expected_bucket_owner(account)
        .body(body.as_bytes().to_vec().into())
        .send()
        .await
        .map_err(|e| readable(&format!("uploading the template to s3://{bucket}/{key}"), e))?;
    Ok(key)
}
