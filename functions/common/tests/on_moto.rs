//! The handlers over the real adapters: DynamoDB, CloudWatch Logs and the API Gateway
//! management API on moto, wired exactly as the deployed functions wire them.

use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use runvoy_aws::testkit::{moto_endpoint, sdk_config, unique};
use runvoy_aws::{create_tables, subscription};
use runvoy_core::Status;
use runvoy_core::api::HttpRequest;
use runvoy_lambda::completion::Outcome;
use runvoy_lambda::settings::Settings;
use runvoy_lambda::wiring::{Deployment, parse_api_keys, parse_token_secret};
use runvoy_lambda::{ApiConfig, completion, forwarder};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarder_api_and_completion_over_moto() {
    let sdk = sdk_config().await;
    let settings = Settings {
        logs_table: unique("fn-logs"),
        connections_table: unique("fn-conns"),
        log_group: format!("/aws/ecs/{}/runner", unique("fn")),
        stream_template: "task/runner/{execution_id}".into(),
        secret_arn: None,
        token_secret_arn: None,
        websocket_url: Some("wss://example.execute-api.us-east-1.amazonaws.com/prod".into()),
        websocket_endpoint: Some(moto_endpoint()),
        retention_days: 7,
        runner_container: "runner".into(),
        completion_grace_secs: 0,
        completion_queue_url: None,
        forwarder_queue_url: None,
    };
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    create_tables(&dynamo, &settings.logs_table, &settings.connections_table)
        .await
        .unwrap();
    let logs = aws_sdk_cloudwatchlogs::Client::new(&sdk);
    logs.create_log_group()
        .log_group_name(&settings.log_group)
        .send()
        .await
        .unwrap();
    let exec = "3f9c2b7a1d8e4c5b9a0f6e2d1c4b7a89";
    let stream = format!("task/runner/{exec}");
    logs.create_log_stream()
        .log_group_name(&settings.log_group)
        .log_stream_name(&stream)
        .send()
        .await
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let lines: Vec<(i64, String)> = (0..5)
        .map(|i| (now - 1_000 + i, format!("line {i}")))
        .collect();
    logs.put_log_events()
        .log_group_name(&settings.log_group)
        .log_stream_name(&stream)
        .set_log_events(Some(
            lines
                .iter()
                .map(|(t, m)| {
                    InputLogEvent::builder()
                        .timestamp(*t)
                        .message(m)
                        .build()
                        .unwrap()
                })
                .collect(),
        ))
        .send()
        .await
        .unwrap();

    let d = Deployment::new(runvoy_lambda::Function::Forwarder, settings, sdk).unwrap();
    // The subscription delivers the first three lines, twice.
    let evs: Vec<Value> = lines[..3]
        .iter()
        .enumerate()
        .map(|(i, (t, m))| serde_json::json!({"id": i.to_string(), "timestamp": t, "message": m}))
        .collect();
    let payload = serde_json::json!({"messageType":"DATA_MESSAGE","owner":"1","logGroup":"/g",
        "logStream": stream, "subscriptionFilters":["f"],"logEvents": evs});
    let event =
        serde_json::json!({"awslogs": {"data": subscription::encode(&payload.to_string())}});
    let first = forwarder::handle(&d.services, &d.names, &d.metrics, &event)
        .await
        .unwrap();
    let again = forwarder::handle(&d.services, &d.names, &d.metrics, &event)
        .await
        .unwrap();
    assert_eq!(
        (first.appended, again.appended, again.duplicates),
        (3, 0, 3)
    );

    // The ECS task stops: completion reconciles the two lines the subscription never delivered.
    let stopped = std::fs::read_to_string(format!(
        "{}/../fixtures/ecs-task-stopped.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let out = completion::handle(
        &d.services,
        "runner",
        &serde_json::from_str(&stopped).unwrap(),
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        out,
        Outcome::Completed {
            execution_id: exec.into(),
            status: Status::Failed,
            exit_code: Some(3),
            final_index: 5
        }
    );

    let keys = runvoy_core::auth::ApiKeys::new(
        parse_api_keys(r#"{"api_keys":["0123456789abcdef0123"]}"#).unwrap(),
    );
    let signer = parse_token_secret(r#"{"token_secret":"fedcba9876543210fedcba"}"#).unwrap();
    let api = d.services.api(keys, signer, ApiConfig::default());
    let r = api
        .handle(HttpRequest {
            method: "GET".into(),
            path: format!("/api/v1/executions/{exec}/logs"),
            query: String::new(),
            api_key: Some("0123456789abcdef0123".into()),
            accept: None,
            body: vec![],
        })
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let page: Value = serde_json::from_str(&r.body).unwrap();
    let messages: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages, ["line 0", "line 1", "line 2", "line 3", "line 4"]);
    assert_eq!(
        (page["final_index"].as_u64(), page["exit_code"].as_i64()),
        (Some(5), Some(3))
    );
}

#[test]
fn secrets_must_be_complete() {
    assert!(parse_api_keys("{}").is_err());
    assert!(parse_api_keys(r#"{"api_keys":["short"]}"#).is_err());
    assert!(parse_token_secret("{}").is_err());
    assert!(parse_token_secret(r#"{"token_secret":"x"}"#).is_err());
}
