//! The completion Lambda: EventBridge "ECS Task State Change" (STOPPED) → terminal status.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use runvoy_lambda::completion::{self, Outcome};
use runvoy_lambda::wiring::Deployment;
use serde_json::Value;

/// Time kept free at the end of an invocation for the last commit and the response.
const SAFETY_MARGIN_MS: i64 = 10_000;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let d = Deployment::from_env("completion").await?;
    let d = &d;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        // Stop re-reading early enough to save progress and answer before the timeout.
        let deadline = event.context.deadline as i64 - SAFETY_MARGIN_MS;
        let result = completion::handle(
            &d.services,
            &d.settings.runner_container,
            &event.payload,
            Some(deadline),
        )
        .await;
        d.metrics.flush(runvoy_lambda::emf::now_ms());
        result
            .map(|o| match o {
                Outcome::Completed {
                    execution_id,
                    final_index,
                    ..
                } => {
                    serde_json::json!({"execution_id": execution_id, "final_index": final_index})
                }
                Outcome::Ignored(why) => serde_json::json!({"ignored": why}),
            })
            .map_err(Error::from)
    }))
    .await
}
