//! An exhaustive model check of the DynamoDB commit protocol (docs/spec.md §5) under DynamoDB's
//! visibility rules: every interleaving of two or three writers (forwarders handed the same
//! batch, a reconciler, a completion's head-only commit, a writer whose successful transaction
//! the SDK sends again) over a store where a transaction's items under the head's partition key
//! appear at once and its idempotency records (other partition keys) appear later, each on its
//! own (read-committed per item). Every reachable state is checked for I1–I4; a counterexample
//! is printed as the shortest schedule that reaches it.
//!
//! The model is of the protocol, not of the adapter's code: one step is one request (a strongly
//! consistent `GetItem` of the head, a `BatchGetItem` of the records the head names, a `Query`
//! of the records, a `TransactWriteItems`), and the environment may make any hidden record
//! visible between any two steps. `Protocol::Unverified` is the protocol before records were
//! verified; it must be caught, and so must a planted bug in the verified one.
//!
//! `cargo test -p runvoy-core --test commit_model -- --nocapture` prints the states explored.

use std::collections::{HashMap, VecDeque};

/// Event ids are small numbers; their timestamps come from the scenario.
type Id = u8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// Before: the records are queried after reading the head, trusting that they are visible.
    Unverified,
    /// Now: the head names the records of the last commit that had events; a writer reads them
    /// (strongly consistent) before trusting the head, and a missing one is a conflict.
    Verified,
    /// A planted bug: a head-only commit forgets the records the head named.
    VerifiedForgetful,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Record {
    commit: u8,
    ids: Vec<Id>,
    visible: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Head {
    version: u8,
    last_ts: u8,
    /// The commits whose records this head names.
    names: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Store {
    head: Option<Head>,
    /// The event id at each index (index = position + 1).
    log: Vec<Id>,
    records: Vec<Record>,
    commits: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Pc {
    ReadHead,
    Verify,
    Lookup,
    Transact,
    Done,
    GaveUp,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Writer {
    name: &'static str,
    /// Events still to commit, in commit order (sorted by timestamp, stable).
    pending: Vec<Id>,
    pc: Pc,
    seen: Option<Head>,
    tries: u8,
    /// The SDK may answer this writer's successful transaction with an error once, and the
    /// writer then retries as after a conflict.
    sdk_retry: bool,
    /// A completion: commits a new head and no events.
    head_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct State {
    store: Store,
    writers: Vec<Writer>,
}

/// Conflicts a writer takes before it gives up (the engine backs off and retries; AWS retries
/// the invocation). Bounded so the state space is finite.
const MAX_TRIES: u8 = 3;

struct Model {
    protocol: Protocol,
    ts: HashMap<Id, u8>,
}

impl Model {
    fn ts(&self, id: Id) -> u8 {
        self.ts[&id]
    }

    /// Every successor of `s`, with a label saying which step made it.
    fn next(&self, s: &State) -> Vec<(String, State)> {
        let mut out = Vec::new();
        for (i, r) in s.store.records.iter().enumerate() {
            if !r.visible {
                let mut n = s.clone();
                n.store.records[i].visible = true;
                out.push((format!("records of commit {} become visible", r.commit), n));
            }
        }
        for w in 0..s.writers.len() {
            out.extend(self.step(s, w));
        }
        out
    }

    fn conflict(w: &mut Writer) {
        w.tries += 1;
        w.pc = if w.tries >= MAX_TRIES {
            Pc::GaveUp
        } else {
            Pc::ReadHead
        };
    }

    fn step(&self, s: &State, wi: usize) -> Vec<(String, State)> {
        let mut n = s.clone();
        let name = s.writers[wi].name;
        let store = &mut n.store;
        let w = &mut n.writers[wi];
        match w.pc {
            Pc::Done | Pc::GaveUp => Vec::new(),
            Pc::ReadHead => {
                w.seen = store.head.clone();
                let names = w.seen.as_ref().is_some_and(|h| !h.names.is_empty());
                // A head-only commit looks nothing up, so it verifies nothing: it passes the
                // names on instead.
                w.pc = if self.protocol != Protocol::Unverified && names && !w.head_only {
                    Pc::Verify
                } else {
                    Pc::Lookup
                };
                vec![(
                    format!(
                        "{name} reads the head (version {:?})",
                        w.seen.as_ref().map(|h| h.version)
                    ),
                    n,
                )]
            }
            Pc::Verify => {
                let names = w.seen.as_ref().map(|h| h.names.clone()).unwrap_or_default();
                let all = names
                    .iter()
                    .all(|c| store.records.iter().any(|r| r.commit == *c && r.visible));
                let label = if all {
                    w.pc = Pc::Lookup;
                    format!("{name} finds the records the head names")
                } else {
                    Self::conflict(w);
                    format!("{name} misses a record the head names: conflict")
                };
                vec![(label, n)]
            }
            Pc::Lookup => {
                let last_ts = w.seen.as_ref().map(|h| h.last_ts);
                let may_be_known = w
                    .pending
                    .iter()
                    .any(|id| last_ts.is_some_and(|t| self.ts(*id) <= t));
                let mut label = format!("{name} has nothing to look up");
                if may_be_known {
                    let known: Vec<Id> = store
                        .records
                        .iter()
                        .filter(|r| r.visible)
                        .flat_map(|r| r.ids.iter().copied())
                        .collect();
                    w.pending.retain(|id| !known.contains(id));
                    label = format!("{name} queries the records, pending now {:?}", w.pending);
                }
                w.pc = if w.pending.is_empty() && !w.head_only {
                    Pc::Done
                } else {
                    Pc::Transact
                };
                vec![(label, n)]
            }
            Pc::Transact => {
                let expected = w.seen.as_ref().map(|h| h.version);
                if store.head.as_ref().map(|h| h.version) != expected {
                    Self::conflict(w);
                    return vec![(format!("{name}'s transaction fails its condition"), n)];
                }
                let old = store.head.clone();
                let commit = store.commits + 1;
                store.commits = commit;
                let mut last_ts = old.as_ref().map_or(0, |h| h.last_ts);
                for id in &w.pending {
                    store.log.push(*id);
                    last_ts = last_ts.max(self.ts(*id));
                }
                let names = if !w.pending.is_empty() {
                    store.records.push(Record {
                        commit,
                        ids: w.pending.clone(),
                        visible: false,
                    });
                    vec![commit]
                } else if self.protocol == Protocol::VerifiedForgetful {
                    Vec::new()
                } else {
                    old.as_ref().map(|h| h.names.clone()).unwrap_or_default()
                };
                store.head = Some(Head {
                    version: expected.map_or(1, |v| v + 1),
                    last_ts,
                    names,
                });
                let label = format!("{name} commits {:?} as commit {commit}", w.pending);
                let mut outcomes = Vec::new();
                if w.sdk_retry {
                    // The same success, answered as an error: the writer tries again.
                    let mut again = n.clone();
                    let aw = &mut again.writers[wi];
                    aw.sdk_retry = false;
                    Self::conflict(aw);
                    outcomes.push((format!("{label}, but is answered 500"), again));
                }
                let w = &mut n.writers[wi];
                w.pending.clear();
                w.pc = Pc::Done;
                outcomes.push((label, n));
                outcomes
            }
        }
    }

    /// What must hold in every reachable state: I1 (indexes 1..=n, by the model's
    /// construction, and the head's count), I2 (no event committed twice, and every event
    /// committed when no writer gave up), I3 and I4 are checked on transitions.
    fn violation(&self, s: &State) -> Option<String> {
        let mut seen = Vec::new();
        for (i, id) in s.store.log.iter().enumerate() {
            if seen.contains(id) {
                return Some(format!(
                    "I2: event {id} committed twice (index {} again)",
                    i + 1
                ));
            }
            seen.push(*id);
        }
        let settled = s.writers.iter().all(|w| w.pc == Pc::Done);
        if settled {
            for w in &s.writers {
                for id in &self.batches_of(w.name, s) {
                    if !s.store.log.contains(id) {
                        return Some(format!("I2: event {id} of {} never committed", w.name));
                    }
                }
            }
        }
        None
    }

    fn batches_of(&self, _name: &str, s: &State) -> Vec<Id> {
        // Every event any writer was handed: the union of the scenario's batches, kept in the
        // model's timestamp table.
        let _ = s;
        self.ts.keys().copied().collect()
    }

    /// I3 and I4 across one step: the log only grows, and one commit's events ascend by
    /// timestamp.
    fn transition_violation(&self, before: &State, after: &State) -> Option<String> {
        if !after.store.log.starts_with(&before.store.log) {
            return Some("I3: a committed index changed".into());
        }
        let added = &after.store.log[before.store.log.len()..];
        if added.windows(2).any(|p| self.ts(p[0]) > self.ts(p[1])) {
            return Some(format!("I4: commit {added:?} is not in timestamp order"));
        }
        None
    }
}

struct Report {
    states: usize,
    counterexample: Option<(String, Vec<String>)>,
}

/// Breadth-first over every reachable state; the first violation found is reached by a
/// shortest schedule.
fn explore(model: &Model, start: State) -> Report {
    let mut index: HashMap<State, usize> = HashMap::new();
    let mut nodes: Vec<(State, Option<(usize, String)>)> = Vec::new();
    let mut queue = VecDeque::new();
    index.insert(start.clone(), 0);
    nodes.push((start, None));
    queue.push_back(0usize);
    let trace = |nodes: &Vec<(State, Option<(usize, String)>)>, mut at: usize| {
        let mut steps = Vec::new();
        while let Some((parent, label)) = &nodes[at].1 {
            steps.push(label.clone());
            at = *parent;
        }
        steps.reverse();
        steps
    };
    while let Some(at) = queue.pop_front() {
        let state = nodes[at].0.clone();
        for (label, next) in model.next(&state) {
            if index.contains_key(&next) {
                continue;
            }
            let why = model
                .transition_violation(&state, &next)
                .or_else(|| model.violation(&next));
            let id = nodes.len();
            index.insert(next.clone(), id);
            nodes.push((next, Some((at, label))));
            if let Some(why) = why {
                return Report {
                    states: nodes.len(),
                    counterexample: Some((why, trace(&nodes, id))),
                };
            }
            queue.push_back(id);
        }
    }
    Report {
        states: nodes.len(),
        counterexample: None,
    }
}

fn writer(name: &'static str, pending: &[Id], sdk_retry: bool) -> Writer {
    Writer {
        name,
        pending: pending.to_vec(),
        pc: Pc::ReadHead,
        seen: None,
        tries: 0,
        sdk_retry,
        head_only: false,
    }
}

fn completion() -> Writer {
    Writer {
        head_only: true,
        ..writer("completion", &[], false)
    }
}

/// What a scenario is about, the timestamps of its events, and its writers.
type Scenario = (&'static str, Vec<(Id, u8)>, Vec<Writer>);

/// The scenarios: each a set of writers and the timestamps of their events.
fn scenarios() -> Vec<Scenario> {
    vec![
        (
            "one batch handed to two invocations (Lambda async), the SDK resending a success",
            vec![(1, 1), (2, 1)],
            vec![
                writer("forwarder A", &[1, 2], true),
                writer("forwarder B", &[1, 2], true),
            ],
        ),
        (
            "a forwarder, a reconciler reading the whole source, and a completion",
            vec![(1, 1), (2, 2), (3, 2)],
            vec![
                writer("forwarder", &[2, 3], true),
                writer("reconciler", &[1, 2, 3], false),
                completion(),
            ],
        ),
        (
            "three writers with overlapping batches, one millisecond",
            vec![(1, 1), (2, 1)],
            vec![
                writer("forwarder A", &[1], true),
                writer("forwarder B", &[1, 2], false),
                writer("forwarder C", &[2], true),
            ],
        ),
        (
            "a completion between two commits of the same event",
            vec![(1, 1)],
            vec![
                writer("forwarder A", &[1], false),
                completion(),
                writer("forwarder B", &[1], false),
            ],
        ),
    ]
}

fn check(protocol: Protocol) -> Vec<(&'static str, Report)> {
    scenarios()
        .into_iter()
        .map(|(what, ts, writers)| {
            let model = Model {
                protocol,
                ts: ts.into_iter().collect(),
            };
            let start = State {
                store: Store {
                    head: None,
                    log: Vec::new(),
                    records: Vec::new(),
                    commits: 0,
                },
                writers,
            };
            (what, explore(&model, start))
        })
        .collect()
}

fn print(protocol: Protocol, reports: &[(&str, Report)]) {
    for (what, r) in reports {
        println!("{protocol:?} / {what}: {} states", r.states);
        if let Some((why, steps)) = &r.counterexample {
            println!("  violation: {why}");
            for (i, s) in steps.iter().enumerate() {
                println!("  {:>2}. {s}", i + 1);
            }
        }
    }
}

#[test]
fn the_unverified_protocol_commits_an_event_twice() {
    let reports = check(Protocol::Unverified);
    print(Protocol::Unverified, &reports);
    let found: Vec<&str> = reports
        .iter()
        .filter_map(|(_, r)| r.counterexample.as_ref().map(|c| c.0.as_str()))
        .collect();
    assert!(
        found.iter().any(|w| w.contains("committed twice")),
        "the model must find the duplicate of the old protocol: {found:?}"
    );
}

#[test]
fn the_verified_protocol_holds_in_every_interleaving() {
    let reports = check(Protocol::Verified);
    print(Protocol::Verified, &reports);
    for (what, r) in &reports {
        assert!(r.counterexample.is_none(), "{what}: {:?}", r.counterexample);
        assert!(r.states > 100, "{what}: only {} states", r.states);
    }
}

#[test]
fn a_head_only_commit_that_forgets_the_named_records_is_caught() {
    let reports = check(Protocol::VerifiedForgetful);
    print(Protocol::VerifiedForgetful, &reports);
    assert!(
        reports.iter().any(|(_, r)| r.counterexample.is_some()),
        "the model must notice the planted bug"
    );
}
