//! The store conformance suite: one set of cases every [`LogStore`] and [`ConnectionStore`]
//! implementation must pass unchanged (in-memory, SQLite, DynamoDB on moto).
//!
//! Use it from a store crate's tests with
//! `runvoy_core::store_conformance_suite!(|| async { Arc::new(MyStore::new()) });` and
//! `runvoy_core::connection_conformance_suite!(|| async { Arc::new(MyConnections::new()) });`.

use std::sync::Arc;

use crate::error::{CommitError, StoreError};
use crate::model::{Connection, Head, Status};
use crate::model::{LogEvent, SourceEvent};
use crate::ports::{Commit, ConnectionStore, LogStore};
use crate::testkit::{events, fresh_id, head_at, tomorrow};

/// Looks events up as the engine does: by id, with the timestamp [`events`] gives them.
fn keys(ids: &[&str]) -> Vec<SourceEvent> {
    ids.iter()
        .map(|id| {
            let i: i64 = id.trim_start_matches('e').parse().unwrap_or(0);
            SourceEvent {
                event_id: id.to_string(),
                timestamp: 1_700_000_000_000 + i,
                message: String::new(),
            }
        })
        .collect()
}

fn to_source(e: LogEvent) -> SourceEvent {
    SourceEvent {
        event_id: e.event_id,
        timestamp: e.timestamp,
        message: e.message,
    }
}

/// Generates one `#[tokio::test]` per store case, each with a store from `$factory`.
#[macro_export]
macro_rules! store_conformance_suite {
    ($factory:expr) => {
        mod store_conformance {
            #[allow(unused_imports)]
            use super::*;
            $crate::__conformance_cases!(store $factory;
                head_is_absent_for_unknown_execution,
                first_commit_creates_head_and_events,
                creating_an_existing_head_conflicts,
                stale_version_conflicts_and_writes_nothing,
                duplicate_event_is_rejected_atomically,
                known_event_ids_reports_only_committed_ids,
                read_range_respects_bounds_and_limit,
                reads_are_bounded_in_bytes_but_never_empty,
                many_commits_read_back_contiguous,
                large_event_round_trips_whole,
                head_fields_round_trip,
                executions_are_isolated,
                full_commit_is_accepted,
                racing_commits_have_exactly_one_winner,
                expired_items_are_reported_not_skipped,
                extended_items_live_until_their_new_expiry,
                recent_executions_are_listed_newest_first,
                dense_reads_carry_the_events_read,
                dense_reads_are_bounded_but_never_empty,
                dense_reads_report_expiry_and_base64_messages
            );
        }
    };
}

/// Generates one `#[tokio::test]` per connection-store case.
#[macro_export]
macro_rules! connection_conformance_suite {
    ($factory:expr) => {
        mod connection_conformance {
            #[allow(unused_imports)]
            use super::*;
            $crate::__conformance_cases!(connections $factory;
                connections_put_get_list_remove,
                advance_only_raises_the_cursor,
                list_sees_a_connection_right_after_put,
                simultaneous_resumes_pass_the_limit_once
            );
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    ($kind:ident $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let store = ($factory)().await;
                $crate::testkit::conformance::$kind::$case(store).await;
            }
        )*
    };
}

pub mod store {
    use super::*;

    pub use super::dense::*;
    pub use super::expiry::*;

    type Store = Arc<dyn LogStore>;

