//! End-to-end: the real `runvoy` binary against the local stack and against the sim (the AWS
//! path: the rendered template, the function binaries and AWS's rules on moto). One suite, run
//! on both (spec §7, §8).

mod common;

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Kind, Stack, numbered, output, stdout_lines};

/// Runs each test of `both` on both stacks (`local::name`, `sim::name`), and each of `local` on
/// the local stack only.
macro_rules! suite {
    (both: [$($name:ident),* $(,)?], local: [$($only:ident),* $(,)?]) => {
        mod local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Kind::Local).await
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $only() {
                    super::$only(super::Kind::Local).await
                }
            )*
        }
        mod sim {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Kind::Sim).await
                }
            )*
        }
    };
}

suite! {
    both: [
        late_connection_prints_from_the_first_line,
        disconnection_and_server_restart_lose_and_repeat_nothing,
        pipes_grep_head_and_json,
        exit_codes_follow_the_spec,
        stdout_carries_only_log_lines_and_stderr_stays_quiet_off_a_terminal,
        deploy_smoke_passes_and_fails_without_access,
        high_volume_run_is_complete_and_in_order,
        chaos_delivery_prints_each_line_once_in_order,
        a_slow_reader_survives_a_restart_in_the_middle_of_the_backlog,
        pages_of_uneven_size_print_every_line_once,
        an_execution_past_its_retention_is_expired_not_running,
        lines_keep_coming_while_the_websocket_handshake_hangs,
        late_lines_with_older_timestamps_are_printed_once_when_every_delivery_is_lost,
        a_follower_started_before_the_first_line_waits_for_it,
        tail_and_since_start_exactly_where_asked,
        ls_lists_recent_executions_newest_first,
    ],
    local: [hostile_log_text_cannot_drive_the_terminal]
}

/// A logged line cannot set the title, write the clipboard, fake a link, hide text with `\r` or
/// forge a line on a terminal (a pseudo-terminal made by `script`), keeps its colours and tabs,
/// and reaches a pipe byte-exact; `--raw` gives the terminal the bytes too.
async fn hostile_log_text_cannot_drive_the_terminal(kind: Kind) {
    let s = Stack::start(kind, "tty", None).await;
    let hostile = vec![
        "title \x1b]0;pwned\x07 clip \x1b]52;c;ZXZpbA==\x07".to_string(),
        "link \x1b]8;;http://evil.example\x1b\\click\x1b]8;;\x1b\\".to_string(),
        "\x1b[31mred\x1b[0m\tafter a tab".to_string(),
        "innocent\rrm -rf".to_string(),
        "one event\n2 forged line".to_string(),
    ];
    s.put_lines("tty-1", &hostile).await;
    s.complete("tty-1", "SUCCEEDED", Some(0)).await;
    let in_a_terminal = |extra: &str| {
        let mut c = std::process::Command::new("script");
        c.args(["-q", "-e", "-c"])
            .arg(format!(
                "{} logs tty-1 {extra}",
                env!("CARGO_BIN_EXE_runvoy")
            ))
            .arg("/dev/null")
            .env("RUNVOY_API_URL", s.url())
            .env("RUNVOY_API_KEY", &s.key)
            .env("XDG_CONFIG_HOME", s.dir.join("config"))
            .env_remove("RUNVOY_PROFILE");
        output(c)
    };
    let tty = in_a_terminal("").await;
    assert!(tty.status.success());
    let shown = String::from_utf8_lossy(&tty.stdout).to_string();
    for (expected, what) in [
        (
            "title ^[]0;pwned^G clip ^[]52;c;ZXZpbA==^G",
            "title and clipboard",
        ),
        ("link ^[]8;;http://evil.example^[\\click", "hyperlink"),
        (
            "\x1b[31mred\x1b[0m\tafter a tab\x1b[0m",
            "colours and tabs kept",
        ),
        ("innocent^Mrm -rf", "carriage return"),
        ("one event^J2 forged line", "forged line"),
    ] {
        assert!(shown.contains(expected), "{what}: {shown:?}");
    }
    assert!(
        !shown.contains("\x1b]"),
        "no OSC reaches the terminal: {shown:?}"
    );

    let raw = in_a_terminal("--raw").await;
    assert!(String::from_utf8_lossy(&raw.stdout).contains("\x1b]0;pwned\x07"));

    let piped = output(s.runvoy(&["logs", "tty-1"])).await;
    let expected: String = hostile.iter().map(|l| format!("{l}\n")).collect();
    assert_eq!(
        String::from_utf8_lossy(&piped.stdout),
        expected,
        "a pipe gets the bytes"
    );
}

