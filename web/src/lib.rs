//! The log page (`GET /`, `GET /executions/{id}`) and its assets, embedded in the binary that
//! serves the API — the API function on AWS and the sim, the local stack's server — so a
//! deployment needs no bucket and no build step of its own. Framework-free: callers translate
//! their request into [`serve`] and write back the [`Page`].
//!
//! Everything is served with a strict Content-Security-Policy: scripts and styles from this
//! origin only, nothing inline, connections to this origin and the WebSocket API's origin only.

/// A response of the page: status, headers and the embedded body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: &'static [u8],
}

impl Page {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

const INDEX: &str = include_str!("../assets/index.html");

/// Embedded assets under `/assets/`: name, content type, body.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/app.js"),
    ),
    (
        "follow.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/follow.js"),
    ),
    (
        "ansi.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/ansi.js"),
    ),
    (
        "view.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/view.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../assets/app.css"),
    ),
];

/// Whether `path` belongs to the page (and not to the API): `/`, `/executions/{id}` and
/// `/assets/…`. Callers route these here, everything else to the API.
pub fn is_page_path(path: &str) -> bool {
    path == "/" || path.starts_with("/executions/") || path.starts_with("/assets/")
}

/// Serves a page path; `None` when `path` is not one (see [`is_page_path`]).
/// `websocket_url` is the URL the API hands to clients: its origin is the only other place the
/// page may connect to.
pub fn serve(method: &str, path: &str, websocket_url: Option<&str>) -> Option<Page> {
    if !is_page_path(path) {
        return None;
    }
    let headers = |content_type: &str| {
        vec![
            ("content-type", content_type.to_string()),
            ("content-security-policy", policy(websocket_url)),
            ("x-content-type-options", "nosniff".to_string()),
            ("referrer-policy", "no-referrer".to_string()),
            ("x-frame-options", "DENY".to_string()),
            ("cross-origin-opener-policy", "same-origin".to_string()),
            ("cache-control", "no-cache".to_string()),
        ]
    };
    let text = "text/plain; charset=utf-8";
    if method != "GET" && method != "HEAD" {
        return Some(Page {
            status: 405,
            headers: headers(text),
            body: b"only GET is allowed here\n",
        });
    }
    if let Some(name) = path.strip_prefix("/assets/") {
        return Some(match ASSETS.iter().find(|(n, _, _)| *n == name) {
            Some((_, content_type, body)) => Page {
                status: 200,
                headers: headers(content_type),
                body: body.as_bytes(),
            },
            None => Page {
                status: 404,
                headers: headers(text),
                body: b"no such asset\n",
            },
        });
    }
    let id = path.strip_prefix("/executions/").unwrap_or_default();
    if path != "/" && (id.is_empty() || id.contains('/')) {
        return Some(Page {
            status: 404,
            headers: headers(text),
            body: b"no such page; an execution's page is /executions/{id}\n",
        });
    }
    Some(Page {
        status: 200,
        headers: headers("text/html; charset=utf-8"),
        body: INDEX.as_bytes(),
    })
}

/// The Content-Security-Policy of every page response.
pub fn policy(websocket_url: Option<&str>) -> String {
    let mut connect = "'self'".to_string();
    if let Some(origin) = websocket_url.and_then(origin) {
        connect.push(' ');
        connect.push_str(origin);
    }
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         connect-src {connect}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

/// `scheme://host[:port]` of a URL, when it is a ws(s) or http(s) URL with a plain host.
fn origin(url: &str) -> Option<&str> {
    let (scheme, rest) = url.split_once("://")?;
    if !matches!(scheme, "ws" | "wss" | "http" | "https") {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let host = &rest[..end];
    let plain = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    plain.then(|| &url[..scheme.len() + 3 + end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_and_assets_are_served_with_the_policy() {
        for path in ["/", "/executions/abc-1"] {
            let p = serve("GET", path, None).unwrap();
            assert_eq!(p.status, 200, "{path}");
            assert_eq!(p.header("content-type"), Some("text/html; charset=utf-8"));
            assert!(
                std::str::from_utf8(p.body)
                    .unwrap()
                    .contains("/assets/app.js")
            );
        }
        let js = serve("GET", "/assets/app.js", None).unwrap();
        assert_eq!(js.status, 200);
        assert!(
            js.header("content-type")
                .unwrap()
                .starts_with("text/javascript")
        );
        assert_eq!(js.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(serve("GET", "/assets/nope.js", None).unwrap().status, 404);
        assert_eq!(serve("GET", "/executions/a/b", None).unwrap().status, 404);
        assert_eq!(serve("POST", "/", None).unwrap().status, 405);
        assert_eq!(serve("GET", "/api/v1/executions/a", None), None);
        assert_eq!(serve("GET", "/favicon.ico", None), None);
    }

    #[test]
    fn the_policy_allows_this_origin_and_the_websocket_origin_only() {
        let p = policy(Some(
            "wss://abc.execute-api.eu-west-1.amazonaws.com/live?x=1",
        ));
        assert!(p.contains("connect-src 'self' wss://abc.execute-api.eu-west-1.amazonaws.com;"));
        assert!(p.contains("script-src 'self';"));
        assert!(!p.contains("unsafe"));
        assert!(
            policy(Some("ws://127.0.0.1:8787/ws"))
                .contains("connect-src 'self' ws://127.0.0.1:8787;")
        );
        // Nothing that could widen the policy is copied into it.
        assert!(policy(Some("wss://a b; script-src *")).contains("connect-src 'self';"));
        assert!(policy(Some("javascript:alert(1)")).contains("connect-src 'self';"));
        assert!(policy(None).contains("connect-src 'self';"));
    }

    #[test]
    fn no_asset_carries_inline_script_or_markup_sinks() {
        let index = INDEX;
        assert!(!index.contains("<script>"), "no inline script");
        assert!(!index.contains("style="), "no inline style");
        for (name, _, body) in ASSETS {
            for sink in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
                "new Function",
            ] {
                assert!(!body.contains(sink), "{name} uses {sink}");
            }
        }
    }
}