    fn into_dyn<S: LogStore + 'static>(s: Arc<S>) -> Store {
        s
    }

    pub async fn head_is_absent_for_unknown_execution<S: LogStore + 'static>(s: Arc<S>) {
        let s = into_dyn(s);
        assert_eq!(s.head(&fresh_id("absent")).await.unwrap(), None);
        let read = s.read_range(&fresh_id("absent"), 0, 10, 10).await.unwrap();
        assert!(read.is_empty());
        let known = s
            .known_event_ids(&fresh_id("absent"), &keys(&["a"]))
            .await
            .unwrap();
        assert!(known.is_empty());
    }

    pub async fn first_commit_creates_head_and_events<S: LogStore + 'static>(s: Arc<S>) {
        let s = into_dyn(s);
        let id = fresh_id("create");
        let mut head = head_at(&id, 3, 1);
        head.last_timestamp = 7;
        let evs = events(1, 3, 40);
        s.commit(Commit {
            expected_version: None,
            head: head.clone(),
            events: evs.clone(),
        })
        .await
        .unwrap();
        assert_eq!(s.head(&id).await.unwrap(), Some(head));
        assert_eq!(s.read_range(&id, 0, 3, 100).await.unwrap(), evs);
    }

    pub async fn creating_an_existing_head_conflicts<S: LogStore + 'static>(s: Arc<S>) {
        let s = into_dyn(s);
        let id = fresh_id("recreate");
        let c = Commit {
            expected_version: None,
            head: head_at(&id, 1, 1),
            events: events(1, 1, 10),
        };
        s.commit(c.clone()).await.unwrap();
        let mut again = c;
        again.events = vec![];
        assert_eq!(s.commit(again).await, Err(CommitError::VersionConflict));
    }

    pub async fn stale_version_conflicts_and_writes_nothing<S: LogStore + 'static>(s: Arc<S>) {
        let s = into_dyn(s);
        let id = fresh_id("stale");
        s.commit(Commit {
            expected_version: None,
            head: head_at(&id, 2, 1),
            events: events(1, 2, 10),
        })
        .await
        .unwrap();
        s.commit(Commit {
            expected_version: Some(1),
            head: head_at(&id, 4, 2),
            events: events(3, 4, 10),
        })
        .await
        .unwrap();
        // A writer that read version 1 must lose, and leave no trace.
        let mut late = events(3, 3, 10);
        late[0].event_id = "late".into();
        let r = s
            .commit(Commit {
                expected_version: Some(1),
                head: head_at(&id, 3, 2),
                events: late,
            })
            .await;
        assert_eq!(r, Err(CommitError::VersionConflict));
        assert_eq!(s.head(&id).await.unwrap().unwrap().last_index, 4);
        assert_eq!(s.read_range(&id, 0, 4, 10).await.unwrap(), events(1, 4, 10));
        assert!(
            s.known_event_ids(&id, &keys(&["late"]))
                .await
                .unwrap()
                .is_empty()
        );
    }

    pub async fn duplicate_event_is_rejected_atomically<S: LogStore + 'static>(s: Arc<S>) {
        let s = into_dyn(s);
        let id = fresh_id("dup");
        s.commit(Commit {
            expected_version: None,
            head: head_at(&id, 2, 1),
            events: events(1, 2, 10),
        })
        .await
        .unwrap();
        // Event e2 again (an id always comes with its timestamp), at a new index, together with
        // a new event: nothing may be written.
        let mut evs = events(3, 4, 10);
        evs[1].event_id = "e2".into();
        evs[1].timestamp = events(2, 2, 10)[0].timestamp;
        let r = s
            .commit(Commit {
                expected_version: Some(1),
                head: head_at(&id, 4, 2),
                events: evs,
            })
            .await;
        match r {
            Err(CommitError::Duplicate(ids)) => assert!(ids.contains(&"e2".to_string())),
            other => panic!("expected a duplicate rejection, got {other:?}"),
        }
        let head = s.head(&id).await.unwrap().unwrap();
        assert_eq!((head.last_index, head.version), (2, 1));
        assert!(
            s.known_event_ids(&id, &keys(&["e3"]))
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            s.read_range(&id, 0, 10, 10).await.unwrap(),
            events(1, 2, 10)
        );
    }

    pub async fn known_event_ids_reports_only_committed_ids<S: LogStore + 'static>(s: Arc<S>) {
        let s = into_dyn(s);
        let id = fresh_id("known");
        let max = s.max_events_per_commit() as u64;
        let total = 250u64;
        let mut last = 0;
        let mut version = None;
        while last < total {
            let to = (last + max).min(total);
            let v = version.map_or(1, |v| v + 1);
            s.commit(Commit {
                expected_version: version,
                head: head_at(&id, to, v),
                events: events(last + 1, to, 10),
            })
            .await
            .unwrap();
            version = Some(v);
            last = to;
        }
        // More ids than one batch read takes (DynamoDB: 100), half of them unknown.
        let ask: Vec<SourceEvent> = events(1, 500, 10).into_iter().map(to_source).collect();
        let known = s.known_event_ids(&id, &ask).await.unwrap();
        assert_eq!(known.len(), 250);
        assert!(known.contains("e1") && known.contains("e250") && !known.contains("e251"));
    }

    pub async fn reads_are_bounded_in_bytes_but_never_empty<S: LogStore + 'static>(s: Arc<S>) {
        let s = into_dyn(s);
        let id = fresh_id("bytes");
        let evs = events(1, 10, 1_000);
        let one = evs[0].wire_size();
        s.commit(Commit {
            expected_version: None,
            head: head_at(&id, 10, 1),
            events: evs,
        })
        .await
        .unwrap();
        let got = s.read_bounded(&id, 0, 10, 10, 3 * one).await.unwrap();
        assert_eq!(got.iter().map(|e| e.index).collect::<Vec<_>>(), [1, 2, 3]);
        let got = s.read_bounded(&id, 4, 10, 10, 1).await.unwrap();
        assert_eq!(
            got.iter().map(|e| e.index).collect::<Vec<_>>(),
            [5],
            "one event even when it alone is larger than the bound"
        );
        assert_eq!(
            s.read_bounded(&id, 0, 10, 10, usize::MAX)
                .await
                .unwrap()
                .len(),
            10
        );
    }

    pub async fn read_range_respects_bounds_and_limit<S: LogStore + 'static>(s: Arc<S>) {
        let s = into_dyn(s);
        let id = fresh_id("range");
        s.commit(Commit {
            expected_version: None,
            head: head_at(&id, 10, 1),
            events: events(1, 10, 10),
        })
        .await
        .unwrap();
        assert_eq!(
            s.read_range(&id, 3, 7, 100).await.unwrap(),
            events(4, 7, 10)
        );
        assert_eq!(s.read_range(&id, 3, 10, 2).await.unwrap(), events(4, 5, 10));
        assert!(s.read_range(&id, 10, 10, 5).await.unwrap().is_empty());
        assert_eq!(
            s.read_range(&id, 9, 20, 5).await.unwrap(),
            events(10, 10, 10)
        );
    }

    pub async fn many_commits_read_back_contiguous<S: LogStore + 'static>(s: Arc<S>) {
        let s = into_dyn(s);
        let id = fresh_id("many");
        let mut version = None;
        for k in 0..30u64 {
            let v = version.map_or(1, |v| v + 1);
            s.commit(Commit {
                expected_version: version,
                head: head_at(&id, (k + 1) * 3, v),
                events: events(k * 3 + 1, (k + 1) * 3, 20),
            })
            .await
            .unwrap();
            version = Some(v);
        }
        let mut got = Vec::new();
        let mut after = 0;
        loop {
            let page = s.read_range(&id, after, 90, 7).await.unwrap();
            let Some(last) = page.last() else { break };
            after = last.index;
            got.extend(page);
        }
        assert_eq!(got, events(1, 90, 20));
    }

    pub async fn large_event_round_trips_whole<S: LogStore + 'static>(s: Arc<S>) {
        let s = into_dyn(s);
        let id = fresh_id("large");
        // 1 MB, the CloudWatch maximum, with multi-byte characters and no repetition to
        // compress away.
        let mut message = String::with_capacity(1 << 20);
        let mut state = 7u64;
        while message.len() < (1 << 20) - 8 {
            let r = crate::memory::splitmix64(&mut state);
            message.push(char::from_u32(0x20 + (r % 0x2000) as u32).unwrap_or('x'));
        }
        let mut evs = events(1, 3, 10);
        evs[1].message = message.clone();
        s.commit(Commit {
            expected_version: None,
            head: head_at(&id, 3, 1),
            events: evs.clone(),
        })
        .await
        .unwrap();
        let got = s.read_range(&id, 0, 3, 10).await.unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[1].message.as_bytes(), message.as_bytes());
        assert_eq!(got, evs);
    }

    pub async fn head_fields_round_trip<S: LogStore + 'static>(s: Arc<S>) {
        let s = into_dyn(s);
        let id = fresh_id("fields");
        let mut head = head_at(&id, 0, 1);
        head.source_cursor = Some("f/00000000000000000000000000000000000000000000/s".into());
        s.commit(Commit {
            expected_version: None,
            head: head.clone(),
            events: vec![],
        })
        .await
        .unwrap();
        assert_eq!(s.head(&id).await.unwrap(), Some(head.clone()));
        let mut done = head.clone();
        done.version = 2;
        done.status = Status::Failed;
        done.exit_code = Some(-9);
        done.final_index = Some(0);
        done.last_timestamp = 1_700_000_000_123;
        done.updated_at = 1_700_000_000_456;
        s.commit(Commit {
            expected_version: Some(1),
            head: done.clone(),
            events: vec![],
        })
        .await
        .unwrap();
        assert_eq!(s.head(&id).await.unwrap(), Some(done));
    }

    pub async fn recent_executions_are_listed_newest_first<S: LogStore + 'static>(s: Arc<S>) {
        let s = into_dyn(s);
        // A window of its own (days apart, across several days), whatever else the store holds.
        let day = 86_400_000i64;
        let base = 2_000_000_000_000 + (std::process::id() as i64 % 1_000) * 40 * day;
        let tag = fresh_id("recent");
        let mut ids = Vec::new();
        for (k, offset) in [0, day / 2, 3 * day, 3 * day + 1, 9 * day]
            .into_iter()
            .enumerate()
        {
            let id = format!("{tag}-{k}");
            let mut head = Head::new(&id, base + offset, tomorrow());
            head.version = 1;
            if k == 1 {
                head.status = Status::Failed;
                head.exit_code = Some(2);
                head.final_index = Some(0);
            }
            s.commit(Commit {
                expected_version: None,
                head,
                events: vec![],
            })
            .await
            .unwrap();
            ids.push(id);
        }
        let listed = s.recent(base, base + 10 * day, 10).await.unwrap();
        let order: Vec<&str> = listed.iter().map(|x| x.execution_id.as_str()).collect();
        assert_eq!(order, [&ids[4], &ids[3], &ids[2], &ids[1], &ids[0]]);
        assert_eq!(listed[3].status, Status::Failed);
        assert_eq!(listed[3].exit_code, Some(2));
        assert_eq!(listed[3].final_index, Some(0));
        assert_eq!(listed[0].created_at, base + 9 * day);
        // Bounded by count and by window.
        let two = s.recent(base, base + 10 * day, 2).await.unwrap();
        assert_eq!(two.len(), 2);
        assert_eq!(two[1].execution_id, ids[3]);
        let window = s
            .recent(base + day / 2, base + 3 * day + 1, 10)
            .await
            .unwrap();
        let order: Vec<&str> = window.iter().map(|x| x.execution_id.as_str()).collect();
        assert_eq!(order, [&ids[2], &ids[1]]);
    }

    pub async fn executions_are_isolated<S: LogStore + 'static>(s: Arc<S>) {
        let s = into_dyn(s);
        let a = fresh_id("iso-a");
        let b = fresh_id("iso-b");
        for id in [&a, &b] {
            s.commit(Commit {
                expected_version: None,
                head: head_at(id, 2, 1),
                events: events(1, 2, 10),
            })
            .await
            .unwrap();
        }
        assert_eq!(s.read_range(&b, 0, 2, 10).await.unwrap(), events(1, 2, 10));
        assert_eq!(s.head(&a).await.unwrap().unwrap().last_index, 2);
    }

    pub async fn full_commit_is_accepted<S: LogStore + 'static>(s: Arc<S>) {
        let s = into_dyn(s);
        let id = fresh_id("full");
        let n = s.max_events_per_commit() as u64;
        assert!(n >= 1);
        s.commit(Commit {
            expected_version: None,
            head: head_at(&id, n, 1),
            events: events(1, n, 1000),
        })
        .await
        .unwrap();
        assert_eq!(
            s.read_range(&id, 0, n, 10_000).await.unwrap().len() as u64,
            n
        );
    }

    pub async fn racing_commits_have_exactly_one_winner<S: LogStore + 'static>(s: Arc<S>) {
        let s = into_dyn(s);
        let id = fresh_id("race");
        s.commit(Commit {
            expected_version: None,
            head: head_at(&id, 0, 1),
            events: vec![],
        })
        .await
        .unwrap();
        let mut tasks = Vec::new();
        for w in 0..8u64 {
            let s = s.clone();
            let id = id.clone();
            tasks.push(tokio::spawn(async move {
                let mut evs = events(1, 2, 10);
                for e in &mut evs {
                    e.event_id = format!("w{w}-{}", e.index);
                }
                s.commit(Commit {
                    expected_version: Some(1),
                    head: head_at(&id, 2, 2),
                    events: evs,
                })
                .await
            }));
        }
        let mut wins = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(()) => wins += 1,
                Err(CommitError::VersionConflict) => {}
                Err(e) => panic!("unexpected commit error {e:?}"),
            }
        }
        assert_eq!(wins, 1);
        let got = s.read_range(&id, 0, 2, 10).await.unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0].event_id.split('-').next(),
            got[1].event_id.split('-').next(),
            "both indexes come from the one winning writer"
        );
    }

    pub async fn expired_items_are_reported_not_skipped<S: LogStore + 'static>(s: Arc<S>) {
        let s = into_dyn(s);
        let id = fresh_id("expired");
        commit_expired_then_live(&s, &id).await;
        match s.read_range(&id, 0, 3, 10).await {
            Err(StoreError::Expired(e)) => assert_eq!(e, id),
            other => panic!("expected Expired, got {other:?}"),
        }
        assert_eq!(s.read_range(&id, 2, 3, 10).await.unwrap(), events(3, 3, 10));
    }
}

