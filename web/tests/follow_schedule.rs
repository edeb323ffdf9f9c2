//! The log page's follower waits as the CLI's does: every number `web/assets/follow.js` shares
//! with spec §7.2 is the one in `runvoy_core::client::pacing`.

use std::collections::BTreeMap;
use std::time::Duration;

use runvoy_core::client::pacing::{BROWSER_PAGE_EVENTS, Schedule};

/// `const NAME = 123;` lines of follow.js, by name.
fn constants() -> BTreeMap<String, u64> {
    let js = include_str!("../assets/follow.js");
    js.lines()
        .filter_map(|l| l.strip_prefix("const "))
        .filter_map(|l| {
            let (name, value) = l.split_once(" = ")?;
            let value = value.strip_suffix(';')?.parse().ok()?;
            Some((name.to_string(), value))
        })
        .collect()
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

#[test]
fn the_page_waits_as_spec_7_2_says() {
    let js = constants();
    let s = Schedule::SPEC;
    let shared = [
        ("PAGE", BROWSER_PAGE_EVENTS as u64),
        ("IDLE_POLL_MS", ms(s.idle_poll)),
        ("IDLE_POLL_MAX_MS", ms(s.idle_poll_max)),
        ("RETRY_BASE_MS", ms(s.retry_base)),
        ("RETRY_MAX_MS", ms(s.retry_max)),
        ("HANDSHAKE_BASE_MS", ms(s.handshake_base)),
        ("HANDSHAKE_MAX_MS", ms(s.handshake_max)),
        ("HEALTHY_MS", ms(s.healthy_after)),
        ("URL_FRESH_MS", ms(s.url_fresh_for)),
        ("CONNECT_TIMEOUT_MS", ms(s.connect_timeout)),
        ("GIVE_UP_AFTER_MS", ms(s.give_up_after)),
        ("WAIT_FOR_START_MS", ms(s.wait_for_start)),
        ("LOOK_AGAIN_MS", ms(s.look_every)),
    ];
    for (name, expected) in shared {
        assert_eq!(
            js.get(name),
            Some(&expected),
            "follow.js's {name} is not spec §7.2's ({expected})"
        );
    }
    // The page's own: a hidden tab polls less (spec §7.2 says so).
    assert_eq!(js.get("IDLE_POLL_HIDDEN_MS"), Some(&120_000));
}
