//! Real-looking log text for measuring storage density, generated (deterministic, seeded) rather
//! than shipped: build output, JSON logs, Java stack traces, `seq`, and the bench's synthetic
//! word lines (the worst case: a quarter of the words are random hex).

use runvoy_core::memory::splitmix64;

/// The corpora `bench density` measures, by name.
pub const KINDS: [&str; 5] = ["build", "json", "trace", "seq", "words"];

/// `n` lines of corpus `kind`.
pub fn lines(kind: &str, n: usize) -> Vec<String> {
    let mut r = 0x9E37_79B9_7F4A_7C15u64 ^ kind.len() as u64;
    let mut pick = |k: u64| splitmix64(&mut r) % k;
    match kind {
        "build" => build(n, &mut pick),
        "json" => json(n, &mut pick),
        "trace" => trace(n, &mut pick),
        "seq" => (1..=n).map(|i| i.to_string()).collect(),
        _ => words(n, &mut pick),
    }
}

/// Compiler and test-runner output: `Compiling x v1.2.3`, warnings with paths, C compiler
/// command lines, test results.
fn build(n: usize, pick: &mut impl FnMut(u64) -> u64) -> Vec<String> {
    const CRATES: [&str; 10] = [
        "serde",
        "tokio",
        "aws-sdk-dynamodb",
        "hyper",
        "rustls",
        "regex",
        "clap",
        "runvoy-core",
        "axum",
        "futures-util",
    ];
    const FILES: [&str; 4] = ["lib", "main", "api", "store"];
    (0..n)
        .map(|_| match pick(20) {
            0..=9 => format!(
                "   Compiling {} v{}.{}.{}",
                CRATES[pick(10) as usize],
                pick(3),
                pick(41),
                pick(13)
            ),
            10..=13 => format!(
                "warning: unused variable: `x{}` --> src/{}.rs:{}:{}",
                pick(100),
                FILES[pick(4) as usize],
                1 + pick(900),
                1 + pick(80)
            ),
            14..=16 => format!(
                "gcc -O2 -fPIC -I/usr/include -c src/{}_{}.c -o build/obj/{}.o",
                ["a", "b", "zstd", "lz4"][pick(4) as usize],
                pick(51),
                pick(10_000)
            ),
            _ => format!("test tests::case_{} ... ok", pick(501)),
        })
        .collect()
}

/// Structured JSON logs: fixed keys, a random request id in each.
fn json(n: usize, pick: &mut impl FnMut(u64) -> u64) -> Vec<String> {
    const LEVELS: [&str; 5] = ["info", "info", "info", "warn", "error"];
    const MSGS: [&str; 4] = [
        "request completed",
        "cache miss",
        "retrying",
        "user logged in",
    ];
    const STATUS: [u32; 5] = [200, 200, 201, 404, 500];
    (0..n)
        .map(|_| {
            format!(
                r#"{{"ts":"2026-12-07T12:{:02}:{:02}.{:03}Z","level":"{}","msg":"{}","request_id":"{:016x}{:016x}","status":{},"ms":{}}}"#,
                pick(60),
                pick(60),
                pick(1000),
                LEVELS[pick(5) as usize],
                MSGS[pick(4) as usize],
                pick(u64::MAX),
                pick(u64::MAX),
                STATUS[pick(5) as usize],
                1 + pick(900)
            )
        })
        .collect()
}

/// Exceptions with 5–20 frames drawn from one application's classes.
fn trace(n: usize, pick: &mut impl FnMut(u64) -> u64) -> Vec<String> {
    const CLASSES: [&str; 5] = ["OrderService", "Repo", "Handler", "Pool", "Router"];
    const METHODS: [&str; 3] = ["run", "get", "call"];
    const PACKAGES: [&str; 3] = ["svc", "db", "web"];
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        out.push(format!(
            "ERROR 2026-12-07 12:00:{:02} java.lang.IllegalStateException: order {} not found",
            10 + pick(50),
            1 + pick(99_999)
        ));
        for _ in 0..5 + pick(16) {
            let class = CLASSES[pick(5) as usize];
            out.push(format!(
                "    at com.example.{}.{class}.{}({class}.java:{})",
                PACKAGES[pick(3) as usize],
                METHODS[pick(3) as usize],
                10 + pick(891)
            ));
        }
    }
    out.truncate(n);
    out
}

/// The words of the synthetic lines (here and in the other tables).
pub const WORDS: [&str; 24] = [
    "INFO",
    "WARN",
    "request",
    "completed",
    "user",
    "id",
    "took",
    "ms",
    "GET",
    "POST",
    "/api/v1/items",
    "status",
    "cache",
    "miss",
    "retry",
    "worker",
    "queue",
    "depth",
    "bytes",
    "sent",
    "to",
    "from",
    "db",
    "ok",
];

/// 100-byte lines of words and random hex numbers (the synthetic lines of the other tables).
fn words(n: usize, pick: &mut impl FnMut(u64) -> u64) -> Vec<String> {
    (0..n)
        .map(|i| {
            let mut m = format!("words {i} ");
            while m.len() < 100 {
                if pick(4) == 0 {
                    m.push_str(&format!("{:x} ", pick(1 << 44)));
                } else {
                    m.push_str(WORDS[pick(24) as usize]);
                    m.push(' ');
                }
            }
            m.truncate(100);
            m
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_corpus_is_deterministic_and_of_its_kind() {
        for kind in super::KINDS {
            let a = super::lines(kind, 500);
            assert_eq!(a.len(), 500, "{kind}");
            assert_eq!(a, super::lines(kind, 500), "{kind} is seeded");
        }
        assert!(
            super::lines("build", 50)
                .iter()
                .any(|l| l.contains("Compiling"))
        );
        assert!(
            super::lines("json", 5)
                .iter()
                .all(|l| l.starts_with("{\"ts\""))
        );
        assert!(
            super::lines("trace", 50)
                .iter()
                .any(|l| l.starts_with("    at com.example."))
        );
        assert_eq!(super::lines("seq", 3), ["1", "2", "3"]);
        assert!(super::lines("words", 5).iter().all(|l| l.len() == 100));
    }
}