pub mod expiry {
    use super::*;

    /// Items written to expire soon, then extended: read back whole; a large event (stored in
    /// parts by some stores) too.
    pub async fn extended_items_live_until_their_new_expiry<S: LogStore + 'static>(s: Arc<S>) {
        let s: Arc<dyn LogStore> = s;
        let id = fresh_id("extend");
        commit_expired_then_live(&s, &id).await;
        let mut big = head_at(&id, 4, 3);
        big.expires_at = tomorrow();
        big.items_expire_at = Some(1_000);
        let large = LogEvent {
            index: 4,
            event_id: "big".into(),
            timestamp: 4,
            message: "y".repeat(900_000),
        };
        s.commit(Commit {
            expected_version: Some(2),
            head: big,
            events: vec![large.clone()],
        })
        .await
        .unwrap();
        assert!(matches!(
            s.read_range(&id, 0, 4, 10).await,
            Err(StoreError::Expired(_))
        ));
        s.extend_expiry(&id, 4, tomorrow(), tomorrow() + 60)
            .await
            .unwrap();
        let all = s.read_range(&id, 0, 4, 10).await.unwrap();
        assert_eq!(all.len(), 4);
        assert_eq!(all[3], large);
        // Extending to an earlier time shortens nothing, and again changes nothing.
        s.extend_expiry(&id, 4, 1_000, 1_000).await.unwrap();
        s.extend_expiry(&id, 4, tomorrow(), tomorrow() + 60)
            .await
            .unwrap();
        assert_eq!(s.read_range(&id, 0, 4, 10).await.unwrap().len(), 4);
    }
}

