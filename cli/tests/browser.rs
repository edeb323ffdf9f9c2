//! The log page in a real headless browser (Chromium over WebDriver), against the local stack
//! and the sim: the same guarantees as the CLI (every line once, in order, however late the page
//! opens or however often its WebSocket drops), links to lines, and hostile log text that is
//! shown, never run.

mod common;
#[path = "common/webdriver.rs"]
mod webdriver;

use std::time::Duration;

use common::{Kind, Stack, numbered};
use serde_json::json;
use webdriver::Browser;

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

/// The line numbers and texts of the rows the page shows now.
async fn rows(b: &Browser) -> Vec<(u64, String)> {
    let v = b
        .script(
            "return [...document.querySelectorAll('#log .line')].map(r => \
             [Number(r.dataset.line), r.querySelector('.msg').textContent])",
            vec![],
        )
        .await;
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| (r[0].as_u64().unwrap(), r[1].as_str().unwrap().to_string()))
        .collect()
}

/// The rows inside the visible part of the log.
async fn visible_rows(b: &Browser) -> Vec<(u64, String)> {
    let v = b
        .script(
            "const log = document.getElementById('log').getBoundingClientRect(); \
             return [...document.querySelectorAll('#log .line')].filter(r => { \
               const b = r.getBoundingClientRect(); return b.top >= log.top - 1 && b.bottom <= log.bottom + 1; }) \
             .map(r => [Number(r.dataset.line), r.querySelector('.msg').textContent])",
            vec![],
        )
        .await;
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| (r[0].as_u64().unwrap(), r[1].as_str().unwrap().to_string()))
        .collect()
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
    let all: Vec<String> = backlog.iter().chain(&more).cloned().collect();
    assert_eq!(download(&b, id).await, joined(&all));
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
