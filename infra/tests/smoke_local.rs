//! `deploy smoke` against a running local stack: every invariant it checks holds, and a stack
//! it cannot use makes it fail.

use std::process::Command;

use runvoy_local::{LocalConfig, LocalStack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_passes_on_the_local_stack_and_fails_without_access() {
    let dir = std::env::temp_dir().join(runvoy_local::state::random_hex(6));
    let stack = LocalStack::start(LocalConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        state_dir: dir.clone(),
        chaos: "dup=0.3,reorder=0.3,drop=0.05,delay-ms=0-100"
            .parse()
            .unwrap(),
        ..LocalConfig::default()
    })
    .await
    .unwrap();
    let run = |key: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_deploy"));
        c.args([
            "smoke",
            "--env",
            "local",
            "--lines",
            "400",
            "--timeout",
            "30",
            "--api-url",
            &stack.http_url(),
            "--api-key",
            key,
        ])
        .env("XDG_CONFIG_HOME", dir.join("config"));
        c
    };
    let mut good = run(&stack.api_key);
    let out = tokio::task::spawn_blocking(move || good.output().unwrap())
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for inv in ["I1", "I2", "I5", "I6"] {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("ok  {inv}"))),
            "{inv} missing:\n{text}"
        );
    }
    assert!(text.contains("400 lines written, 400 committed"), "{text}");

    let mut bad = run("not-the-key");
    let out = tokio::task::spawn_blocking(move || bad.output().unwrap())
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("401"), "{err}");
    stack.stop().await;
}