async fn late_connection_prints_from_the_first_line(kind: Kind) {
    let s = Stack::start(kind, "late", None).await;
    let lines = numbered("early", 1, 3_000);
    for chunk in lines.chunks(500) {
        s.put_lines("late-1", chunk).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut cmd = s.runvoy(&["logs", "late-1"]);
    cmd.stdout(Stdio::piped());
    let child = tokio::task::spawn_blocking(move || cmd.output().unwrap());
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.put_lines("late-1", &numbered("later", 1, 10)).await;
    s.complete("late-1", "SUCCEEDED", Some(0)).await;
    let out = child.await.unwrap();
    let mut want = lines.clone();
    want.extend(numbered("later", 1, 10));
    assert_eq!(stdout_lines(&out), want);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        out.stderr.is_empty(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn disconnection_and_server_restart_lose_and_repeat_nothing(kind: Kind) {
    let mut s = Stack::start(kind, "restart", None).await;
    s.put_lines("rs-1", &numbered("a", 1, 100)).await;
    let cmd = s.runvoy(&["logs", "rs-1", "--index", "-v"]);
    let child = tokio::task::spawn_blocking({
        let mut cmd = cmd;
        move || cmd.output().unwrap()
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    s.put_lines("rs-1", &numbered("b", 1, 100)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The server goes away for several seconds: the socket is cut, HTTP is refused.
    s.stop().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    s.restart().await;
    s.put_lines("rs-1", &numbered("c", 1, 100)).await;
    s.complete("rs-1", "FAILED", Some(3)).await;
    let out = output_of(child).await;
    let want: Vec<String> = ["a", "b", "c"]
        .iter()
        .flat_map(|p| numbered(p, 1, 100))
        .enumerate()
        .map(|(i, m)| format!("{} {m}", i + 1))
        .collect();
    assert_eq!(stdout_lines(&out), want);
    assert_eq!(out.status.code(), Some(3));
    let notices = String::from_utf8_lossy(&out.stderr);
    assert!(
        notices.contains("retrying"),
        "the client never had to reconnect: {notices}"
    );
    assert!(
        notices.contains("resumed after line "),
        "it said where it resumed: {notices}"
    );
}

async fn output_of(h: tokio::task::JoinHandle<std::process::Output>) -> std::process::Output {
    tokio::time::timeout(Duration::from_secs(120), h)
        .await
        .expect("the client did not finish")
        .unwrap()
}

async fn chaos_delivery_prints_each_line_once_in_order(kind: Kind) {
    let s = Stack::start(
        kind,
        "chaos",
        Some("dup=0.3,reorder=0.3,drop=0.05,delay-ms=0-300"),
    )
    .await;
    s.put_lines("chaos-1", &numbered("x", 1, 10)).await;
    let mut followers = Vec::new();
    for _ in 0..2 {
        let mut cmd = s.runvoy(&["logs", "chaos-1", "--json"]);
        followers.push(tokio::task::spawn_blocking(move || cmd.output().unwrap()));
    }
    let total = 50_000;
    for chunk in numbered("x", 11, total).chunks(250) {
        s.put_lines("chaos-1", chunk).await;
    }
    s.complete("chaos-1", "SUCCEEDED", None).await;
    assert!(
        s.counter("duplicates_dropped") > 0,
        "chaos delivered no duplicate"
    );
    for f in followers {
        let out = output_of(f).await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines = stdout_lines(&out);
        assert_eq!(lines.len(), total);
        // Contiguous indexes, each event once, and every source line exactly once.
        let mut seen_ids = std::collections::HashSet::new();
        let mut messages = Vec::with_capacity(total);
        for (i, l) in lines.iter().enumerate() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["index"].as_u64(), Some(i as u64 + 1));
            assert!(seen_ids.insert(v["event_id"].as_str().unwrap().to_string()));
            messages.push(v["message"].as_str().unwrap().to_string());
        }
        messages.sort_by_key(|m| m[2..].parse::<usize>().unwrap());
        assert_eq!(messages, numbered("x", 1, total));
    }
    assert!(
        s.counter("events_reconciled") > 0,
        "nothing dropped was recovered"
    );
}

async fn high_volume_run_is_complete_and_in_order(kind: Kind) {
    let s = Stack::start(kind, "volume", None).await;
    let out = output(s.runvoy(&["run", "--", "seq", "1", "100000"])).await;
    assert_eq!(out.status.code(), Some(0));
    let lines = stdout_lines(&out);
    assert_eq!(lines.len(), 100_000);
    assert!(
        lines
            .iter()
            .enumerate()
            .all(|(i, l)| *l == (i + 1).to_string())
    );
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with("execution ") && err.lines().count() == 1,
        "stderr: {err}"
    );
}

async fn pipes_grep_head_and_json(kind: Kind) {
    let s = Stack::start(kind, "pipes", None).await;
    let lines: Vec<String> = (1..=5_000)
        .map(|i| {
            if i % 100 == 0 {
                format!("error {i}")
            } else {
                format!("ok {i}")
            }
        })
        .collect();
    for chunk in lines.chunks(1_000) {
        s.put_lines("pipe-1", chunk).await;
    }
    s.complete("pipe-1", "SUCCEEDED", Some(0)).await;
    let bin = env!("CARGO_BIN_EXE_runvoy");
    let sh = |script: &str| {
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c")
            .arg(script.replace("RUNVOY", bin))
            .env("RUNVOY_API_URL", s.url())
            .env("RUNVOY_API_KEY", &s.key)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    };
    let grep = output(sh("RUNVOY logs pipe-1 | grep error")).await;
    let want: Vec<String> = lines
        .iter()
        .filter(|l| l.contains("error"))
        .cloned()
        .collect();
    assert_eq!(stdout_lines(&grep), want);

    let started = Instant::now();
    let head = output(sh("RUNVOY logs pipe-1 | head -5")).await;
    assert_eq!(stdout_lines(&head), lines[..5].to_vec());
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        head.stderr.is_empty(),
        "stderr: {}",
        String::from_utf8_lossy(&head.stderr)
    );

    // --index and --timestamps prefix the raw message: "<index> <RFC 3339 UTC> <message>".
    let decorated = output(s.runvoy(&[
        "logs",
        "pipe-1",
        "--index",
        "--timestamps",
        "--since-index",
        "99",
        "--no-follow",
    ]))
    .await;
    let first = stdout_lines(&decorated)[0].clone();
    let parts: Vec<&str> = first.splitn(3, ' ').collect();
    assert_eq!(parts[0], "100", "{first}");
    assert!(
        parts[1].len() == 24 && parts[1].ends_with('Z') && parts[1].contains('T'),
        "{first}"
    );
    assert_eq!(parts[2], "error 100", "{first}");
    let json = output(s.runvoy(&["logs", "pipe-1", "--json", "--since-index", "4990"])).await;
    let objs: Vec<serde_json::Value> = stdout_lines(&json)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let idx: Vec<u64> = objs.iter().map(|v| v["index"].as_u64().unwrap()).collect();
    assert_eq!(idx, (4991..=5000).collect::<Vec<_>>());
    for v in &objs {
        let mut keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, ["event_id", "index", "message", "timestamp"]);
    }
}

async fn exit_codes_follow_the_spec(kind: Kind) {
    let s = Stack::start(kind, "codes", None).await;
    let seven = output(s.runvoy(&["run", "--", "sh", "-c", "echo bye; exit 7"])).await;
    assert_eq!(seven.status.code(), Some(7));
    assert_eq!(stdout_lines(&seven), vec!["bye"]);

    // An execution that does not exist is waited for (`--wait`, 5m by default); `--wait 0`
    // is the immediate failure.
    let unknown = output(s.runvoy(&["logs", "no-such-execution", "--wait", "0"])).await;
    assert_eq!(unknown.status.code(), Some(125));
    assert_one_sentence(&unknown.stderr, "not found");

    let mut bad_key = s.runvoy(&["logs", "x"]);
    bad_key.env("RUNVOY_API_KEY", "wrong-key");
    let bad_key = output(bad_key).await;
    assert_eq!(bad_key.status.code(), Some(125));
    assert_one_sentence(&bad_key.stderr, "API key");

    let mut unreachable = s.runvoy(&["logs", "x"]);
    unreachable.env(
        "RUNVOY_API_URL",
        format!("http://127.0.0.1:{}", common::free_port()),
    );
    let unreachable = output(unreachable).await;
    assert_eq!(unreachable.status.code(), Some(125));
    assert_one_sentence(&unreachable.stderr, "cannot reach");

    for usage in [
        vec!["logs"],
        vec!["logs", "x", "--since-index", "-3"],
        vec!["frobnicate"],
        vec!["run"],
    ] {
        let o = output(s.runvoy(&usage)).await;
        assert_eq!(o.status.code(), Some(2), "{usage:?}");
    }
    // --no-follow exits 0 after printing, whatever the execution's state.
    s.put_lines("nf-1", &numbered("n", 1, 3)).await;
    let nf = output(s.runvoy(&["logs", "nf-1", "--no-follow"])).await;
    assert_eq!(
        (nf.status.code(), stdout_lines(&nf)),
        (Some(0), numbered("n", 1, 3))
    );
    // Status of a finished run.
    let st = output(s.runvoy(&["status", "nf-1", "--output", "json"])).await;
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(
        (v["status"].as_str(), v["last_index"].as_u64()),
        (Some("RUNNING"), Some(3))
    );
}

fn assert_one_sentence(stderr: &[u8], needle: &str) {
    let err = String::from_utf8_lossy(stderr);
    assert_eq!(err.lines().count(), 1, "stderr: {err}");
    assert!(err.contains(needle), "stderr: {err}");
}

async fn stdout_carries_only_log_lines_and_stderr_stays_quiet_off_a_terminal(kind: Kind) {
    let mut s = Stack::start(kind, "quiet", None).await;
    s.put_lines("q-1", &numbered("q", 1, 5)).await;
    let mut cmd = s.runvoy(&["logs", "q-1"]);
    let child = tokio::task::spawn_blocking(move || {
        let mut c = cmd.spawn().unwrap();
        let mut out = String::new();
        c.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        let mut err = String::new();
        c.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        (c.wait().unwrap().code(), out, err)
    });
    tokio::time::sleep(Duration::from_millis(600)).await;
    // A reconnect happens (server restart): still nothing on stderr, since it is not a terminal.
    s.stop().await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    s.restart().await;
    s.put_lines("q-1", &numbered("q", 6, 8)).await;
    s.complete("q-1", "STOPPED", None).await;
    let (code, out, err) = tokio::time::timeout(Duration::from_secs(60), child)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.lines().collect::<Vec<_>>(), numbered("q", 1, 8));
    assert_eq!(err, "");
    assert_eq!(code, Some(1), "STOPPED without an exit code exits 1");
}

