//! `deploy up|diff|down|status|build --env NAME`: the CloudFormation stack on AWS (or an emulator
//! with `--endpoint-url`). Each command is a file of its own; what they share is here (how
//! results are printed, confirmation) and in `session.rs` (options, environment, credentials).

pub mod artifacts;
mod bucket;
mod cloudformation;
mod diff;
mod down;
pub mod envfile;
mod errors;
pub mod keys;
mod profile;
mod session;
mod status;
mod up;

pub use diff::diff;
pub use down::down;
pub use errors::readable;
pub(crate) use session::Target;
pub use session::{AwsArgs, AwsOnly};
pub use status::status;
pub(crate) use up::apply;
pub use up::{build, up};

use std::io::IsTerminal;

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// A stack as `--output json` prints it.
fn stack_json(
    stack: &str,
    status: Option<&str>,
    outputs: &[(String, String)],
    changes: &[cloudformation::Change],
) -> serde_json::Value {
    serde_json::json!({
        "stack": stack,
        "status": status,
        "outputs": outputs.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
        "changes": changes,
    })
}

/// Whether to go on: `--yes`, else the answer on the terminal.
fn confirm(args: &AwsArgs) -> anyhow::Result<bool> {
    if args.yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("stdin is not a terminal, so nothing can be confirmed; pass --yes to apply");
    }
    eprint!("apply these changes? [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}