/// Lines 1–2 of `id` committed long expired, then line 3 live: the range from 0 is not complete
/// and must not look it.
async fn commit_expired_then_live(s: &Arc<dyn LogStore>, id: &str) {
    let mut head = head_at(id, 2, 1);
    head.expires_at = 1_000; // long past
    s.commit(Commit {
        expected_version: None,
        head,
        events: events(1, 2, 10),
    })
    .await
    .unwrap();
    let mut live = head_at(id, 3, 2);
    live.expires_at = tomorrow();
    s.commit(Commit {
        expected_version: Some(1),
        head: live,
        events: events(3, 3, 10),
    })
    .await
    .unwrap();
}

/// What `read_dense` must carry for `events`: each one's timestamp and message (a store packs
/// them in runs as it keeps them).
fn dense(events: &[LogEvent]) -> Vec<(i64, Vec<u8>)> {
    events
        .iter()
        .map(|e| (e.timestamp, e.message.as_bytes().to_vec()))
        .collect()
}

/// The events of the runs a `read_dense` appended.
fn events_of(runs: &[u8]) -> Vec<(i64, Vec<u8>)> {
    crate::lines::events_of(runs)
        .unwrap_or_else(|e| panic!("read_dense appended something that is not runs: {e}"))
        .into_iter()
        .map(|(t, m)| (t, m.to_vec()))
        .collect()
}

