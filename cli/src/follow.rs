//! `runvoy logs`: the client algorithm of spec §7. Subscribe first (WebSocket from the last
//! printed index), then catch up over HTTP; print only `last + 1`; fill gaps over HTTP; poll
//! when silent; reconnect with exponential backoff and jitter; exit once `final_index` is
//! printed. What to print is decided by [`Follower`], when to poll, back off and reconnect by
//! [`Pacer`] (both in `runvoy_core::client`); this file does the I/O.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use runvoy_core::client::Follower;
use runvoy_core::client::pacing::{PAGE_EVENTS, Pacer, Schedule, guess_after};
use runvoy_core::wire::{ClientMessage, ServerMessage};
use tokio_tungstenite::tungstenite::Message;

use crate::error::CliError;
use crate::http::{ApiClient, Page, Start};
use crate::notice::Notices;
use crate::output::Printer;
use crate::when::show;

/// The waits of spec §7.2.
const SCHEDULE: Schedule = Schedule::SPEC;
/// While the handshake runs (on the worker thread), the client polls this often.
const CONNECT_POLL: Duration = Duration::from_secs(1);
/// While waiting or retrying, a word on stderr this often, terminal or not.
const SAY_EVERY: Duration = Duration::from_secs(60);

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct Follow<'a> {
    pub client: &'a ApiClient,
    pub id: &'a str,
    pub printer: &'a mut Printer,
    pub notices: Notices,
    follower: Follower,
    websocket_url: Option<String>,
    /// When to poll in silence, and how long to wait before the next handshake.
    pacer: Pacer,
    /// When the last page carrying a WebSocket URL (and its token) arrived.
    url_received: Option<Instant>,
    /// When the last HTTP catch-up ended.
    polled: Option<Instant>,
    /// Whether the API has answered once (after that, lost connections are retried).
    answered: bool,
    /// Where the first page starts, when not after `since` (`--tail`, `--since`).
    start: Option<Start>,
    /// How long to wait for an execution that does not exist yet.
    wait: Duration,
    /// How long to retry a failing API before giving up.
    give_up_after: Duration,
    /// When a word was last said on stderr about a wait or a retry.
    said: Option<Instant>,
    /// Whether a connection was lost since the last one opened (to say "resumed").
    lost: bool,
    /// Since when requests have been failing in a row.
    failing_since: Option<Instant>,
}

/// Why the streaming loop stopped.
enum Next {
    Done,
    Reconnect,
}

