//! The completion Lambda: EventBridge "ECS Task State Change" (STOPPED) → terminal status.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use runvoy_lambda::completion::{self, Outcome};
use runvoy_lambda::wiring::Deployment;
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let d = Deployment::from_env("completion").await?;
    let d = &d;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let result =
            completion::handle(&d.services, &d.settings.runner_container, &event.payload).await;
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
