//! `deploy down --env NAME`: the stack deleted, after confirmation.

use super::session::{AwsArgs, open};
use super::{Output, confirm};

/// `deploy down --env NAME`
pub async fn down(args: &AwsArgs) -> anyhow::Result<()> {
    let (t, _, stacks) = open(args).await?;
    // A stack left in REVIEW_IN_PROGRESS (a first change set never run) has a name and no
    // resources; it is deleted too, or the next `up` would meet it.
    let deleted = if stacks.raw_status().await?.is_none() {
        false
    } else {
        eprintln!("deleting stack {}", t.stack);
        if !confirm(args)? {
            anyhow::bail!("not deleted");
        }
        stacks.delete().await?;
        true
    };
    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::json!({"stack": t.stack, "status": if deleted { "DELETE_COMPLETE" } else { "NOT_DEPLOYED" }})
        ),
        Output::Text if deleted => println!("{}: deleted", t.stack),
        Output::Text => println!("{}: not deployed", t.stack),
    }
    Ok(())
}
