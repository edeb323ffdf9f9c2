//! The completion Lambda: EventBridge "ECS Task State Change" (STOPPED) → terminal status; and,
//! on the stack's schedule, the janitor that re-drives the on-failure queues.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use runvoy_lambda::completion::{self, Outcome};
use runvoy_lambda::janitor::{self, Janitor, Origin};
use runvoy_lambda::wiring::Deployment;
use serde_json::{Value, json};

/// Time kept free at the end of an invocation for the last commit and the response.
const SAFETY_MARGIN_MS: i64 = 10_000;

#[tokio::main]
async fn main() -> Result<(), Error> {
    // Log lines go to stderr at Lambda's log level and format (`AWS_LAMBDA_LOG_LEVEL`,
    // `AWS_LAMBDA_LOG_FORMAT`); stdout carries only the EMF metric lines.
    lambda_runtime::tracing::init_default_subscriber_with_writer(std::io::stderr);
    let d = Deployment::from_env(runvoy_lambda::Function::Completion).await?;
    let sqs = aws_sdk_sqs::Client::new(&d.sdk);
    let (d, sqs) = (&d, &sqs);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        // Stop re-reading early enough to save progress and answer before the timeout.
        let deadline = event.context.deadline as i64 - SAFETY_MARGIN_MS;
        if janitor::is_schedule(&event.payload) {
            let j = Janitor {
                sqs,
                services: &d.services,
                names: &d.names,
                metrics: &d.metrics,
                runner: &d.settings.runner_container,
            };
            let mut report = json!({});
            for (origin, url, name) in [
                (
                    Origin::Completion,
                    &d.settings.completion_queue_url,
                    "completion",
                ),
                (
                    Origin::Forwarder,
                    &d.settings.forwarder_queue_url,
                    "forwarder",
                ),
            ] {
                if let Some(url) = url {
                    report[name] = json!(j.redrive(origin, url, deadline).await?);
                }
            }
            d.metrics.flush(runvoy_lambda::emf::now_ms());
            return Ok::<Value, Error>(report);
        }
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
                    json!({"execution_id": execution_id, "final_index": final_index})
                }
                Outcome::Ignored(why) => json!({"ignored": why}),
                Outcome::Refused(why) => json!({"refused": why}),
            })
            .map_err(Error::from)
    }))
    .await
}