/// Runs the binary on a pseudo-terminal (util-linux `script`) and returns what the terminal saw.
fn on_terminal(args: &str, no_color: bool) -> String {
    let mut c = std::process::Command::new("script");
    c.args([
        "-qec",
        &format!("{} {args}", env!("CARGO_BIN_EXE_runvoy")),
        "/dev/null",
    ])
    .env(
        "RUNVOY_API_URL",
        format!("http://127.0.0.1:{}", common::free_port()),
    )
    .env("RUNVOY_API_KEY", "k")
    .env("XDG_CONFIG_HOME", common::temp_dir("tty"))
    .stdin(Stdio::null());
    if no_color {
        c.env("NO_COLOR", "1");
    } else {
        c.env_remove("NO_COLOR");
    }
    let out = c.output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn errors_are_coloured_only_on_a_terminal_and_never_with_no_color() {
    let coloured = on_terminal("logs x", false);
    assert!(coloured.contains("\x1b[31merror:"), "{coloured:?}");
    let plain = on_terminal("logs x", true);
    assert!(
        plain.contains("error: cannot reach") && !plain.contains('\x1b'),
        "{plain:?}"
    );
    // Off a terminal: no escape codes either (stderr is a pipe here).
    let piped = std::process::Command::new(env!("CARGO_BIN_EXE_runvoy"))
        .args([
            "logs",
            "x",
            "--api-url",
            &format!("http://127.0.0.1:{}", common::free_port()),
            "--api-key",
            "k",
        ])
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&piped.stderr);
    assert!(
        err.starts_with("error: ") && !err.contains('\x1b'),
        "{err:?}"
    );
}