pub mod dense {
    use super::*;

    type Store = Arc<dyn LogStore>;

    async fn read(
        s: &Store,
        id: &str,
        after: u64,
        through: u64,
        limit: usize,
        max: usize,
    ) -> Result<Option<(usize, Vec<u8>)>, StoreError> {
        // Appended after what the buffer holds already.
        let mut out = b"before".to_vec();
        let n = s
            .read_dense(id, after, through, limit, max, &mut out)
            .await?;
        assert!(out.starts_with(b"before"));
        Ok(n.map(|n| (n, out[6..].to_vec())))
    }

    /// [`read`], the runs read back as events.
    async fn read_events(
        s: &Store,
        id: &str,
        after: u64,
        through: u64,
        limit: usize,
    ) -> Result<Option<(usize, Vec<(i64, Vec<u8>)>)>, StoreError> {
        let read = read(s, id, after, through, limit, usize::MAX).await?;
        Ok(read.map(|(n, runs)| {
            let events = events_of(&runs);
            assert_eq!(n, events.len(), "the count read_dense returns");
            (n, events)
        }))
    }

    pub async fn dense_reads_carry_the_events_read<S: LogStore + 'static>(s: Arc<S>) {
        let s: Store = s;
        let id = fresh_id("dense");
        let mut all = events(1, 12, 30);
        all[1].message = "two\nlines, a \"quote\" and a back\\slash".into();
        all[4].message = String::new();
        all[7].message = "é 日本 🙂 \u{1b}[1mbold\u{1b}[0m\ttab".into();
        for (k, chunk) in all.chunks(5).enumerate() {
            let k = k as u64;
            s.commit(Commit {
                expected_version: (k > 0).then_some(k),
                head: head_at(&id, chunk.last().unwrap().index, k + 1),
                events: chunk.to_vec(),
            })
            .await
            .unwrap();
        }
        for (after, through, limit) in [
            (0, 12, 100),
            (3, 12, 100),
            (3, 9, 100),
            (4, 12, 3),
            (11, 12, 5),
            (12, 12, 5),
        ] {
            let want = s.read_range(&id, after, through, limit).await.unwrap();
            let (n, got) = read_events(&s, &id, after, through, limit)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(n, want.len(), "({after}, {through}, {limit})");
            assert_eq!(got, dense(&want), "({after}, {through}, {limit})");
        }
    }

    pub async fn dense_reads_are_bounded_but_never_empty<S: LogStore + 'static>(s: Arc<S>) {
        let s: Store = s;
        let id = fresh_id("dense-bytes");
        let evs = events(1, 10, 1_000);
        s.commit(Commit {
            expected_version: None,
            head: head_at(&id, 10, 1),
            events: evs.clone(),
        })
        .await
        .unwrap();
        let (n, got) = read(&s, &id, 4, 10, 10, 1).await.unwrap().unwrap();
        assert_eq!(
            (n, events_of(&got)),
            (1, dense(&evs[4..5])),
            "one event even when it alone is larger than the bound"
        );
        // A store bounds by wire size or by the runs' own bytes, never above the bound.
        let mut three = crate::lines::RunBuilder::default();
        for e in &evs[..3] {
            three.push(e.timestamp, e.message.as_bytes());
        }
        let bound = three.encoded_len().max(3 * evs[0].wire_size());
        let (n, got) = read(&s, &id, 0, 10, 10, bound).await.unwrap().unwrap();
        assert!((1..10).contains(&n), "{n} records in {bound} bytes");
        assert!(
            got.len() <= bound,
            "{} bytes for a bound of {bound}",
            got.len()
        );
        assert_eq!(events_of(&got), dense(&evs[..n]));
    }

    pub async fn dense_reads_report_expiry_and_base64_messages<S: LogStore + 'static>(s: Arc<S>) {
        let s: Store = s;
        let id = fresh_id("dense-expired");
        commit_expired_then_live(&s, &id).await;
        match read(&s, &id, 0, 3, 10, usize::MAX).await {
            Err(StoreError::Expired(e)) => assert_eq!(e, id),
            other => panic!("expected Expired, got {other:?}"),
        }
        assert_eq!(
            read_events(&s, &id, 2, 3, 10).await.unwrap().unwrap().1,
            dense(&events(3, 3, 10))
        );

        // A message that would travel as base64 in JSON keeps its page JSON.
        let id = fresh_id("dense-base64");
        let mut evs = events(1, 3, 10);
        evs[1].message = "\u{1}".repeat(crate::model::BASE64_ABOVE / 4);
        assert!(evs[1].travels_base64());
        s.commit(Commit {
            expected_version: None,
            head: head_at(&id, 3, 1),
            events: evs.clone(),
        })
        .await
        .unwrap();
        assert_eq!(read(&s, &id, 0, 3, 10, usize::MAX).await.unwrap(), None);
        // A long line with nothing to escape stays dense.
        let id2 = fresh_id("dense-long");
        let mut long = events(1, 2, 10);
        long[0].message = "a".repeat(300_000);
        s.commit(Commit {
            expected_version: None,
            head: head_at(&id2, 2, 1),
            events: long.clone(),
        })
        .await
        .unwrap();
        assert_eq!(
            read_events(&s, &id2, 0, 2, 10).await.unwrap(),
            Some((2, dense(&long)))
        );
        assert_eq!(
            read_events(&s, &id, 2, 3, 10).await.unwrap(),
            Some((1, dense(&evs[2..])))
        );
    }
}