impl<'a> Follow<'a> {
    pub fn new(
        client: &'a ApiClient,
        id: &'a str,
        printer: &'a mut Printer,
        notices: Notices,
        since: u64,
    ) -> Follow<'a> {
        Follow {
            client,
            id,
            printer,
            notices,
            follower: Follower::new(since),
            websocket_url: None,
            pacer: Pacer::new(SCHEDULE),
            url_received: None,
            polled: None,
            answered: false,
            start: None,
            wait: Duration::ZERO,
            give_up_after: SCHEDULE.give_up_after,
            said: None,
            lost: false,
            failing_since: None,
        }
    }

    /// Starts at the last N lines or at a time instead of after `since`.
    pub fn starting(mut self, start: Option<Start>) -> Self {
        self.start = start;
        self
    }

    /// Waits up to `wait` for an execution that does not exist yet.
    pub fn waiting(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// `--no-follow`: prints what is committed now, then exits 0.
    pub async fn once(mut self) -> Result<i32, CliError> {
        self.give_up_after = SCHEDULE.give_up_after_once;
        self.begin().await?;
        Ok(0)
    }

    /// Follows until the execution is terminal and everything up to `final_index` is printed;
    /// returns the execution's exit code.
    pub async fn run(mut self) -> Result<i32, CliError> {
        // The first contact decides: a bad key or no server end it here; an execution that
        // does not exist yet is waited for (`--wait`).
        self.begin().await?;
        let code = self.follow().await?;
        self.notices.info(&format!(
            "execution {} ended with exit code {code} after line {}",
            self.id,
            self.follower.last()
        ));
        Ok(code)
    }

    /// The first page: waits for the execution to exist (up to `--wait`), finds where to start
    /// (`--tail`, `--since`), then catches up.
    async fn begin(&mut self) -> Result<(), CliError> {
        let started = Instant::now();
        let mut waiting = false;
        loop {
            match self.first_pages().await {
                Err(CliError::NotFound(id)) if started.elapsed() < self.wait => {
                    if !waiting {
                        waiting = true;
                        self.notices.info(&format!(
                            "waiting for execution {id} to start (up to {})",
                            show(self.wait)
                        ));
                        self.said = Some(Instant::now());
                    } else if self.said.is_some_and(|t| t.elapsed() >= SAY_EVERY) {
                        self.notices.always(&format!(
                            "still waiting for execution {id} to start ({} so far, up to {})",
                            show(started.elapsed()),
                            show(self.wait)
                        ));
                        self.said = Some(Instant::now());
                    }
                    let left = self.wait.saturating_sub(started.elapsed());
                    tokio::time::sleep(SCHEDULE.look_every.min(left)).await;
                }
                Err(e) => return Err(e),
                Ok(()) => {
                    if waiting {
                        self.notices.info(&format!("execution {} started", self.id));
                    }
                    return Ok(());
                }
            }
        }
    }

    /// Locates the start (`--tail`, `--since`: the server says where the first page begins),
    /// then pages on as usual.
    async fn first_pages(&mut self) -> Result<(), CliError> {
        let Some(start) = self.start else {
            return self.catch_up().await;
        };
        let mut since = self.follower.last();
        loop {
            let page = self.page_from(since, Some(start)).await?;
            let first = match &page {
                Page::Json(p) => p.events.first().map(|e| e.index),
                Page::Dense(p) => (!p.is_empty()).then(|| p.first_index()),
            };
            let meta = page.meta();
            let (more, last) = (meta.has_more, meta.last_index);
            match first {
                // A search that has not found the time yet answers how far it looked.
                None if matches!(start, Start::Time(_)) && more && last > since => since = last,
                _ => {
                    self.follower = Follower::new(first.map_or(last, |f| f - 1));
                    self.start = None;
                    self.absorb(page)?;
                    return if more { self.catch_up().await } else { Ok(()) };
                }
            }
        }
    }

    /// Follows after the first pages until the execution ends.
    async fn follow(&mut self) -> Result<i32, CliError> {
        let mut failures = 0u32;
        let mut failing_since: Option<Instant> = None;
        loop {
            if let Some(code) = self.follower.exit_code() {
                return Ok(code);
            }
            let attempt = async {
                let socket = self.subscribe().await?;
                // A poll just ran (while the handshake did): `resume` covers what follows it.
                if !self.follower.is_done()
                    && self
                        .pacer
                        .catch_up_after_handshake(self.polled.map(|t| t.elapsed()))
                {
                    self.catch_up().await?;
                }
                let opened = socket.is_some().then(Instant::now);
                let next = self.stream(socket).await;
                if let Some(opened) = opened {
                    // A connection the server ends at once counts as a failed handshake.
                    let lived = opened.elapsed();
                    if lived >= SCHEDULE.healthy_after || matches!(next, Ok(Next::Reconnect)) {
                        self.pacer.connection_ended(lived);
                    }
                }
                next
            }
            .await;
            match attempt {
                Ok(Next::Done) => continue,
                Ok(Next::Reconnect) => {
                    failures = 0;
                    failing_since = None;
                }
                Err(e) if e.is_transient(self.answered) => {
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > self.give_up_after {
                        return Err(e);
                    }
                    failures += 1;
                    self.wait_to_retry(&e, failures).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Says what failed and waits before retry number `failures` (backoff with jitter): on a
    /// terminal each time; off a terminal too once it has failed for a minute, then once a
    /// minute — a follower never goes quiet for long without a word.
    async fn wait_to_retry(&mut self, e: &CliError, failures: u32) {
        let wait = SCHEDULE.retry_backoff(failures, rand::random());
        let msg = format!(
            "{e}; retrying in {:.1}s (resuming after line {})",
            wait.as_secs_f64(),
            self.follower.last()
        );
        let since = *self.failing_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= SAY_EVERY && self.said.is_none_or(|t| t.elapsed() >= SAY_EVERY) {
            self.notices
                .always(&format!("{msg}; failing for {}", show(since.elapsed())));
            self.said = Some(Instant::now());
        } else {
            self.notices.info(&msg);
        }
        self.lost = true;
        tokio::time::sleep(wait).await;
    }

    /// Opens the WebSocket from the last printed index; `None` when it cannot (the loop then
    /// polls and tries again later). The handshake runs on the worker thread while lines keep
    /// coming over HTTP: `$connect` is a function invocation (a cold start, a store write) and
    /// may take seconds, and nothing written meanwhile waits for it.
    ///
    /// After failed handshakes in a row (refused, timed out, or a connection the server ended
    /// at once) the next one waits longer, polling meanwhile: 1–2 s more after the first,
    /// doubling up to 15–30 s, so clients of a failing `$connect` do not each invoke it every
    /// two seconds.
    async fn subscribe(&mut self) -> Result<Option<Socket>, CliError> {
        if self.websocket_url.is_none() {
            return Ok(None);
        }
        let due = Instant::now() + self.pacer.handshake_delay(rand::random());
        loop {
            let left = due.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            tokio::time::sleep(left.min(SCHEDULE.idle_poll)).await;
            if Instant::now() >= due {
                break;
            }
            self.catch_up().await?;
            if self.follower.is_done() {
                return Ok(None);
            }
        }
        // A token as old as the connection that just ended expires with it: ask for a new one.
        if !self
            .pacer
            .url_is_fresh(self.url_received.map(|t| t.elapsed()))
        {
            self.catch_up().await?;
            if self.follower.is_done() {
                return Ok(None);
            }
        }
        // The URL of the latest page: its token may have been renewed while waiting.
        let Some(url) = self.websocket_url.as_deref() else {
            return Ok(None);
        };
        let url = format!("{url}&since_index={}", self.follower.last());
        let mut connecting = Task(tokio::spawn(async move {
            tokio::time::timeout(
                SCHEDULE.connect_timeout,
                tokio_tungstenite::connect_async(url),
            )
            .await
        }));
        loop {
            tokio::select! {
                done = &mut connecting.0 => {
                    let socket = match done {
                        Ok(Ok(Ok((socket, _)))) => {
                            self.resumed();
                            Some(socket)
                        }
                        Ok(Ok(Err(e))) => {
                            self.notices.info(&format!("WebSocket unavailable ({e}); polling"));
                            None
                        }
                        Ok(Err(_)) => {
                            self.notices.info("WebSocket connect timed out; polling");
                            None
                        }
                        Err(e) => {
                            self.notices.info(&format!("WebSocket connect failed ({e}); polling"));
                            None
                        }
                    };
                    if socket.is_none() {
                        self.pacer.handshake_failed();
                    }
                    return Ok(socket);
                }
                _ = tokio::time::sleep(CONNECT_POLL) => {
                    self.catch_up().await?;
                    if self.follower.is_done() {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Pages over HTTP from the last printed index until nothing more is committed. While one
    /// page is printed the next two are already requested on the runtime's worker thread: the
    /// one from this page's `last_index`, and the one after it, guessed to hold as many lines as
    /// this one (pages are full unless bounded in bytes; no guess past a known `final_index`).
    /// The server's reads, the transfers and the decoding overlap with writing to stdout. A
    /// prefetched page is used only when it starts where printing ended; a guess that a page
    /// proves wrong is dropped and guessing stops for this catch-up, so pages of uneven size
    /// waste at most one request. A failed prefetch ends prefetching for this catch-up; the
    /// page is asked again through [`Follow::page`] after a backoff.
    async fn catch_up(&mut self) -> Result<(), CliError> {
        let mut ahead: VecDeque<Prefetch> = VecDeque::new();
        let mut guessing = true;
        let mut prefetching = true;
        loop {
            let page = match ahead.pop_front() {
                Some(p) if p.since == self.follower.last() => match p.result().await {
                    Some(page) => {
                        self.answered = true;
                        page
                    }
                    None => {
                        // Throttled or failing: stop asking ahead, and back off before asking again.
                        ahead.clear();
                        prefetching = false;
                        tokio::time::sleep(SCHEDULE.retry_backoff(1, rand::random())).await;
                        self.page().await?
                    }
                },
                _ => {
                    ahead.clear();
                    self.page().await?
                }
            };
            let more = page.meta().has_more;
            if more && prefetching {
                let next = page.meta().last_index;
                // What was asked ahead must start here; anything else was a wrong guess.
                let asked = ahead.len();
                ahead.retain(|p| p.since == next);
                if ahead.len() < asked {
                    guessing = false;
                }
                if ahead.is_empty() {
                    ahead.push_back(Prefetch::start(self.client, self.id, next));
                }
                if guessing
                    && let Some(after) = guess_after(next, page.len(), page.meta().final_index)
                {
                    ahead.push_back(Prefetch::start(self.client, self.id, after));
                }
            } else {
                ahead.clear();
            }
            self.absorb(page)?;
            if !more {
                self.polled = Some(Instant::now());
                return Ok(());
            }
        }
    }

    /// One page after the last printed line, retrying transient failures with backoff (for
    /// up to the schedule's `give_up_after`, `give_up_after_once` with `--no-follow`).
    async fn page(&mut self) -> Result<Page, CliError> {
        self.page_from(self.follower.last(), None).await
    }

    async fn page_from(&mut self, since: u64, start: Option<Start>) -> Result<Page, CliError> {
        let mut failures = 0u32;
        let started = Instant::now();
        loop {
            match self
                .client
                .logs_from(self.id, since, PAGE_EVENTS, start)
                .await
            {
                Ok(page) => {
                    self.answered = true;
                    self.resumed();
                    return Ok(page);
                }
                Err(e)
                    if e.is_transient(self.answered) && started.elapsed() < self.give_up_after =>
                {
                    failures += 1;
                    self.wait_to_retry(&e, failures).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// After a lost connection or failed requests: says where printing goes on.
    fn resumed(&mut self) {
        self.failing_since = None;
        if std::mem::take(&mut self.lost) {
            self.notices
                .info(&format!("resumed after line {}", self.follower.last()));
        }
    }

    fn absorb(&mut self, page: Page) -> Result<(), CliError> {
        let last = self.follower.last();
        let skipped = || CliError::Protocol(format!("a page skipped lines after line {last}"));
        let page = match page {
            Page::Json(mut p) => {
                let accepted = self.follower.accept(std::mem::take(&mut p.events));
                if accepted.gap {
                    return Err(skipped());
                }
                self.printer.print(&accepted.print)?;
                p
            }
            Page::Dense(p) => {
                let run = self.follower.accept_run(p.first_index(), p.len());
                if run.gap {
                    return Err(skipped());
                }
                self.printer.print_dense(&p, run.skip, run.take)?;
                let (meta, buf) = p.into_parts();
                self.client.recycle(buf);
                meta
            }
        };
        if let Some(final_index) = page.final_index {
            self.follower
                .terminal(page.status, page.exit_code, final_index);
        }
        if page.websocket_url.is_some() {
            self.url_received = Some(Instant::now());
            self.websocket_url = page.websocket_url;
        }
        Ok(())
    }

    async fn stream(&mut self, mut socket: Option<Socket>) -> Result<Next, CliError> {
        if let Some(s) = socket.as_mut()
            && !self.follower.is_done()
        {
            let resume = ClientMessage::Resume {
                since_index: self.follower.last(),
            };
            let text = serde_json::to_string(&resume).expect("client messages serialize");
            if s.send(Message::Text(text.into())).await.is_err() {
                return Ok(Next::Reconnect);
            }
        }
        loop {
            if self.follower.is_done() {
                if let Some(mut s) = socket {
                    let _ = s.close(None).await;
                }
                return Ok(Next::Done);
            }
            let Some(s) = socket.as_mut() else {
                // No socket: poll once, then try to subscribe again.
                tokio::time::sleep(self.pacer.idle_wait()).await;
                let before = self.follower.last();
                self.catch_up().await?;
                self.pacer.polled_in_silence(self.follower.last() > before);
                return Ok(Next::Reconnect);
            };
            let next = tokio::time::timeout(self.pacer.idle_wait(), s.next()).await;
            match next {
                Err(_) => {
                    // Silent for a while: poll once, and keep the connection from idling out.
                    // When the poll found lines the pushes did not bring, tell the server where
                    // this client is, so its pushes continue from there.
                    let before = self.follower.last();
                    self.catch_up().await?;
                    let found = self.follower.last() > before;
                    self.pacer.polled_in_silence(found);
                    let msg = if found {
                        ClientMessage::Resume {
                            since_index: self.follower.last(),
                        }
                    } else {
                        ClientMessage::Ping
                    };
                    let text = serde_json::to_string(&msg).expect("client messages serialize");
                    if s.send(Message::Text(text.into())).await.is_err() {
                        return Ok(Next::Reconnect);
                    }
                }
                Ok(Some(Ok(Message::Text(text)))) => {
                    if self.on_message(text.as_str()).await? {
                        return Ok(Next::Reconnect);
                    }
                }
                Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => {
                    self.notices.info(&format!(
                        "connection closed; reconnecting after line {}",
                        self.follower.last()
                    ));
                    self.lost = true;
                    return Ok(Next::Reconnect);
                }
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// Handles one server message; `true` when the connection must be replaced.
    async fn on_message(&mut self, text: &str) -> Result<bool, CliError> {
        let msg: ServerMessage = match serde_json::from_str(text) {
            Ok(m) => m,
            Err(_) => return self.catch_up().await.map(|()| false),
        };
        match msg {
            ServerMessage::Logs { events, .. } => {
                self.pacer.pushed();
                let accepted = self.follower.accept(events);
                self.printer.print(&accepted.print)?;
                if accepted.gap {
                    self.catch_up().await?;
                }
            }
            ServerMessage::Status {
                status,
                exit_code,
                final_index,
                ..
            } => {
                self.follower.terminal(status, exit_code, final_index);
                if !self.follower.is_done() {
                    self.catch_up().await?;
                }
            }
            ServerMessage::Error { code, error } => {
                self.notices.info(&format!("server: {error}"));
                if code == runvoy_core::ws::NOT_CONNECTED {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }
}

/// The next page, requested ahead; aborted when dropped unused.
struct Prefetch {
    since: u64,
    task: Task<Result<Page, CliError>>,
}

impl Prefetch {
    fn start(client: &ApiClient, id: &str, since: u64) -> Prefetch {
        let (client, id) = (client.clone(), id.to_string());
        Prefetch {
            since,
            task: Task(tokio::spawn(async move {
                client.logs(&id, since, PAGE_EVENTS).await
            })),
        }
    }

    /// The page, or `None` when it failed (the caller asks again and reports what it gets).
    async fn result(mut self) -> Option<Page> {
        (&mut self.task.0).await.ok()?.ok()
    }
}

/// A task on the worker thread that is aborted when its handle is dropped (an unused
/// prefetch, a handshake abandoned because the execution ended or an error ended the run).
struct Task<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for Task<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
