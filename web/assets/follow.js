// The client algorithm of spec §7, as the CLI runs it (cli/src/follow.rs): subscribe first (the
// WebSocket from the last shown index), then catch up over HTTP; show only `last + 1`; fill gaps
// over HTTP; poll when silent; reconnect with exponential backoff and jitter; stop once
// `final_index` is shown. The waits are spec §7.2's, the numbers of
// runvoy_core::client::pacing::Schedule::SPEC (web/tests/follow_schedule.rs pins them); where the
// page differs from the CLI, spec §7.2 says so.

/** Events per HTTP page: JSON parsed on the page's one thread, so smaller than the CLI's dense
 * pages (the API allows up to 100,000; pages are also bounded in bytes by the server). */
const PAGE = 10000;
/** Silence after which the client polls once (and pings the socket); each silent poll doubles
 * the wait, up to IDLE_POLL_MAX_MS (a hidden tab: IDLE_POLL_HIDDEN_MS, the page's own). */
const IDLE_POLL_MS = 2000;
const IDLE_POLL_MAX_MS = 30000;
const IDLE_POLL_HIDDEN_MS = 120000;
/** Backoff after a failed request: a quarter of the cap to the cap, 200 ms × 2^n up to 5 s. */
const RETRY_BASE_MS = 200;
const RETRY_MAX_MS = 5000;
/** Wait before the next handshake after failed ones: the upper half of 2 s × 2^(n−1) up to 30 s,
 * polling meanwhile. */
const HANDSHAKE_BASE_MS = 2000;
const HANDSHAKE_MAX_MS = 30000;
/** A connection that lived this long was healthy: its end is no failed handshake. */
const HEALTHY_MS = 10000;
/** WebSocket URLs carry a token that expires (after an hour, or when its key is retired): fetch
 * a fresh one before a handshake when it is older. */
const URL_FRESH_MS = 60000;
/** How long a WebSocket may take to open. */
const CONNECT_TIMEOUT_MS = 10000;
/** Give up after failing to reach the API for this long. */
const GIVE_UP_AFTER_MS = 600000;
/** How long the page waits for an execution that does not exist yet (an ECS task logs its first
 * line only once its container runs), looking again this often; as the CLI's `--wait`. */
const WAIT_FOR_START_MS = 300000;
const LOOK_AGAIN_MS = 2000;

/** The pure state machine of I5 (core/src/client.rs). */
export class Follower {
  constructor(since) {
    this.last = since;
    this.status = null;
    this.exitCode = null;
    this.finalIndex = null;
  }

  /** Releases the events that continue the sequence, once each; `gap` when one is missing. */
  accept(events) {
    const sorted = events.slice().sort((a, b) => a.index - b.index);
    const show = [];
    let gap = false;
    for (const e of sorted) {
      if (e.index <= this.last) continue;
      if (e.index === this.last + 1) {
        this.last = e.index;
        show.push(e);
      } else {
        gap = true;
        break;
      }
    }
    return { show, gap };
  }

  terminal(status, exitCode, finalIndex) {
    if (status === "RUNNING") return;
    this.status = status;
    this.exitCode = exitCode ?? null;
    this.finalIndex = finalIndex;
  }

  isDone() {
    return this.finalIndex !== null && this.last >= this.finalIndex;
  }
}

/** An error the page shows; `retry` when waiting and trying again may help. */
export class FollowError extends Error {
  constructor(message, { status = 0, code = "", retry = false } = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.retry = retry;
  }
}

/** The text of an event: `message`, or `message_base64` (bytes of UTF-8 text). */
export function messageOf(e) {
  if (typeof e.message === "string") return e.message;
  if (typeof e.message_base64 === "string") {
    const bin = atob(e.message_base64);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return new TextDecoder().decode(bytes);
  }
  return "";
}

/** The wait before retry number `failures` of a failed request. */
export function backoff(failures) {
  const cap = Math.min(RETRY_BASE_MS * 2 ** Math.min(failures, 5), RETRY_MAX_MS);
  return cap / 4 + Math.random() * (cap - cap / 4);
}

