//! Deterministic interleavings of spec §3.2–3.4 (not to be confused with the sim, which emulates
//! AWS): concurrent forwarders interleaved at every await point, duplicated / reordered /
//! dropped subscription batches, lazy population racing the forwarders, reconciliation,
//! completion, and clients that connect late, lose pushes and reconnect.
//! Every schedule checks I1–I6. Scenarios come from proptest, so a failure shrinks to a small
//! case whose `seed` reproduces it exactly.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use runvoy_core::api::{Api, ApiConfig, HttpRequest};
use runvoy_core::auth::{ApiKeys, TokenSigner};
use runvoy_core::client::Follower;
use runvoy_core::client::pacing::{Pacer, Schedule};
use runvoy_core::memory::{
    MemoryConnections, MemoryMetrics, MemorySource, MemoryStore, RecordingPusher, SimClock,
    YieldNow, splitmix64,
};
use runvoy_core::ports::{Clock, HeadReader, LogStore, Metric};
use runvoy_core::services::{
    Appender, Completer, EngineConfig, FanOut, Forwarder, Reader, Reconciler,
};
use runvoy_core::wire::{LogsResponse, ServerMessage};
use runvoy_core::ws::WsService;
use runvoy_core::{LogEvent, SourceEvent, Status};

const EXEC: &str = "exec-sim";
const KEY: &str = "sim-key";

/// One simulated world, drawn by proptest.
#[derive(Debug, Clone)]
struct Scenario {
    seed: u64,
    events: usize,
    batch: usize,
    appenders: usize,
    dup: u8,     // percent of batches delivered twice
    drop: u8,    // percent of batches never delivered
    reorder: u8, // percent chance a batch is moved ahead in the queue
    page: usize,
    empty_pages: bool,
    max_commit: usize,
    clients: usize,
    push_loss: u8, // percent of pushes a client never sees
    lazy_reader: bool,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        any::<u64>(),
        1usize..=60,
        1usize..=12,
        4usize..=6,
        0u8..=50,
        0u8..=30,
        0u8..=60,
        (1usize..=25, any::<bool>()),
        1usize..=49,
        0usize..=3,
        0u8..=40,
        any::<bool>(),
    )
        .prop_map(
            |(
                seed,
                events,
                batch,
                appenders,
                dup,
                drop,
                reorder,
                (page, empty_pages),
                max_commit,
                clients,
                push_loss,
                lazy_reader,
            )| {
                Scenario {
                    seed,
                    events,
                    batch,
                    appenders,
                    dup,
                    drop,
                    reorder,
                    page,
                    empty_pages,
                    max_commit,
                    clients,
                    push_loss,
                    lazy_reader,
                }
            },
        )
}

/// Which part of the engine to break on purpose (to prove the checks catch it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Break {
    None,
    Idempotency,
    VersionCheck,
}

type Task<'a> = Pin<Box<dyn Future<Output = ()> + 'a>>;

/// Polls tasks in an order drawn from `seed` until all finish; every `YieldNow` is a switch.
fn run_tasks(seed: u64, mut tasks: Vec<Task<'_>>, max_polls: u64) -> Result<u64, String> {
    let mut rng = seed;
    let mut cx = Context::from_waker(Waker::noop());
    let mut polls = 0u64;
    while !tasks.is_empty() {
        polls += 1;
        if polls > max_polls {
            return Err(format!(
                "no progress after {max_polls} polls ({} tasks left)",
                tasks.len()
            ));
        }
        let i = (splitmix64(&mut rng) % tasks.len() as u64) as usize;
        if let Poll::Ready(()) = tasks[i].as_mut().poll(&mut cx) {
            drop(tasks.swap_remove(i));
        }
    }
    Ok(polls)
}

struct World {
    store: Arc<MemoryStore>,
    source: Arc<MemorySource>,
    pusher: Arc<RecordingPusher>,
    metrics: Arc<MemoryMetrics>,
    clock: Arc<SimClock>,
    forwarder: Forwarder,
    reconciler: Reconciler,
    fanout: FanOut,
    completer: Completer,
    api: Api,
    ws: WsService,
}

