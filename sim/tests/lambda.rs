//! The sim's Lambda against a function that speaks the Runtime API (a small Python program):
//! responses, errors, crashes, timeouts, the 6 MB response limit, the environment, and
//! asynchronous retries ending in the on-failure destination.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use runvoy_sim::lambda::{AsyncConfig, FailureDestination, Function, FunctionSpec, InvokeError};
use serde_json::{Value, json};

fn function(timeout: Duration) -> Arc<Function> {
    let dir = std::env::temp_dir().join(format!("sim-lambda-{}", runvoy_runtime::random_hex(4)));
    std::fs::create_dir_all(&dir).unwrap();
    Function::new(FunctionSpec {
        logical_id: "Fake".into(),
        name: "fake".into(),
        arn: "arn:aws:lambda:us-east-1:123456789012:function:fake".into(),
        binary: concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/fake-function").into(),
        env: vec![
            ("PATH".into(), std::env::var("PATH").unwrap()),
            ("FROM_TEMPLATE".into(), "yes".into()),
        ],
        timeout,
        memory_mb: 256,
        log_file: dir.join("fake.log"),
        max_concurrency: 2,
    })
}

async fn invoke(f: &Function, event: Value) -> Result<Value, InvokeError> {
    f.invoke(event.to_string().into_bytes())
        .await
        .map(|b| serde_json::from_slice(&b).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invocations_answer_fail_and_time_out_as_lambda_does() {
    let f = function(Duration::from_secs(2));
    assert_eq!(invoke(&f, json!({"echo": 7})).await, Ok(json!(7)));
    assert_eq!(
        invoke(&f, json!({"env": "FROM_TEMPLATE"})).await,
        Ok(json!("yes")),
        "the template's environment"
    );
    assert_eq!(
        invoke(&f, json!({"env": "HOME"})).await,
        Ok(Value::Null),
        "and nothing of the sim's own"
    );
    assert!(matches!(
        invoke(&f, json!({"error": "no"})).await,
        Err(InvokeError::Function { error_type, message }) if error_type == "Boom" && message == "no"
    ));
    assert_eq!(
        invoke(&f, json!({"big": 7_000_000})).await,
        Err(InvokeError::ResponseTooLarge(7_000_002))
    );
    assert_eq!(
        invoke(&f, json!({"sleep": 5})).await,
        Err(InvokeError::Timeout(Duration::from_secs(2)))
    );
    assert!(matches!(
        invoke(&f, json!({"crash": 3})).await,
        Err(InvokeError::Function { error_type, message })
            if error_type == "Runtime.ExitError" && message.contains("3")
    ));
    // A new environment replaces the one that timed out or crashed.
    assert_eq!(
        invoke(&f, json!({"echo": "again"})).await,
        Ok(json!("again"))
    );
    let stats = f.stats();
    assert_eq!((stats.timeouts, stats.errors), (1, 3), "{stats:?}");
    assert!(stats.cold_starts >= 3, "{stats:?}");
}

struct Recorder(Mutex<Vec<Value>>);

#[async_trait::async_trait]
impl FailureDestination for Recorder {
    async fn send(&self, record: Value) -> Result<(), String> {
        self.0.lock().unwrap().push(record);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asynchronous_invocations_are_retried_then_sent_to_the_destination() {
    let f = function(Duration::from_secs(2));
    let dest = Arc::new(Recorder(Mutex::default()));
    let config = AsyncConfig {
        max_retries: 2,
        retry_delays: vec![Duration::from_millis(10)],
        on_failure: Some(dest.clone()),
        duplicate: 0.0,
    };
    let r = f
        .clone()
        .invoke_async(
            json!({"error": "always"}).to_string().into_bytes(),
            config.clone(),
        )
        .await;
    assert!(r.is_err());
    let records = dest.0.lock().unwrap().clone();
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0]["requestContext"]["condition"],
        "RetriesExhausted"
    );
    assert_eq!(records[0]["requestContext"]["approximateInvokeCount"], 3);
    assert_eq!(records[0]["requestPayload"], json!({"error": "always"}));
    assert_eq!(f.stats().invocations, 3, "one attempt and two retries");
    // Payloads above Lambda's asynchronous limit are refused at once.
    let big = vec![b' '; 2 * 1024 * 1024];
    assert!(matches!(
        f.clone().invoke_async(big, config).await,
        Err(InvokeError::PayloadTooLarge(_))
    ));
}