#[test]
fn configuration_comes_from_flags_then_environment_then_the_config_file() {
    let dir = common::temp_dir("config");
    let (a, b, c, d) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    std::fs::create_dir_all(dir.join("runvoy")).unwrap();
    std::fs::write(
        dir.join("runvoy/config.toml"),
        format!(
            "default_profile = \"local\"\n[profiles.local]\napi_url = \"http://127.0.0.1:{a}\"\napi_key = \"k\"\n\
             [profiles.prod]\napi_url = \"http://127.0.0.1:{b}\"\napi_key = \"k\"\n"
        ),
    )
    .unwrap();
    let url_tried = |args: &[&str], env: &[(&str, String)]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_runvoy"));
        cmd.args(["status", "x"])
            .args(args)
            .env("XDG_CONFIG_HOME", &dir);
        for k in ["RUNVOY_API_URL", "RUNVOY_API_KEY", "RUNVOY_PROFILE"] {
            cmd.env_remove(k);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(125));
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        err.split("API at ")
            .nth(1)
            .and_then(|s| s.split(':').nth(2))
            .map(|p| p.to_string())
            .unwrap_or(err)
    };
    assert_eq!(
        url_tried(&[], &[]),
        a.to_string(),
        "the file's default profile"
    );
    assert_eq!(
        url_tried(&[], &[("RUNVOY_PROFILE", "prod".into())]),
        b.to_string(),
        "RUNVOY_PROFILE"
    );
    assert_eq!(
        url_tried(&["--profile", "prod"], &[]),
        b.to_string(),
        "--profile"
    );
    let env_url = [
        ("RUNVOY_API_URL", format!("http://127.0.0.1:{c}")),
        ("RUNVOY_API_KEY", "k2".to_string()),
    ];
    assert_eq!(
        url_tried(&[], &env_url),
        c.to_string(),
        "environment over the file"
    );
    let flag = format!("http://127.0.0.1:{d}");
    assert_eq!(
        url_tried(&["--api-url", &flag], &env_url),
        d.to_string(),
        "flag over the environment"
    );
    // A URL from the environment with the key only in a profile: the key stays with its API.
    let stranger = url_tried(&[], &env_url[..1]);
    assert!(
        stranger.contains("is sent only to http://127.0.0.1:"),
        "{stranger}"
    );
    // A key from the environment with the profile's URL: refused too.
    let loose = url_tried(&[], &env_url[1..]);
    assert!(loose.contains("RUNVOY_API_KEY is set but"), "{loose}");
    // Plain HTTP to another machine, unless --insecure.
    let remote = url_tried(
        &["--api-url", "http://10.1.2.3:8787", "--api-key", "k"],
        &[],
    );
    assert!(remote.contains("plain HTTP to another machine"), "{remote}");
    let unknown = url_tried(&["--profile", "staging"], &[]);
    assert!(unknown.contains("profile 'staging' is not in"), "{unknown}");
}