fn world(s: &Scenario, brk: Break) -> World {
    let clock = Arc::new(SimClock::new(1_700_000_000_000, s.seed ^ 0xA5A5));
    let store = Arc::new(
        MemoryStore::new()
            .with_yields()
            .with_max_events_per_commit(s.max_commit)
            .with_clock(clock.clone()),
    );
    store
        .break_idempotency
        .store(brk == Break::Idempotency, Ordering::Relaxed);
    store
        .break_version_check
        .store(brk == Break::VersionCheck, Ordering::Relaxed);
    let mut source = MemorySource::new(s.page);
    if s.empty_pages {
        source = source.with_empty_pages();
    }
    let source = Arc::new(source);
    let pusher = Arc::new(RecordingPusher::new());
    let metrics = Arc::new(MemoryMetrics::new());
    let connections = Arc::new(MemoryConnections::new());
    let dyn_store: Arc<dyn LogStore> = store.clone();
    let appender = Appender::new(
        dyn_store.clone(),
        clock.clone(),
        metrics.clone(),
        EngineConfig::default(),
    );
    let reader = Reader::new(dyn_store.clone(), clock.clone());
    let fanout = FanOut::new(
        dyn_store.clone(),
        connections,
        pusher.clone(),
        metrics.clone(),
        clock.clone(),
    );
    let reconciler = Reconciler::new(source.clone(), appender.clone(), metrics.clone());
    let completer = Completer::new(reconciler.clone(), fanout.clone());
    let signer = TokenSigner::new(b"sim-secret".to_vec(), 3600);
    let api = Api::new(
        reader.clone(),
        reconciler.clone(),
        completer.clone(),
        fanout.clone(),
        ApiKeys::new(vec![KEY.into()]),
        signer.clone(),
        clock.clone(),
        ApiConfig {
            websocket_url: Some("ws://sim/ws".into()),
            reconcile_interval_ms: 50,
            ..ApiConfig::default()
        },
    );
    let ws = WsService::new(
        reader,
        fanout.clone(),
        pusher.clone(),
        signer,
        clock.clone(),
    );
    let forwarder = Forwarder::new(appender, fanout.clone(), metrics.clone());
    World {
        store,
        source,
        pusher,
        metrics,
        clock,
        forwarder,
        reconciler,
        fanout,
        completer,
        api,
        ws,
    }
}

async fn yields(n: u64) {
    for _ in 0..n {
        YieldNow::default().await;
    }
}

async fn get_logs(api: &Api, since: u64) -> Result<LogsResponse, String> {
    let r = api
        .handle(HttpRequest {
            method: "GET".into(),
            path: format!("/api/v1/executions/{EXEC}/logs"),
            query: format!("since_index={since}&limit=7"),
            api_key: Some(KEY.into()),
            accept: None,
            body: vec![],
        })
        .await;
    if r.status != 200 {
        return Err(format!("GET logs returned {}: {}", r.status, r.body));
    }
    serde_json::from_str(&r.body).map_err(|e| e.to_string())
}

/// The client's tick in virtual time, and its schedule: spec §7.2's, twenty times faster.
const TICK_MS: u64 = 5;
const CLIENT_SCHEDULE_DIVISOR: u32 = 20;

/// A random draw in `0.0..=1.0` for the schedule's jitter.
fn draw(rng: &mut u64) -> f64 {
    (splitmix64(rng) % 1001) as f64 / 1000.0
}

