//! What stands before every route of the local stack: the `Host` check that defeats DNS
//! rebinding on a loopback address, and the back-off after repeated wrong keys.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use runvoy_core::api::ApiError;

use crate::response::respond;

/// Wrong keys from one address (an IPv6 /64: one host holds a whole one) within
/// [`BAD_KEY_WINDOW`] before it is refused until the window ends.
pub const MAX_BAD_KEYS: u32 = 20;
/// Wrong keys from other machines, all addresses together, within the window before every
/// other machine is refused until it ends (this machine's own requests are not).
pub const MAX_BAD_KEYS_OVERALL: u32 = 200;
pub const BAD_KEY_WINDOW: Duration = Duration::from_secs(60);

pub struct Guard {
    /// `Host` values accepted: set on a loopback address (names of this machine), `None` when
    /// remote access is allowed (any name may lead here).
    hosts: Option<Vec<String>>,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    /// Wrong keys from other machines, all together.
    remote: Mutex<(u32, Instant)>,
}

/// What one guesser holds: an IPv4 address, or an IPv6 /64.
fn block_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            let mut s = v6.segments();
            s[4..].iter_mut().for_each(|x| *x = 0);
            IpAddr::V6(std::net::Ipv6Addr::from(s))
        }
        v4 => v4,
    }
}

impl Guard {
    pub fn new(addr: SocketAddr) -> Guard {
        let port = addr.port();
        let hosts = addr.ip().is_loopback().then(|| {
            ["127.0.0.1", "localhost", "[::1]"]
                .iter()
                .flat_map(|h| [h.to_string(), format!("{h}:{port}")])
                .collect()
        });
        Guard {
            hosts,
            failures: Mutex::new(HashMap::new()),
            remote: Mutex::new((0, Instant::now())),
        }
    }

    /// Whether `ip` sent too many wrong keys lately, or other machines did all together.
    fn blocked(&self, ip: IpAddr, now: Instant) -> bool {
        if !ip.is_loopback() {
            let mut r = self.remote.lock().unwrap_or_else(|e| e.into_inner());
            if now.duration_since(r.1) >= BAD_KEY_WINDOW {
                *r = (0, now);
            }
            if r.0 >= MAX_BAD_KEYS_OVERALL {
                return true;
            }
        }
        let ip = block_of(ip);
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        match f.get(&ip) {
            Some((_, since)) if now.duration_since(*since) >= BAD_KEY_WINDOW => {
                f.remove(&ip);
                false
            }
            Some((n, _)) => *n >= MAX_BAD_KEYS,
            None => false,
        }
    }

    fn failed(&self, ip: IpAddr, now: Instant) {
        if !ip.is_loopback() {
            let mut r = self.remote.lock().unwrap_or_else(|e| e.into_inner());
            if now.duration_since(r.1) >= BAD_KEY_WINDOW {
                *r = (0, now);
            }
            r.0 += 1;
        }
        let ip = block_of(ip);
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if f.len() > 10_000 {
            f.retain(|_, (_, since)| now.duration_since(*since) < BAD_KEY_WINDOW);
        }
        f.entry(ip).or_insert((0, now)).0 += 1;
    }
}

fn refuse(status: u16, code: &'static str, message: String) -> Response {
    let r = ApiError::new(status, code, message).into_response();
    respond(r)
}

/// The middleware.
pub async fn guard(State(g): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    if let Some(hosts) = &g.hosts {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
            return refuse(
                421,
                "wrong_host",
                format!(
                    "this stack answers only to 127.0.0.1 or localhost, not Host '{host}' (a page of another site cannot reach it by renaming itself); use the address it printed"
                ),
            );
        }
    }
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    if let Some(ip) = ip
        && g.blocked(ip, Instant::now())
    {
        return refuse(
            429,
            "too_many_bad_keys",
            format!(
                "more than {MAX_BAD_KEYS} requests with a wrong API key from {ip} within {} s; wait and use the key the stack printed",
                BAD_KEY_WINDOW.as_secs()
            ),
        );
    }
    // Only a wrong key counts: a request without one (any web page can send those, it cannot
    // set the header) must not lock the owner out.
    let sent_key = req.headers().contains_key("x-api-key");
    let response = next.run(req).await;
    if response.status() == 401
        && sent_key
        && let Some(ip) = ip
    {
        g.failed(ip, Instant::now());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_keys_block_an_address_for_the_window_only() {
        let g = Guard::new("127.0.0.1:8787".parse().unwrap());
        let (ip, other): (IpAddr, IpAddr) =
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..MAX_BAD_KEYS {
            assert!(!g.blocked(ip, t0));
            g.failed(ip, t0);
        }
        assert!(g.blocked(ip, t0));
        assert!(!g.blocked(other, t0), "only the address that guessed");
        assert!(!g.blocked(ip, t0 + BAD_KEY_WINDOW), "the window ends");
        assert!(
            g.hosts
                .as_ref()
                .unwrap()
                .contains(&"localhost:8787".to_string())
        );
        assert!(Guard::new("0.0.0.0:8787".parse().unwrap()).hosts.is_none());
    }

    #[test]
    fn an_ipv6_slash_64_is_one_guesser_and_many_machines_together_are_limited() {
        let g = Guard::new("0.0.0.0:8787".parse().unwrap());
        let t0 = Instant::now();
        for i in 0..MAX_BAD_KEYS {
            let ip: IpAddr = format!("2001:db8:1:2::{:x}", i + 1).parse().unwrap();
            g.failed(ip, t0);
        }
        let next: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert!(
            g.blocked(next, t0),
            "every address of the /64 is one guesser"
        );
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(!g.blocked(other, t0), "another /64 is another");
        // Many machines guessing at once: every other machine waits, this one does not.
        for i in 0..MAX_BAD_KEYS_OVERALL {
            g.failed(IpAddr::from([10, 9, (i / 250) as u8, (i % 250) as u8]), t0);
        }
        assert!(g.blocked("10.200.0.1".parse().unwrap(), t0));
        assert!(!g.blocked("127.0.0.1".parse().unwrap(), t0));
        assert!(!g.blocked("10.200.0.1".parse().unwrap(), t0 + BAD_KEY_WINDOW));
    }
}
