//! Whatever answers at the API's address: the API key goes only where `--api-url` points (a
//! redirect is reported, and the key never reaches its target; nor does `--help` show it), an
//! answer is read with a bound, and the names it sends cannot drive the terminal.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

#[test]
fn a_redirect_is_reported_and_never_followed_with_the_key() {
    let target = TcpListener::bind("127.0.0.1:0").unwrap();
    let target_addr = target.local_addr().unwrap();
    let reached = Arc::new(AtomicUsize::new(0));
    {
        let reached = reached.clone();
        std::thread::spawn(move || {
            for s in target.incoming().flatten() {
                reached.fetch_add(1, Ordering::SeqCst);
                drop(s);
            }
        });
    }
    let api = TcpListener::bind("127.0.0.1:0").unwrap();
    let api_addr = api.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut s in api.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://{target_addr}/api/v1/executions/x/logs\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runvoy"))
        .args(["logs", "x", "--no-follow"])
        .env("RUNVOY_API_URL", format!("http://{api_addr}"))
        .env("RUNVOY_API_KEY", "the-secret-key-0123456789")
        .env(
            "XDG_CONFIG_HOME",
            std::env::temp_dir().join("runvoy-redirects-none"),
        )
        .env_remove("RUNVOY_PROFILE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "the API answered 307 with a redirect to http://{target_addr}/api/v1/executions/x/logs; the API key is not sent there"
        )),
        "{err}"
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(
        reached.load(Ordering::SeqCst),
        0,
        "the target was never contacted"
    );
}

#[test]
fn help_never_shows_the_key_from_the_environment() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runvoy"))
        .args(["logs", "--help"])
        .env("RUNVOY_API_KEY", "key-from-the-environment-0123456789")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--api-key"), "{help}");
    assert!(!help.contains("key-from-the-environment"), "{help}");
}

/// Whatever answers at the API's address cannot make the CLI hold an unbounded body: a logs
/// page of 100 MB and an error of 100 MB are cut short, with one sentence, exit 125.
#[test]
fn outsized_answers_are_refused_not_read_whole() {
    for (status, what) in [
        ("200 OK", "a page of logs is larger than"),
        ("403 Forbidden", "access denied (403)"),
    ] {
        let api = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = api.local_addr().unwrap();
        std::thread::spawn(move || {
            for mut s in api.incoming().flatten() {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: 104857600\r\nConnection: close\r\n\r\n"
                );
                let chunk = vec![b' '; 1 << 20];
                for _ in 0..100 {
                    if s.write_all(&chunk).is_err() {
                        break;
                    }
                }
            }
        });
        let started = std::time::Instant::now();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_runvoy"))
            .args(["logs", "x", "--no-follow", "--json"])
            .env("RUNVOY_API_URL", format!("http://{addr}"))
            .env("RUNVOY_API_KEY", "the-secret-key-0123456789")
            .env(
                "XDG_CONFIG_HOME",
                std::env::temp_dir().join("runvoy-outsized-none"),
            )
            .env_remove("RUNVOY_PROFILE")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{status}: {err}");
        assert!(err.contains(what), "{status}: {err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(60));
    }
}

/// What the API names an execution cannot drive the terminal: `status` and `ls` show its
/// control characters instead of sending them.
#[test]
fn an_api_cannot_drive_the_terminal_through_status_or_ls() {
    let hostile = "x\u{1b}]0;owned\u{7}\u{1b}[2J";
    let api = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = api.local_addr().unwrap();
    let id = serde_json::json!(hostile);
    std::thread::spawn(move || {
        for mut s in api.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]).to_string();
            let body = if request.starts_with("GET /api/v1/executions?") {
                format!(
                    r#"{{"executions":[{{"execution_id":{id},"status":"SUCCEEDED","exit_code":0,"final_index":1,"created_at":1,"updated_at":2}}]}}"#
                )
            } else {
                format!(
                    r#"{{"execution_id":{id},"status":"RUNNING","last_index":1,"created_at":1,"updated_at":2}}"#
                )
            };
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    for args in [&["status", "x"][..], &["ls"][..]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_runvoy"))
            .args(args)
            .env("RUNVOY_API_URL", format!("http://{addr}"))
            .env("RUNVOY_API_KEY", "the-secret-key-0123456789")
            .env(
                "XDG_CONFIG_HOME",
                std::env::temp_dir().join("runvoy-hostile-none"),
            )
            .env_remove("RUNVOY_PROFILE")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stdout}");
        assert!(
            stdout.contains("owned"),
            "{args:?}: the id is shown: {stdout}"
        );
        assert!(
            !stdout.contains('\u{1b}') && !stdout.contains('\u{7}'),
            "{args:?}: control characters reached the terminal: {stdout:?}"
        );
    }
}