pub mod connections {
    use super::*;

    fn conn(id: &str, exec: &str, cursor: u64) -> Connection {
        // One expiry for the whole run, so two calls build equal connections.
        static EXPIRES: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
        Connection {
            connection_id: id.to_string(),
            execution_id: exec.to_string(),
            cursor,
            connected_at: 1_700_000_000_000,
            expires_at: *EXPIRES.get_or_init(tomorrow),
            resumed_at: 1_700_000_000_500,
        }
    }

    pub async fn connections_put_get_list_remove<C: ConnectionStore + 'static>(c: Arc<C>) {
        let exec = fresh_id("conn-exec");
        let other = fresh_id("conn-other");
        let a = fresh_id("ca");
        let b = fresh_id("cb");
        let x = fresh_id("cx");
        c.put(conn(&a, &exec, 0)).await.unwrap();
        c.put(conn(&b, &exec, 5)).await.unwrap();
        c.put(conn(&x, &other, 0)).await.unwrap();
        assert_eq!(c.get(&b).await.unwrap(), Some(conn(&b, &exec, 5)));
        let mut ids: Vec<String> = c
            .list(&exec)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.connection_id)
            .collect();
        ids.sort();
        let mut want = vec![a.clone(), b.clone()];
        want.sort();
        assert_eq!(ids, want);
        c.remove(&a).await.unwrap();
        c.remove(&a).await.unwrap(); // removing twice is fine
        assert_eq!(c.get(&a).await.unwrap(), None);
        assert_eq!(c.list(&exec).await.unwrap().len(), 1);
    }

    pub async fn advance_only_raises_the_cursor<C: ConnectionStore + 'static>(c: Arc<C>) {
        let exec = fresh_id("adv-exec");
        let a = fresh_id("adv");
        c.put(conn(&a, &exec, 3)).await.unwrap();
        let me = conn(&a, &exec, 3);
        assert_eq!(c.advance(&me, 10).await.unwrap(), Some(3));
        assert_eq!(c.advance(&me, 7).await.unwrap(), Some(10));
        assert_eq!(c.get(&a).await.unwrap().unwrap().cursor, 10);
        let nobody = conn(&fresh_id("nobody"), &exec, 0);
        assert_eq!(c.advance(&nobody, 1).await.unwrap(), None);
        // Resume moves the cursor back by rewriting the connection.
        c.put(conn(&a, &exec, 2)).await.unwrap();
        assert_eq!(c.advance(&me, 4).await.unwrap(), Some(2));
    }

    /// `resume` is one conditional write: of many at once, one passes the interval; the next
    /// passes only after it; a gone connection says so.
    pub async fn simultaneous_resumes_pass_the_limit_once<C: ConnectionStore + 'static>(c: Arc<C>) {
        use crate::ports::Resumed;
        let exec = fresh_id("res-exec");
        let a = fresh_id("res");
        c.put(conn(&a, &exec, 3)).await.unwrap();
        let me = conn(&a, &exec, 3);
        let now = 1_800_000_000_000;
        let mut tasks = Vec::new();
        for i in 0..8u64 {
            let (c, me) = (c.clone(), me.clone());
            tasks.push(tokio::spawn(async move {
                c.resume(&me, 100 + i, now, 1_000).await.unwrap()
            }));
        }
        let mut done = 0;
        for t in tasks {
            match t.await.unwrap() {
                Resumed::Done => done += 1,
                Resumed::TooSoon => {}
                Resumed::Gone => panic!("the connection exists"),
            }
        }
        assert_eq!(done, 1, "exactly one of the simultaneous resumes passes");
        let after = c.get(&a).await.unwrap().unwrap();
        assert!((100..108).contains(&after.cursor) && after.resumed_at == now);
        assert_eq!(
            c.resume(&me, 5, now + 999, 1_000).await.unwrap(),
            Resumed::TooSoon
        );
        assert_eq!(
            c.resume(&me, 5, now + 1_000, 1_000).await.unwrap(),
            Resumed::Done
        );
        assert_eq!(
            c.get(&a).await.unwrap().unwrap().cursor,
            5,
            "a resume may move it back"
        );
        let nobody = conn(&fresh_id("nobody"), &exec, 0);
        assert_eq!(
            c.resume(&nobody, 1, now, 1_000).await.unwrap(),
            Resumed::Gone
        );
    }

    pub async fn list_sees_a_connection_right_after_put<C: ConnectionStore + 'static>(c: Arc<C>) {
        let exec = fresh_id("vis-exec");
        for i in 0..20 {
            let id = fresh_id(&format!("vis{i}"));
            c.put(conn(&id, &exec, 0)).await.unwrap();
            let listed = c.list(&exec).await.unwrap();
            assert!(
                listed.iter().any(|x| x.connection_id == id),
                "a connection that finished $connect must be found at once"
            );
        }
    }
}