/// `deploy smoke` against a running stack under delivery chaos: every invariant it checks
/// holds, and a stack it cannot use makes it fail.
async fn deploy_smoke_passes_and_fails_without_access(kind: Kind) {
    let s = Stack::start(
        kind,
        "smoke",
        Some("dup=0.3,reorder=0.3,drop=0.05,delay-ms=0-100"),
    )
    .await;
    let env = if kind == Kind::Sim { "sim" } else { "local" };
    let smoke = |key: &str| {
        let mut c = std::process::Command::new(common::bin_dir().join("deploy"));
        c.args(["smoke", "--env", env, "--lines", "400", "--timeout", "60"])
            .args(["--api-url", &s.url(), "--api-key", key])
            .env("XDG_CONFIG_HOME", s.dir.join("config"));
        c
    };
    let out = output(smoke(&s.key)).await;
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

    let out = output(smoke("not-the-key")).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("401"), "{err}");
}

/// `runvoy logs --no-follow | slow-reader`: the CLI blocks on a full pipe after its first page
/// while the stack restarts (its pooled connection is closed); it must go on from the line after
/// the last one it printed, not end with 125.
async fn a_slow_reader_survives_a_restart_in_the_middle_of_the_backlog(kind: Kind) {
    let mut s = Stack::start(kind, "slowpipe", None).await;
    let pad = "x".repeat(100);
    // Three pages of 10,000 lines: the client requests the next page while it prints one.
    let n = 25_000;
    let lines: Vec<String> = (1..=n).map(|i| format!("{i} {pad}")).collect();
    for chunk in lines.chunks(2_500) {
        s.put_lines("slow-1", chunk).await;
    }
    // Committed before the reader starts (the sim delivers asynchronously).
    s.wait_committed("slow-1", n).await;
    let mut child = s
        .runvoy(&["logs", "slow-1", "--no-follow"])
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    // The first page (about 1 MB) fills the pipe and the second is fetched ahead; nobody reads
    // until the stack is down, so the third page is asked for while nothing answers.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    s.stop().await;
    let reader = tokio::task::spawn_blocking(move || {
        let mut out = String::new();
        stdout.read_to_string(&mut out).unwrap();
        (out, child.wait().unwrap())
    });
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    s.restart().await;
    let (out, status) = reader.await.unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(out.lines().count(), n as usize);
    assert!(out.lines().eq(lines.iter().map(String::as_str)));
}