/** The wait before the next handshake after `failures` (≥ 1) failed ones. */
export function handshakeBackoff(failures) {
  const cap = Math.min(HANDSHAKE_BASE_MS * 2 ** Math.min(failures - 1, 4), HANDSHAKE_MAX_MS);
  return cap / 2 + Math.random() * (cap / 2);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** GET of the API with the key in a header (never in the URL). */
export async function apiGet(path, key) {
  let res;
  try {
    res = await fetch(path, {
      headers: { "X-API-Key": key, Accept: "application/json" },
      cache: "no-store",
      redirect: "error",
      credentials: "omit",
    });
  } catch (e) {
    throw new FollowError(`the API could not be reached (${e.message})`, { retry: true });
  }
  let body = null;
  try {
    body = await res.json();
  } catch {
    body = null;
  }
  if (!res.ok) {
    const sentence = body && typeof body.error === "string" ? body.error : `the API answered ${res.status}`;
    const retry = res.status === 429 || res.status >= 500;
    throw new FollowError(sentence, { status: res.status, code: body?.code ?? "", retry });
  }
  return body;
}

/**
 * Follows one execution. `sink` receives what to show:
 *   lines(events)  — contiguous, ascending, each once
 *   state({status, exitCode, finalIndex, last, connection})
 *   notice(text)   — something the reader should know (retrying, reconnecting)
 *   fatal(error)   — the page cannot go on (unknown execution, bad key)
 */
export class Follow {
  constructor({ id, key, since = 0, sink }) {
    this.id = id;
    this.key = key;
    this.sink = sink;
    this.follower = new Follower(since);
    this.websocketUrl = null;
    this.urlAt = 0;
    this.idleMs = IDLE_POLL_MS;
    this.answered = false;
    this.stopped = false;
    this.connection = "connecting";
    /** WebSocket connections opened so far. */
    this.connects = 0;
  }

  stop() {
    this.stopped = true;
    if (this.socket) this.socket.close();
  }

  async run() {
    try {
      await this.start();
      let failures = 0;
      let handshakeFailures = 0;
      while (!this.stopped && !this.follower.isDone()) {
        let socket = null;
        const opened = Date.now();
        try {
          // The URL's token must outlive the connection's start: refresh an old one first.
          if (Date.now() - this.urlAt >= URL_FRESH_MS) await this.catchUp();
          socket = await this.subscribe();
          await this.catchUp();
          await this.stream(socket);
          failures = 0;
          // A connection refused, or closed soon after it opened, counts as a failed handshake:
          // the next waits longer (polling meanwhile), so pages of a failing `$connect` do not
          // each invoke it every few seconds.
          if (Date.now() - opened >= HEALTHY_MS) {
            handshakeFailures = 0;
          } else if (!this.follower.isDone() && !this.stopped) {
            handshakeFailures += 1;
            await this.pollFor(handshakeBackoff(handshakeFailures));
          }
        } catch (e) {
          if (!(e instanceof FollowError) || !(e.retry || (this.answered && e.status === 0))) throw e;
          failures += 1;
          await this.waitToRetry(e, failures);
        } finally {
          if (socket) socket.close();
        }
      }
      this.setConnection(this.follower.isDone() ? "done" : "stopped");
    } catch (e) {
      this.setConnection("failed");
      this.sink.fatal(e);
    }
  }

  /** The first catch-up, waiting for an execution that does not exist yet. */
  async start() {
    const started = Date.now();
    for (;;) {
      try {
        await this.catchUp();
        if (this.connection === "waiting") this.sink.notice(`execution ${this.id} started`);
        return;
      } catch (e) {
        const unknown = e instanceof FollowError && e.status === 404 && !this.answered;
        if (!unknown || this.stopped || Date.now() - started > WAIT_FOR_START_MS) throw e;
        if (this.connection !== "waiting") {
          this.setConnection("waiting");
          this.sink.notice(`waiting for execution ${this.id} to start (up to 5 minutes)`);
        }
        await sleep(LOOK_AGAIN_MS);
      }
    }
  }

  /** Waits `ms`, polling at the idle interval meanwhile. */
  async pollFor(ms) {
    const until = Date.now() + ms;
    while (!this.stopped && !this.follower.isDone()) {
      const left = until - Date.now();
      if (left <= 0) return;
      await sleep(Math.min(left, IDLE_POLL_MS));
      if (Date.now() < until) await this.catchUp();
    }
  }

  async waitToRetry(e, failures) {
    const wait = backoff(failures);
    this.setConnection("retrying");
    this.sink.notice(`${e.message}; retrying in ${(wait / 1000).toFixed(1)} s (resuming after line ${this.follower.last})`);
    await sleep(wait);
  }

  setConnection(c) {
    this.connection = c;
    this.report();
  }

  report() {
    const f = this.follower;
    this.sink.state({
      status: f.status,
      exitCode: f.exitCode,
      finalIndex: f.finalIndex,
      last: f.last,
      connection: this.connection,
      connects: this.connects,
    });
  }

  logsPath() {
    return `/api/v1/executions/${encodeURIComponent(this.id)}/logs?since_index=${this.follower.last}&limit=${PAGE}`;
  }

  /** Pages over HTTP from the last shown index until nothing more is committed. */
  async catchUp() {
    for (;;) {
      const page = await this.page();
      this.absorb(page);
      if (!page.has_more) return;
    }
  }

  async page() {
    let failures = 0;
    const started = Date.now();
    for (;;) {
      try {
        const page = await apiGet(this.logsPath(), this.key);
        this.answered = true;
        return page;
      } catch (e) {
        const transient = e instanceof FollowError && (e.retry || (this.answered && e.status === 0));
        if (!transient || this.stopped || Date.now() - started > GIVE_UP_AFTER_MS) throw e;
        failures += 1;
        await this.waitToRetry(e, failures);
      }
    }
  }

  absorb(page) {
    const { show, gap } = this.follower.accept(page.events);
    if (gap) throw new FollowError(`a page after line ${this.follower.last} skipped lines`, { retry: true });
    if (show.length) this.sink.lines(show);
    if (page.final_index !== undefined && page.final_index !== null) {
      this.follower.terminal(page.status, page.exit_code, page.final_index);
    } else if (this.follower.status === null) {
      this.follower.status = page.status;
    }
    if (page.websocket_url) {
      this.websocketUrl = page.websocket_url;
      this.urlAt = Date.now();
    }
    this.report();
  }

  /** Opens the WebSocket from the last shown index; `null` when it cannot (then polls). */
  subscribe() {
    if (!this.websocketUrl) return Promise.resolve(null);
    const url = `${this.websocketUrl}&since_index=${this.follower.last}`;
    return new Promise((resolve) => {
      let ws;
      try {
        ws = new WebSocket(url);
      } catch (e) {
        this.sink.notice(`WebSocket unavailable (${e.message}); polling`);
        resolve(null);
        return;
      }
      const queue = new MessageQueue(ws);
      const timer = setTimeout(() => {
        this.sink.notice("WebSocket connect timed out; polling");
        ws.close();
        resolve(null);
      }, CONNECT_TIMEOUT_MS);
      ws.addEventListener("open", () => {
        clearTimeout(timer);
        this.socket = ws;
        this.connects += 1;
        this.setConnection("live");
        resolve(queue);
      });
      ws.addEventListener("error", () => {
        clearTimeout(timer);
        resolve(null);
      });
    });
  }

  async stream(queue) {
    if (queue) queue.send({ action: "resume", since_index: this.follower.last });
    for (;;) {
      if (this.follower.isDone() || this.stopped) {
        if (queue) queue.close();
        return;
      }
      if (!queue) {
        this.setConnection("polling");
        await sleep(this.idleWait());
        const before = this.follower.last;
        await this.catchUp();
        this.idled(this.follower.last > before);
        return;
      }
      const next = await queue.next(this.idleWait());
      if (next.kind === "idle") {
        const before = this.follower.last;
        await this.catchUp();
        const found = this.follower.last > before;
        this.idled(found);
        const msg = found ? { action: "resume", since_index: this.follower.last } : { action: "ping" };
        if (!queue.send(msg)) return;
      } else if (next.kind === "closed") {
        this.setConnection("reconnecting");
        this.sink.notice(`connection closed; reconnecting after line ${this.follower.last}`);
        return;
      } else if (await this.onMessage(next.text)) {
        queue.close();
        return;
      }
    }
  }

  /** How long to wait in silence before the next poll. */
  idleWait() {
    const hidden = typeof document !== "undefined" && document.hidden;
    return hidden ? Math.max(this.idleMs, IDLE_POLL_HIDDEN_MS) : this.idleMs;
  }

  /** After a silent poll: wait longer next time, unless it found lines. */
  idled(found) {
    this.idleMs = found ? IDLE_POLL_MS : Math.min(this.idleMs * 2, IDLE_POLL_MAX_MS);
  }

  /** One server message; `true` when the connection must be replaced. */
  async onMessage(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      await this.catchUp();
      return false;
    }
    if (msg.type === "logs" && Array.isArray(msg.events)) {
      this.idleMs = IDLE_POLL_MS;
      const { show, gap } = this.follower.accept(msg.events);
      if (show.length) this.sink.lines(show);
      this.report();
      if (gap) await this.catchUp();
    } else if (msg.type === "status") {
      this.follower.terminal(msg.status, msg.exit_code, msg.final_index);
      this.report();
      if (!this.follower.isDone()) await this.catchUp();
    } else if (msg.type === "error") {
      this.sink.notice(`server: ${msg.error}`);
      if (msg.code === "not_connected") return true;
    }
    return false;
  }
}

/** A WebSocket's messages as something to await, with a timeout. */
class MessageQueue {
  constructor(ws) {
    this.ws = ws;
    this.items = [];
    this.waiter = null;
    this.closed = false;
    ws.addEventListener("message", (ev) => this.push({ kind: "message", text: String(ev.data) }));
    ws.addEventListener("close", () => {
      this.closed = true;
      this.push({ kind: "closed" });
    });
  }

  push(item) {
    if (this.closed && item.kind === "message") return;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      w(item);
    } else {
      this.items.push(item);
    }
  }

  next(timeoutMs) {
    if (this.items.length) return Promise.resolve(this.items.shift());
    if (this.closed) return Promise.resolve({ kind: "closed" });
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiter = null;
        resolve({ kind: "idle" });
      }, timeoutMs);
      this.waiter = (item) => {
        clearTimeout(timer);
        resolve(item);
      };
    });
  }

  send(msg) {
    if (this.closed || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  close() {
    this.closed = true;
    this.items = [];
    this.ws.close();
  }
}
