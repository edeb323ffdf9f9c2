//! The HTTP API on the in-memory ports: the first read populating an execution, pages (JSON
//! and dense), listings, and the error JSON of bad requests.

mod common;

use common::{KEY, call, env, error_code, write};
use runvoy_core::api::{Api, HttpRequest, HttpResponse};
use runvoy_core::lines::{LINES_CONTENT_TYPE, LinesPage};
use runvoy_core::ports::Metric;
use runvoy_core::wire::LogsResponse;

#[tokio::test]
async fn first_read_populates_from_the_source_and_pages() {
    let e = env();
    write(&e, "ex1", 10);
    let r = call(
        &e.api,
        "GET",
        "/api/v1/executions/ex1/logs",
        "limit=4",
        Some(KEY),
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let page: LogsResponse = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        page.events.iter().map(|e| e.index).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert!(page.has_more);
    assert_eq!(page.last_index, 4);
    assert!(
        page.websocket_url
            .unwrap()
            .contains("execution_id=ex1&token=")
    );
    let r = call(
        &e.api,
        "GET",
        "/api/v1/executions/ex1/logs",
        "since_index=8",
        Some(KEY),
        "",
    )
    .await;
    let page: LogsResponse = serde_json::from_str(&r.body).unwrap();
    assert_eq!(page.events.len(), 2);
    assert!(!page.has_more);
    // Past the end: empty, last_index echoes since_index.
    let r = call(
        &e.api,
        "GET",
        "/api/v1/executions/ex1/logs",
        "since_index=50",
        Some(KEY),
        "",
    )
    .await;
    let page: LogsResponse = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        (page.events.len(), page.last_index, page.has_more),
        (0, 50, false)
    );
    assert_eq!(e.metrics.get(Metric::EventsReconciled), 10);
}

/// `GET …/logs?{query}` asking for a dense page.
async fn get_dense(api: &Api, exec: &str, query: &str) -> HttpResponse {
    api.handle(HttpRequest {
        method: "GET".into(),
        path: format!("/api/v1/executions/{exec}/logs"),
        query: query.into(),
        api_key: Some(KEY.into()),
        accept: Some(format!("application/json;q=0.5, {LINES_CONTENT_TYPE}")),
        body: Vec::new(),
    })
    .await
}

#[tokio::test]
async fn a_dense_page_is_served_when_asked_and_json_otherwise() {
    let e = env();
    write(&e, "exd", 10);
    // A line that travels as base64 in JSON (escaping could grow it sixfold).
    e.source
        .put("exd", 1_699_999_950_000, &"\u{1}".repeat(200_000));
    let json = call(
        &e.api,
        "GET",
        "/api/v1/executions/exd/logs",
        "since_index=2&limit=4",
        Some(KEY),
        "",
    )
    .await;
    assert_eq!(json.content_type, "application/json");
    let want: LogsResponse = serde_json::from_str(&json.body).unwrap();

    let r = get_dense(&e.api, "exd", "since_index=2&limit=4").await;
    assert_eq!(
        (r.status, r.content_type),
        (200, LINES_CONTENT_TYPE),
        "{}",
        r.body
    );
    let page = LinesPage::parse(r.body.as_bytes()).unwrap();
    assert_eq!((page.first_index(), page.len()), (3, 4));
    let got: Vec<(i64, &[u8])> = page
        .records()
        .map(|x| (page.timestamp(&x), page.message(&x)))
        .collect();
    let expected: Vec<(i64, &[u8])> = want
        .events
        .iter()
        .map(|x| (x.timestamp, x.message.as_bytes()))
        .collect();
    assert_eq!(got, expected);
    let mut meta = want.clone();
    meta.events.clear();
    // The websocket token is signed per response; the rest is the JSON page's.
    let mut dense_meta = page.meta.clone();
    dense_meta.websocket_url = meta.websocket_url.clone();
    assert_eq!(dense_meta, meta);
    assert!(page.meta.websocket_url.is_some());

    // A page holding that line stays JSON.
    let r = get_dense(&e.api, "exd", "since_index=9").await;
    assert_eq!(r.content_type, "application/json");
    let page: LogsResponse = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        page.events.iter().map(|x| x.index).collect::<Vec<_>>(),
        [10, 11]
    );
    assert!(page.events[1].travels_base64());
    let r = get_dense(&e.api, "exd", "limit=10").await;
    assert_eq!(r.content_type, LINES_CONTENT_TYPE);
}