/// Short lines fill a page by count (10,000), long ones by bytes (about 1,900 lines of 2 KB in
/// 4 MB): the client's guess of where the page after next starts is too far at the change to
/// long lines and short of it at the change back, and what it fetched ahead from a wrong place
/// must not be printed.
async fn pages_of_uneven_size_print_every_line_once(kind: Kind) {
    let s = Stack::start(kind, "uneven", None).await;
    let long = "y".repeat(2_000);
    let lines: Vec<String> = (1..=25_000)
        .map(|i| match i {
            12_001..=15_000 => format!("{i} {long}"),
            _ => format!("{i} short"),
        })
        .collect();
    for chunk in lines[..3_000]
        .chunks(400)
        .chain(lines[3_000..].chunks(5_000))
    {
        s.put_lines("uneven-1", chunk).await;
    }
    s.complete("uneven-1", "SUCCEEDED", Some(0)).await;
    let out = output(s.runvoy(&["logs", "uneven-1", "--no-follow"])).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = stdout_lines(&out);
    assert_eq!(printed.len(), lines.len());
    if let Some(i) = (0..lines.len()).find(|&i| printed[i] != lines[i]) {
        panic!("line {} differs: {:.40}", i + 1, printed[i]);
    }
}

/// Lines eight days old (within CloudWatch's 14 days, past the 7-day retention) of an execution
/// the store no longer has: the CLI says it expired and stops; it never comes back RUNNING.
async fn an_execution_past_its_retention_is_expired_not_running(kind: Kind) {
    let s = Stack::start(kind, "expired", None).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let old = now - 8 * 86_400_000;
    let events: Vec<serde_json::Value> = (0..3)
        .map(|i| serde_json::json!({"timestamp": old + i, "message": format!("old {i}")}))
        .collect();
    let r = s
        .post(
            "/local/v1/streams/old-1/events",
            &serde_json::json!({ "events": events }),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let logs = output(s.runvoy(&["logs", "old-1"])).await;
    assert_eq!(logs.status.code(), Some(125));
    assert!(logs.stdout.is_empty());
    let err = String::from_utf8_lossy(&logs.stderr);
    assert!(err.contains("expired"), "{err}");
    let status = output(s.runvoy(&["status", "old-1"])).await;
    assert_eq!(status.status.code(), Some(125));
}

/// Every WebSocket handshake takes 30 s (a `$connect` stuck behind a cold start or a slow store
/// write), longer than the CLI waits for one (10 s): lines written meanwhile are printed over
/// HTTP while the handshake is pending, not once the client gave up on it, and the end of the
/// execution ends the CLI without a socket.
async fn lines_keep_coming_while_the_websocket_handshake_hangs(kind: Kind) {
    use std::io::BufRead;
    use std::sync::mpsc;
    let s = Stack::start(kind, "handshake", Some("connect-ms=30000")).await;
    s.put_lines("hs-1", &numbered("a", 1, 5)).await;
    let mut child = s.runvoy(&["logs", "hs-1", "-v"]).spawn().unwrap();
    // Both streams into one channel, in the order they were written.
    let (tx, rx) = mpsc::channel::<(&str, String)>();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let out_tx = tx.clone();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = out_tx.send(("out", l));
        }
    });
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(("err", l));
        }
    });
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    s.put_lines("hs-1", &numbered("b", 1, 5)).await;
    let mut seen: Vec<(&str, String)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !seen.iter().any(|(k, l)| *k == "out" && l == "b 5") {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::task::block_in_place(|| rx.recv_timeout(left)) {
            Ok(item) => seen.push(item),
            Err(_) => panic!("b 5 never printed: {seen:?}"),
        }
    }
    s.complete("hs-1", "SUCCEEDED", Some(0)).await;
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    seen.extend(rx.try_iter());
    assert!(
        !seen
            .iter()
            .take_while(|(k, l)| !(*k == "out" && l == "b 5"))
            .any(|(k, l)| *k == "err" && l.contains("WebSocket")),
        "the lines waited for the handshake: {seen:?}"
    );
    let printed: Vec<&str> = seen
        .iter()
        .filter(|(k, _)| *k == "out")
        .map(|(_, l)| l.as_str())
        .collect();
    let mut want = numbered("a", 1, 5);
    want.extend(numbered("b", 1, 5));
    assert_eq!(printed, want);
    assert_eq!(status.code(), Some(0), "{seen:?}");
}