/// The client algorithm of spec §7 against the simulated API and pushes: what to print decided
/// by [`Follower`], when to poll and reconnect by [`Pacer`], as the CLI does.
async fn client(
    w: &World,
    n: usize,
    start: u64,
    loss: u8,
    seed: u64,
) -> Result<(Vec<LogEvent>, i32), String> {
    let mut rng = seed;
    yields(start).await;
    let mut follower = Follower::new(0);
    let mut pacer = Pacer::new(Schedule::SPEC.scaled(CLIENT_SCHEDULE_DIVISOR));
    let mut printed = Vec::new();
    let mut attempt = 0;
    // The first read may race the producer before the stream exists: retry until it exists.
    let first = loop {
        match get_logs(&w.api, 0).await {
            Ok(r) => break r,
            Err(e) if e.contains("404") => yields(3).await,
            Err(e) => return Err(e),
        }
    };
    let mut pending_first = Some(first);
    for _session in 0..200 {
        // After failed handshakes (connections that ended at once), wait before the next one,
        // polling meanwhile.
        let mut delay = pacer.handshake_delay(draw(&mut rng)).as_millis() as u64;
        while delay > 0 && !follower.is_done() {
            let step = delay.min(pacer.schedule().idle_poll.as_millis() as u64);
            w.clock.sleep_ms(step).await;
            delay -= step;
            catch_up(w, &mut follower, &mut printed).await?;
        }
        attempt += 1;
        let conn_id = format!("c{n}-{attempt}");
        let url = match pending_first.take() {
            Some(r) => {
                absorb(&mut follower, &mut printed, &r)?;
                r.websocket_url
            }
            None => get_logs(&w.api, follower.last()).await?.websocket_url,
        };
        // Subscribe first (from the last printed index), then catch up over HTTP.
        if let Some(url) = url {
            let query = url.split_once('?').map(|(_, q)| q).unwrap_or_default();
            w.ws.connect(
                &conn_id,
                &format!("{query}&since_index={}", follower.last()),
            )
            .await
            .map_err(|e| format!("connect failed: {e:?}"))?;
        }
        catch_up(w, &mut follower, &mut printed).await?;
        let mut silent_ms = 0u64;
        let mut lived_ms = 0u64;
        loop {
            if follower.is_done() {
                let _ = w.ws.disconnect(&conn_id).await;
                return Ok((printed, follower.exit_code().unwrap_or(-1)));
            }
            let mut msgs = w.pusher.take(&conn_id);
            // Lossy, duplicated and reordered pushes.
            msgs.retain(|_| splitmix64(&mut rng) % 100 >= loss as u64);
            if msgs.len() > 1 && splitmix64(&mut rng).is_multiple_of(3) {
                let dup = msgs[0].clone();
                msgs.push(dup);
                msgs.reverse();
            }
            let mut gap = false;
            for m in &msgs {
                match serde_json::from_str::<ServerMessage>(m).map_err(|e| e.to_string())? {
                    ServerMessage::Logs { events, .. } => {
                        pacer.pushed();
                        let acc = follower.accept(events);
                        printed.extend(acc.print);
                        gap |= acc.gap;
                    }
                    ServerMessage::Status {
                        status,
                        exit_code,
                        final_index,
                        ..
                    } => {
                        follower.terminal(status, exit_code, final_index);
                        gap = true;
                    }
                    ServerMessage::Error { error, .. } => return Err(error),
                }
            }
            silent_ms = if msgs.is_empty() {
                silent_ms + TICK_MS
            } else {
                0
            };
            if gap {
                catch_up(w, &mut follower, &mut printed).await?;
                silent_ms = 0;
            } else if silent_ms >= pacer.idle_wait().as_millis() as u64 {
                let before = follower.last();
                catch_up(w, &mut follower, &mut printed).await?;
                pacer.polled_in_silence(follower.last() > before);
                silent_ms = 0;
            }
            if splitmix64(&mut rng).is_multiple_of(40) {
                // The connection drops; reconnect from the last printed index.
                let _ = w.ws.disconnect(&conn_id).await;
                pacer.connection_ended(std::time::Duration::from_millis(lived_ms));
                break;
            }
            w.clock.sleep_ms(TICK_MS).await;
            lived_ms += TICK_MS;
        }
    }
    Err("client did not finish after 200 sessions".into())
}

fn absorb(f: &mut Follower, printed: &mut Vec<LogEvent>, r: &LogsResponse) -> Result<(), String> {
    let acc = f.accept(r.events.clone());
    if acc.gap {
        return Err(format!("HTTP page after {} was not contiguous", f.last()));
    }
    printed.extend(acc.print);
    if let Some(fi) = r.final_index {
        f.terminal(r.status, r.exit_code, fi);
    }
    Ok(())
}

async fn catch_up(w: &World, f: &mut Follower, printed: &mut Vec<LogEvent>) -> Result<(), String> {
    loop {
        let r = get_logs(&w.api, f.last()).await?;
        absorb(f, printed, &r)?;
        if !r.has_more {
            return Ok(());
        }
    }
}