#[tokio::test]
async fn recent_executions_are_listed_newest_first() {
    let e = env();
    for id in ["first", "second", "third"] {
        write(&e, id, 2);
        // Reading an execution populates it: its head is created now (the clock ticks).
        let r = call(
            &e.api,
            "GET",
            &format!("/api/v1/executions/{id}/logs"),
            "",
            Some(KEY),
            "",
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let r = call(
        &e.api,
        "GET",
        "/api/v1/executions",
        "limit=2",
        Some(KEY),
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let listed: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let ids: Vec<&str> = listed["executions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["execution_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["third", "second"]);
    assert_eq!(listed["executions"][0]["status"], "RUNNING");
    assert!(listed["executions"][0]["created_at"].is_i64());
}

#[tokio::test]
async fn bad_requests_get_the_error_json() {
    let e = env();
    write(&e, "ex2", 1);
    let p = "/api/v1/executions/ex2/logs";
    let cases = [
        ("GET", p, "", None, 401, "unauthorized"),
        ("GET", p, "", Some("wrong"), 401, "unauthorized"),
        ("GET", p, "since_index=-1", Some(KEY), 400, "bad_request"),
        ("GET", p, "since_index=abc", Some(KEY), 400, "bad_request"),
        (
            "GET",
            p,
            "since_index=18446744073709551615",
            Some(KEY),
            400,
            "bad_request",
        ),
        (
            "GET",
            p,
            "since_index=9007199254740992",
            Some(KEY),
            400,
            "bad_request",
        ),
        (
            "GET",
            p,
            "since_index=1&since_index=2",
            Some(KEY),
            400,
            "bad_request",
        ),
        ("GET", p, "limit=0", Some(KEY), 400, "bad_request"),
        ("GET", p, "limit=100001", Some(KEY), 400, "bad_request"),
        ("GET", p, "colour=red", Some(KEY), 400, "bad_request"),
        ("GET", p, "since_index=%zz", Some(KEY), 400, "bad_request"),
        (
            "GET",
            "/api/v1/executions/nope/logs",
            "",
            Some(KEY),
            404,
            "not_found",
        ),
        (
            "GET",
            "/api/v1/executions/bad%20id/logs",
            "",
            Some(KEY),
            400,
            "bad_request",
        ),
        ("GET", "/api/v2/whatever", "", Some(KEY), 404, "not_found"),
        ("DELETE", p, "", Some(KEY), 405, "method_not_allowed"),
        ("GET", "/api/v1/executions", "", None, 401, "unauthorized"),
        (
            "GET",
            "/api/v1/executions",
            "limit=0",
            Some(KEY),
            400,
            "bad_request",
        ),
        (
            "GET",
            "/api/v1/executions",
            "limit=201",
            Some(KEY),
            400,
            "bad_request",
        ),
        (
            "GET",
            "/api/v1/executions",
            "days=0",
            Some(KEY),
            400,
            "bad_request",
        ),
        (
            "GET",
            "/api/v1/executions",
            "days=32",
            Some(KEY),
            400,
            "bad_request",
        ),
        (
            "GET",
            "/api/v1/executions",
            "since=1",
            Some(KEY),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/v1/executions",
            "",
            Some(KEY),
            405,
            "method_not_allowed",
        ),
    ];
    for (m, path, q, key, status, code) in cases {
        let r = call(&e.api, m, path, q, key, "").await;
        assert_eq!(
            (r.status, error_code(&r)),
            (status, code.to_string()),
            "{m} {path}?{q}"
        );
    }
    let c = "/api/v1/executions/ex2/complete";
    let r = call(&e.api, "POST", c, "", Some(KEY), "{not json").await;
    assert_eq!((r.status, error_code(&r).as_str()), (400, "bad_request"));
    let r = call(&e.api, "POST", c, "", Some(KEY), r#"{"status":"RUNNING"}"#).await;
    assert_eq!((r.status, error_code(&r).as_str()), (400, "bad_request"));
    let big = format!(r#"{{"status":"FAILED","pad":"{}"}}"#, "x".repeat(70_000));
    let r = call(&e.api, "POST", c, "", Some(KEY), &big).await;
    assert_eq!(
        (r.status, error_code(&r).as_str()),
        (413, "payload_too_large")
    );
    // An unauthorized request reads nothing: no population happened.
    assert_eq!(e.metrics.get(Metric::EventsReconciled), 0);
}