/// Lines written late with timestamps older than lines already read (PutLogEvents takes them up
/// to 14 days back), while every subscription delivery is lost: reconciliation alone brings
/// them, and the follower prints each line once and exits with the execution's code.
async fn late_lines_with_older_timestamps_are_printed_once_when_every_delivery_is_lost(kind: Kind) {
    let s = Stack::start(kind, "late-old", Some("drop=1")).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    s.put_lines("old-1", &numbered("now", 1, 200)).await;
    let follower = s.runvoy(&["logs", "old-1"]);
    let follower = tokio::spawn(output(follower));
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Stamped a minute and an hour back, written after the newer ones were read.
    let back: Vec<(i64, String)> = (1..=100)
        .map(|i| (now - 60_000 + i, format!("minute-old {i}")))
        .chain((1..=100).map(|i| (now - 3_600_000 + i, format!("hour-old {i}"))))
        .collect();
    s.put_lines_at("old-1", &back).await;
    s.put_lines("old-1", &numbered("later", 1, 100)).await;
    s.complete("old-1", "FAILED", Some(4)).await;
    let out = follower.await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = stdout_lines(&out);
    assert_eq!(lines.len(), 500, "each line once");
    lines.sort();
    let mut want: Vec<String> = numbered("now", 1, 200);
    want.extend(numbered("minute-old", 1, 100));
    want.extend(numbered("hour-old", 1, 100));
    want.extend(numbered("later", 1, 100));
    want.sort();
    assert_eq!(lines, want);
}

/// `runvoy logs` started before the execution's first line (an ECS task's id is known before
/// its container runs) waits, says so, then prints every line and exits with the code; with
/// `--wait 2s` an execution that never starts is the usual one-sentence failure, exit 125.
async fn a_follower_started_before_the_first_line_waits_for_it(kind: Kind) {
    let s = Stack::start(kind, "early", None).await;
    let mut cmd = s.runvoy(&["logs", "exec-early", "-v"]);
    let follower = tokio::task::spawn_blocking(move || cmd.output().unwrap());
    tokio::time::sleep(Duration::from_secs(5)).await;
    s.put_lines("exec-early", &numbered("early", 1, 300)).await;
    s.complete("exec-early", "FAILED", Some(7)).await;
    let out = output_of(follower).await;
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(7), "{err}");
    assert_eq!(stdout_lines(&out), numbered("early", 1, 300));
    assert!(
        err.contains("waiting for execution exec-early to start (up to 5m)")
            && err.contains("execution exec-early started")
            && err.contains("ended with exit code 7 after line 300"),
        "{err}"
    );

    let started = Instant::now();
    let never = output(s.runvoy(&["logs", "exec-never", "--wait", "2s"])).await;
    assert_eq!(never.status.code(), Some(125));
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_one_sentence(&never.stderr, "execution exec-never was not found");
}