/// Runs one scenario; `Err` names the violated invariant.
fn run_scenario(s: &Scenario, brk: Break) -> Result<(), String> {
    let w = world(s, brk);
    let mut rng = s.seed;
    let queue: Mutex<VecDeque<Vec<SourceEvent>>> = Mutex::new(VecDeque::new());
    let produced = AtomicBool::new(false);
    let completed = AtomicBool::new(false);
    let batches_committed: Mutex<Vec<Vec<LogEvent>>> = Mutex::new(Vec::new());
    let errors: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let results: Mutex<Vec<(Vec<LogEvent>, i32)>> = Mutex::new(Vec::new());

    // Producer: writes lines to the source and hands batches to the subscription emulator.
    let mut prng = splitmix64(&mut rng);
    let producer = async {
        w.source.create_stream(EXEC);
        // Recent lines (the clock starts at 1_700_000_000_000): older ones would be expired.
        let mut ts = 1_699_999_000_000i64;
        let mut batch = Vec::new();
        for i in 0..s.events {
            // Timestamps mostly rise, sometimes fall back (out-of-order arrivals).
            ts += (splitmix64(&mut prng) % 5) as i64 - 1;
            batch.push(w.source.put(EXEC, ts, &format!("line {i}")));
            let last = i + 1 == s.events;
            if batch.len() >= s.batch || last {
                let b = std::mem::take(&mut batch);
                let roll = splitmix64(&mut prng) % 100;
                let mut q = queue.lock().unwrap();
                if roll >= s.drop as u64 {
                    let copies = if splitmix64(&mut prng) % 100 < s.dup as u64 {
                        2
                    } else {
                        1
                    };
                    for _ in 0..copies {
                        if splitmix64(&mut prng) % 100 < s.reorder as u64 && !q.is_empty() {
                            let at = (splitmix64(&mut prng) % (q.len() as u64 + 1)) as usize;
                            q.insert(at, b.clone());
                        } else {
                            q.push_back(b.clone());
                        }
                    }
                }
            }
            yields(splitmix64(&mut prng) % 3).await;
        }
        produced.store(true, Ordering::SeqCst);
    };

    let mut tasks: Vec<Task<'_>> = vec![Box::pin(producer)];

    // Forwarders: concurrent appenders draining the subscription queue; a failed invocation
    // puts its batch back (AWS retries asynchronous invocations).
    for _ in 0..s.appenders {
        let w = &w;
        let (queue, produced, batches_committed, errors) =
            (&queue, &produced, &batches_committed, &errors);
        tasks.push(Box::pin(async move {
            loop {
                let next = queue.lock().unwrap().pop_front();
                match next {
                    Some(batch) => match w.forwarder.forward(EXEC, batch.clone()).await {
                        Ok(out) => batches_committed.lock().unwrap().push(out.committed),
                        Err(e) if e.is_retryable() => queue.lock().unwrap().push_back(batch),
                        Err(e) => errors.lock().unwrap().push(format!("append failed: {e}")),
                    },
                    None if produced.load(Ordering::SeqCst) => return,
                    None => YieldNow::default().await,
                }
            }
        }));
    }

    // A reader that populates lazily, racing the forwarders.
    if s.lazy_reader {
        let w = &w;
        let errors = &errors;
        let start = splitmix64(&mut rng) % 40;
        tasks.push(Box::pin(async move {
            yields(start).await;
            if let Err(e) = get_logs(&w.api, 0).await
                && !e.contains("404")
            {
                errors.lock().unwrap().push(e);
            }
        }));
    }

    // Periodic reconciliation while someone watches.
    {
        let w = &w;
        let (produced, completed, errors) = (&produced, &completed, &errors);
        let period = 5 + splitmix64(&mut rng) % 30;
        tasks.push(Box::pin(async move {
            while !completed.load(Ordering::SeqCst) {
                yields(period).await;
                if !produced.load(Ordering::SeqCst)
                    && w.store.head(EXEC).await.ok().flatten().is_none()
                {
                    continue;
                }
                match w.reconciler.reconcile(EXEC).await {
                    Ok(out) => {
                        if let Some(h) = out.head {
                            let _ = w.fanout.notify(&h, &out.recovered).await;
                        }
                    }
                    Err(e) => errors
                        .lock()
                        .unwrap()
                        .push(format!("reconcile failed: {e}")),
                }
            }
        }));
    }

    // Completion once the producer has stopped (the ECS task is STOPPED).
    {
        let w = &w;
        let (produced, completed, errors) = (&produced, &completed, &errors);
        tasks.push(Box::pin(async move {
            while !produced.load(Ordering::SeqCst) {
                YieldNow::default().await;
            }
            loop {
                match w
                    .completer
                    .complete(EXEC, Status::Succeeded, Some(0), None, None)
                    .await
                {
                    Ok(_) => break,
                    Err(e) if e.is_retryable() => YieldNow::default().await,
                    Err(e) => {
                        errors.lock().unwrap().push(format!("complete failed: {e}"));
                        break;
                    }
                }
            }
            completed.store(true, Ordering::SeqCst);
        }));
    }

    for n in 0..s.clients {
        let w = &w;
        let (results, errors) = (&results, &errors);
        let start = splitmix64(&mut rng) % 200;
        let seed = splitmix64(&mut rng);
        let loss = s.push_loss;
        tasks.push(Box::pin(async move {
            match client(w, n, start, loss, seed).await {
                Ok(r) => results.lock().unwrap().push(r),
                Err(e) => errors.lock().unwrap().push(format!("client {n}: {e}")),
            }
        }));
    }

    let polls = run_tasks(s.seed, tasks, 5_000_000)?;
    record_coverage(&w, polls);
    let errors = errors.into_inner().unwrap();
    if let Some(e) = errors.first() {
        return Err(e.clone());
    }
    check(
        s,
        &w,
        &batches_committed.into_inner().unwrap(),
        &results.into_inner().unwrap(),
    )
}

