//! Where the API is and which key to use: flags, then `RUNVOY_API_URL` / `RUNVOY_API_KEY`,
//! then the config file `deploy up` writes (profile from `--profile`, `RUNVOY_PROFILE`, or the
//! file's default).
//!
//! The URL and the key come from one source, so a key goes only where it belongs: a
//! profile's key is sent only to that profile's `api_url`, and a key from the environment only
//! with a URL from the environment or a flag. A `.envrc`, a CI variable or a pasted command
//! that points the CLI at another host cannot make it send the saved production key there.
//! Plain `http://` is refused off this machine unless `--insecure`: the key would cross the
//! network in clear.

use runvoy_config::Config;

use crate::error::CliError;

#[derive(Debug, Clone)]
pub struct Settings {
    pub api_url: String,
    pub api_key: String,
}

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum From {
    Flag,
    Env,
    Profile,
}

pub fn resolve(
    api_url: Option<String>,
    api_key: Option<String>,
    profile: Option<String>,
    insecure: bool,
) -> Result<Settings, CliError> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let url = api_url
        .map(|u| (u, From::Flag))
        .or_else(|| env("RUNVOY_API_URL").map(|u| (u, From::Env)));
    let key = api_key
        .map(|k| (k, From::Flag))
        .or_else(|| env("RUNVOY_API_KEY").map(|k| (k, From::Env)));
    let profile = profile.or_else(|| env("RUNVOY_PROFILE"));
    let file = if url.is_none() || key.is_none() {
        let path = runvoy_config::default_path().map_err(|e| CliError::Config(e.to_string()))?;
        let cfg = Config::load(&path).map_err(|e| CliError::Config(e.to_string()))?;
        match (&profile, cfg.profile(profile.as_deref())) {
            (Some(name), None) => {
                return Err(CliError::Config(format!(
                    "profile '{name}' is not in {}; run `cargo run -p deploy -- up --env {name}` first",
                    path.display()
                )));
            }
            (_, p) => {
                let name = profile
                    .clone()
                    .or(cfg.default_profile.clone())
                    .unwrap_or_default();
                p.cloned().map(|p| (name, p))
            }
        }
    } else {
        None
    };
    let (url, url_from) = match (url, &file) {
        (Some(u), _) => u,
        (None, Some((_, p))) => (p.api_url.clone(), From::Profile),
        (None, None) => return Err(none_configured()),
    };
    let url = url.trim_end_matches('/').to_string();
    let (key, key_from) = match (key, &file) {
        (Some(k), _) => k,
        (None, Some((name, p))) => {
            // A profile's key, only to that profile's API.
            if p.api_url.trim_end_matches('/') != url {
                return Err(CliError::Config(format!(
                    "the API URL {url} comes from {} and the only key is profile \"{name}\"'s, which is sent only to {}; give a key for {url} with --api-key or RUNVOY_API_KEY, or drop the URL to use the profile",
                    if url_from == From::Flag {
                        "--api-url"
                    } else {
                        "RUNVOY_API_URL"
                    },
                    p.api_url
                )));
            }
            (p.api_key.clone(), From::Profile)
        }
        (None, None) => return Err(none_configured()),
    };
    if key_from == From::Env && url_from == From::Profile {
        return Err(CliError::Config(format!(
            "RUNVOY_API_KEY is set but the API URL comes from the config file ({url}): a key from the environment goes only to a URL from the environment or --api-url; set RUNVOY_API_URL too, or unset RUNVOY_API_KEY"
        )));
    }
    if url.starts_with("http://") && !is_loopback(&url) && !insecure {
        return Err(CliError::Config(format!(
            "{url} is plain HTTP to another machine: the API key would cross the network in clear; use https://, or pass --insecure if this network is yours"
        )));
    }
    Ok(Settings {
        api_url: url,
        api_key: key,
    })
}

fn none_configured() -> CliError {
    CliError::Config(
        "no API configured; start one with `cargo run -p deploy -- up`, or pass --api-url and --api-key"
            .into(),
    )
}

/// Whether an `http://` URL names this machine (`localhost`, 127.0.0.0/8, `[::1]`).
fn is_loopback(url: &str) -> bool {
    let rest = url.trim_start_matches("http://");
    let host = rest.split('/').next().unwrap_or_default();
    let host = if let Some(v6) = host.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::is_loopback;

    #[test]
    fn loopback_urls_are_this_machine() {
        for u in [
            "http://127.0.0.1:8787",
            "http://localhost:1",
            "http://[::1]:9/x",
            "http://127.3.4.5",
        ] {
            assert!(is_loopback(u), "{u}");
        }
        for u in [
            "http://10.0.0.1:8787",
            "http://example.com",
            "http://127.0.0.1.evil.com",
        ] {
            assert!(!is_loopback(u), "{u}");
        }
    }
}
