//! AWS failures as one sentence: what was being done, the service's error code and message, and
//! what to do about it — never the SDK's debug dump.

use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// `"{what} failed: {Code}: {message}; {what to do}"`, or for a request that never got an
/// answer, the innermost cause (a refused connection, an unresolvable host).
pub fn readable<E>(what: &str, e: E) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let Some(code) = e.code() else {
        let mut cause: &dyn std::error::Error = &e;
        while let Some(next) = cause.source() {
            cause = next;
        }
        return anyhow::anyhow!(
            "{what} failed: no answer from AWS ({cause}); check the network, --region and --endpoint-url"
        );
    };
    let message = e.message().unwrap_or("no message");
    let hint = match code {
        "AccessDenied" | "AccessDeniedException" | "UnauthorizedOperation" => {
            "; the credentials lack a permission this needs: use a role that may deploy the stack"
        }
        "ExpiredToken" | "ExpiredTokenException" | "RequestExpired" => {
            "; the credentials expired: refresh them (for SSO: aws sso login)"
        }
        "InvalidClientTokenId" | "UnrecognizedClientException" | "SignatureDoesNotMatch" => {
            "; the credentials are not valid for this account: check the profile or the keys"
        }
        "Throttling" | "ThrottlingException" | "TooManyRequestsException" => {
            "; AWS is throttling requests: retry in a moment"
        }
        _ => "",
    };
    anyhow::anyhow!("{what} failed: {code}: {message}{hint}")
}