fn check(
    s: &Scenario,
    w: &World,
    batches: &[Vec<LogEvent>],
    clients: &[(Vec<LogEvent>, i32)],
) -> Result<(), String> {
    let committed = w.store.all_events(EXEC);
    let head = futures_block(w.store.head(EXEC))
        .map_err(|e| e.to_string())?
        .ok_or("no head")?;
    // I1: exactly 1..=last_index.
    let indexes: Vec<u64> = committed.iter().map(|e| e.index).collect();
    let want: Vec<u64> = (1..=head.last_index).collect();
    if indexes != want {
        return Err(format!(
            "I1: committed indexes {indexes:?} are not 1..={}",
            head.last_index
        ));
    }
    // I2: every source event committed exactly once.
    let source = w.source.events(EXEC);
    let mut seen = HashSet::new();
    for e in &committed {
        if !seen.insert(e.event_id.clone()) {
            return Err(format!("I2: event {} committed twice", e.event_id));
        }
    }
    if committed.len() != source.len() || source.iter().any(|e| !seen.contains(&e.event_id)) {
        return Err(format!(
            "I2: {} of {} source events committed",
            committed.len(),
            source.len()
        ));
    }
    // I3: what each index holds is the source event with that id.
    let by_id: HashMap<&str, &SourceEvent> =
        source.iter().map(|e| (e.event_id.as_str(), e)).collect();
    for e in &committed {
        let src = by_id[e.event_id.as_str()];
        if src.message != e.message || src.timestamp != e.timestamp {
            return Err(format!(
                "I3: index {} does not hold event {}",
                e.index, e.event_id
            ));
        }
    }
    // I4: each delivered batch was committed in timestamp order, lines of one millisecond in
    // source order, and out-of-order arrivals were counted, not dropped.
    let position: HashMap<&str, usize> = source
        .iter()
        .enumerate()
        .map(|(i, e)| (e.event_id.as_str(), i))
        .collect();
    for b in batches {
        for pair in b.windows(2) {
            let key = |e: &LogEvent| (e.timestamp, position[e.event_id.as_str()]);
            if pair[0].index >= pair[1].index || key(&pair[0]) > key(&pair[1]) {
                return Err(format!(
                    "I4: batch committed out of order at index {}",
                    pair[1].index
                ));
            }
        }
    }
    let mut max_ts = i64::MIN;
    let mut ooo = 0;
    for e in &committed {
        if e.timestamp < max_ts {
            ooo += 1;
        }
        max_ts = max_ts.max(e.timestamp);
    }
    if w.metrics.get(Metric::OutOfOrder) != ooo {
        return Err(format!(
            "I4: {ooo} out-of-order events but the metric says {}",
            w.metrics.get(Metric::OutOfOrder)
        ));
    }
    // I6: terminal with every source event at or below final_index.
    if head.status != Status::Succeeded || head.final_index != Some(head.last_index) {
        return Err(format!(
            "I6: head is {:?} with final_index {:?}",
            head.status, head.final_index
        ));
    }
    // I5: every client printed 1..=final_index exactly once, in order, matching the store.
    if clients.len() != s.clients {
        return Err(format!(
            "I5: {} of {} clients finished",
            clients.len(),
            s.clients
        ));
    }
    for (printed, code) in clients {
        if printed != &committed {
            let got: Vec<u64> = printed.iter().map(|e| e.index).collect();
            return Err(format!(
                "I5: a client printed {got:?}, expected 1..={}",
                head.last_index
            ));
        }
        if *code != 0 {
            return Err(format!("I6: a client exited {code}, expected 0"));
        }
    }
    Ok(())
}