/// `--tail 5` and `--since` start exactly where asked on a 10,000-line execution, checked
/// against the API's own pages; then they follow.
async fn tail_and_since_start_exactly_where_asked(kind: Kind) {
    let s = Stack::start(kind, "start-at", None).await;
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 600_000;
    // Ten lines a millisecond (as the awslogs driver stamps a burst), 1,000 milliseconds.
    let lines: Vec<(i64, String)> = (0..10_000)
        .map(|i| (base + i as i64 / 10, format!("t {i}")))
        .collect();
    s.put_lines_at("tail-1", &lines).await;
    s.wait_committed("tail-1", 10_000).await;
    // The API's own answer: every line, by index.
    let api: Vec<(u64, i64, String)> = {
        let mut all = Vec::new();
        let mut since = 0;
        loop {
            let v = s
                .get_json(&format!(
                    "/api/v1/executions/tail-1/logs?since_index={since}&limit=5000"
                ))
                .await;
            for e in v["events"].as_array().unwrap() {
                all.push((
                    e["index"].as_u64().unwrap(),
                    e["timestamp"].as_i64().unwrap(),
                    e["message"].as_str().unwrap().to_string(),
                ));
            }
            since = v["last_index"].as_u64().unwrap();
            if !v["has_more"].as_bool().unwrap() {
                break;
            }
        }
        all
    };
    assert_eq!(api.len(), 10_000);
    let messages = |from: usize| api[from..].iter().map(|e| e.2.clone()).collect::<Vec<_>>();

    let tail = output(s.runvoy(&["logs", "tail-1", "--tail", "5", "--no-follow"])).await;
    assert_eq!(stdout_lines(&tail), messages(9_995));

    // The first line at or after the time of line 4,321 (by index), and every line after it.
    let at = api[4_321].1;
    let first = api.iter().position(|e| e.1 >= at).unwrap();
    let since = common::rfc3339(at);
    let from_time = output(s.runvoy(&["logs", "tail-1", "--since", &since, "--no-follow"])).await;
    assert_eq!(stdout_lines(&from_time), messages(first));
    // A duration back from now that covers everything prints everything.
    let all = output(s.runvoy(&["logs", "tail-1", "--since", "1h", "--no-follow"])).await;
    assert_eq!(stdout_lines(&all).len(), 10_000);

    // Following: the last five, then what comes after, then the exit code.
    let mut cmd = s.runvoy(&["logs", "tail-1", "--tail", "5"]);
    let follower = tokio::task::spawn_blocking(move || cmd.output().unwrap());
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.put_lines("tail-1", &numbered("after", 1, 3)).await;
    s.complete("tail-1", "SUCCEEDED", Some(0)).await;
    let out = output_of(follower).await;
    assert_eq!(out.status.code(), Some(0));
    let mut want = messages(9_995);
    want.extend(numbered("after", 1, 3));
    assert_eq!(stdout_lines(&out), want);
}

/// `runvoy ls` lists recent executions newest first, with their lines and page; `status`
/// shows the page's address too.
async fn ls_lists_recent_executions_newest_first(kind: Kind) {
    let s = Stack::start(kind, "ls", None).await;
    s.put_lines("older-1", &numbered("o", 1, 3)).await;
    // A read creates the head (lazily on the sim); then the second one, later.
    let _ = output(s.runvoy(&["logs", "older-1", "--no-follow"])).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.put_lines("newer-1", &numbered("n", 1, 5)).await;
    let _ = output(s.runvoy(&["logs", "newer-1", "--no-follow"])).await;
    s.complete("older-1", "FAILED", Some(2)).await;
    let out = output(s.runvoy(&["ls", "--json"])).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = stdout_lines(&out)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: Vec<&str> = rows
        .iter()
        .map(|r| r["execution_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["newer-1", "older-1"], "newest first");
    assert_eq!(
        (rows[0]["status"].as_str(), rows[0]["lines"].as_u64()),
        (Some("RUNNING"), Some(5))
    );
    assert_eq!(
        (
            rows[1]["status"].as_str(),
            rows[1]["exit_code"].as_i64(),
            rows[1]["lines"].as_u64()
        ),
        (Some("FAILED"), Some(2), Some(3))
    );
    assert_eq!(
        rows[0]["page_url"].as_str(),
        Some(format!("{}/executions/newer-1", s.url()).as_str())
    );
    let text = output(s.runvoy(&["ls"])).await;
    let text = stdout_lines(&text);
    assert!(
        text[0].starts_with("EXECUTION") && text[1].starts_with("newer-1"),
        "{text:?}"
    );
    let status = output(s.runvoy(&["status", "older-1", "--json"])).await;
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(
        v["page_url"].as_str(),
        Some(format!("{}/executions/older-1", s.url()).as_str())
    );
}
