//! Where the API is and which key to use: flags, then `RUNVOY_API_URL` / `RUNVOY_API_KEY`,
//! then the config file `deploy up` writes (profile from `--profile`, `RUNVOY_PROFILE`, or the
//! file's default).

use runvoy_config::Config;

use crate::error::CliError;

#[derive(Debug, Clone)]
pub struct Settings {
    pub api_url: String,
    pub api_key: String,
}

pub fn resolve(
    api_url: Option<String>,
    api_key: Option<String>,
    profile: Option<String>,
) -> Result<Settings, CliError> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let api_url = api_url.or_else(|| env("RUNVOY_API_URL"));
    let api_key = api_key.or_else(|| env("RUNVOY_API_KEY"));
    let profile = profile.or_else(|| env("RUNVOY_PROFILE"));
    let file = if api_url.is_none() || api_key.is_none() {
        let path = runvoy_config::default_path().map_err(|e| CliError::Config(e.to_string()))?;
        let cfg = Config::load(&path).map_err(|e| CliError::Config(e.to_string()))?;
        match (&profile, cfg.profile(profile.as_deref())) {
            (Some(name), None) => {
                return Err(CliError::Config(format!(
                    "profile '{name}' is not in {}; run `cargo run -p deploy -- up --env {name}` first",
                    path.display()
                )));
            }
            (_, p) => p.cloned(),
        }
    } else {
        None
    };
    let api_url = api_url.or_else(|| file.as_ref().map(|p| p.api_url.clone()));
    let api_key = api_key.or_else(|| file.as_ref().map(|p| p.api_key.clone()));
    match (api_url, api_key) {
        (Some(u), Some(k)) => Ok(Settings {
            api_url: u.trim_end_matches('/').to_string(),
            api_key: k,
        }),
        _ => Err(CliError::Config(
            "no API configured; start one with `cargo run -p deploy -- up`, or pass --api-url and --api-key"
                .into(),
        )),
    }
}