/// Totals over the schedules run by this process, to prove the hard paths are exercised.
static COVERAGE: Mutex<[u64; 6]> = Mutex::new([0; 6]);

fn record_coverage(w: &World, polls: u64) {
    let mut c = COVERAGE.lock().unwrap();
    c[0] += polls;
    c[1] += w.metrics.get(Metric::DuplicatesDropped);
    c[2] += w.metrics.get(Metric::EventsReconciled);
    c[3] += w.metrics.get(Metric::TransactionRetries);
    c[4] += w.metrics.get(Metric::OutOfOrder);
    c[5] += w.metrics.get(Metric::PushesSent);
}

fn futures_block<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

fn cases() -> u32 {
    std::env::var("INTERLEAVING_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_schedule_keeps_the_invariants(s in scenario()) {
        if let Err(violation) = run_scenario(&s, Break::None) {
            prop_assert!(false, "seed {}: {violation}\n{s:?}", s.seed);
        }
    }
}

/// The checks are only worth something if they catch a broken engine.
fn finds_violation(brk: Break) -> Option<String> {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for _ in 0..2_000 {
        let s = scenario().new_tree(&mut runner).unwrap().current();
        let s = Scenario {
            dup: s.dup.max(30),
            appenders: s.appenders.max(4),
            events: s.events.max(20),
            ..s
        };
        if let Err(v) = run_scenario(&s, brk) {
            return Some(format!("seed {}: {v}", s.seed));
        }
    }
    None
}

#[test]
fn interleavings_catch_a_missing_idempotency_check() {
    let found = finds_violation(Break::Idempotency);
    assert!(
        found.is_some(),
        "no schedule noticed duplicates being committed"
    );
    eprintln!("broken idempotency caught: {}", found.unwrap());
}

#[test]
fn interleavings_catch_a_missing_version_condition() {
    let found = finds_violation(Break::VersionCheck);
    assert!(
        found.is_some(),
        "no schedule noticed lost or overwritten indexes"
    );
    eprintln!("broken version check caught: {}", found.unwrap());
}

#[test]
fn schedules_exercise_every_hard_path() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let before = *COVERAGE.lock().unwrap();
    for _ in 0..300 {
        let s = scenario().new_tree(&mut runner).unwrap().current();
        run_scenario(&s, Break::None).unwrap();
    }
    let after = *COVERAGE.lock().unwrap();
    let d: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    eprintln!(
        "300 schedules: {} polls, {} duplicates dropped, {} events recovered by reconciliation, \
         {} transaction retries, {} out-of-order events, {} pushes",
        d[0], d[1], d[2], d[3], d[4], d[5]
    );
    assert!(d[1] > 0, "no duplicate was ever delivered");
    assert!(d[2] > 0, "reconciliation never recovered a dropped batch");
    assert!(d[3] > 0, "concurrent appenders never conflicted");
    assert!(d[4] > 0, "no out-of-order arrival was seen");
    assert!(d[5] > 0, "nothing was ever pushed");
}

#[test]
fn a_fixed_heavy_schedule_passes() {
    let s = Scenario {
        seed: 42,
        events: 300,
        batch: 7,
        appenders: 8,
        dup: 40,
        drop: 10,
        reorder: 50,
        page: 9,
        empty_pages: true,
        max_commit: 5,
        clients: 3,
        push_loss: 30,
        lazy_reader: true,
    };
    run_scenario(&s, Break::None).unwrap();
}
