// The page: `/` lists recent executions, `/executions/{id}` follows one. The API key is asked
// once and kept in this browser (localStorage); it is only ever sent in the `X-API-Key` header
// to this origin, never put in a URL.

import { Follow, apiGet, messageOf } from "./follow.js";
import { LogView, parseLineHash } from "./view.js";

const KEY = "runvoy.apiKey";
const $ = (id) => document.getElementById(id);

function storedKey() {
  try {
    return localStorage.getItem(KEY) || "";
  } catch {
    return "";
  }
}

/** Shows the key form and resolves with what was entered (kept for next time). */
function askKey(reason) {
  $("key").hidden = false;
  if (reason) $("key-reason").textContent = reason;
  const input = $("key-input");
  input.value = "";
  input.focus();
  return new Promise((resolve) => {
    $("key-form").addEventListener(
      "submit",
      (ev) => {
        ev.preventDefault();
        const key = input.value.trim();
        try {
          localStorage.setItem(KEY, key);
        } catch {
          // private mode: the key lasts for this page only
        }
        $("key").hidden = true;
        resolve(key);
      },
      { once: true },
    );
  });
}

function showError(text) {
  const el = $("error");
  el.textContent = text;
  el.hidden = !text;
}

const refused = (e) => e && (e.status === 401 || e.status === 403);

async function listPage() {
  $("title").textContent = "executions";
  $("open-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const id = $("open-input").value.trim();
    if (id) location.assign(`/executions/${encodeURIComponent(id)}`);
  });
  let key = storedKey() || (await askKey());
  $("forget").hidden = false;
  $("list").hidden = false;
  for (;;) {
    try {
      const body = await apiGet("/api/v1/executions?limit=100", key);
      fillList(body);
      showError("");
      return;
    } catch (e) {
      if (!refused(e)) {
        showError(e.message);
        return;
      }
      key = await askKey(`${e.message} Enter a key this stack accepts.`);
    }
  }
}

function fillList(body) {
  const rows = (body.executions || []).map((x) => {
    const tr = document.createElement("tr");
    const a = document.createElement("a");
    a.href = `/executions/${encodeURIComponent(x.execution_id)}`;
    a.textContent = x.execution_id;
    const cells = [a, x.status, x.exit_code ?? "", new Date(x.created_at).toLocaleString(), x.final_index ?? ""];
    for (const c of cells) {
      const td = document.createElement("td");
      if (c instanceof Node) td.appendChild(c);
      else td.textContent = String(c);
      tr.appendChild(td);
    }
    return tr;
  });
  $("executions").tBodies[0].replaceChildren(...rows);
  $("list-note").textContent = rows.length
    ? `The ${rows.length} most recent executions (newest first).`
    : "No executions in the retention period yet.";
}

async function viewerPage(id) {
  document.title = `${id} · runvoy logs`;
  $("title").textContent = id;
  $("viewer").hidden = false;
  $("tools").hidden = false;
  $("forget").hidden = false;
  const view = new LogView($("log"));
  const followButton = $("follow");
  view.onchange = () => followButton.setAttribute("aria-pressed", String(view.following));
  followButton.addEventListener("click", () => view.follow());
  const applyHash = () => {
    const range = parseLineHash(location.hash);
    if (range) view.show(range[0], range[1]);
  };
  applyHash();
  window.addEventListener("hashchange", applyHash);
  $("log").addEventListener("click", (ev) => {
    const a = ev.target.closest && ev.target.closest("a.ln");
    if (!a || !ev.shiftKey || !view.highlight) return;
    ev.preventDefault();
    const n = Number(a.textContent);
    const from = Math.min(view.highlight[0], n);
    const to = Math.max(view.highlight[0], n);
    history.replaceState(null, "", `#L${from}-L${to}`);
    view.show(from, to);
  });
  const search = $("search");
  search.addEventListener("keydown", (ev) => {
    if (ev.key !== "Enter") return;
    ev.preventDefault();
    const n = view.find(search.value, ev.shiftKey);
    $("found").textContent = n ? `line ${n}` : "no match";
  });
  $("download").addEventListener("click", () => {
    const url = URL.createObjectURL(view.blob());
    const a = document.createElement("a");
    a.href = url;
    a.download = `${id}.log`;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  });

  const badge = $("badge");
  const sink = {
    lines(events) {
      view.append(events.map(messageOf));
      document.body.dataset.last = String(view.count);
    },
    state(s) {
      document.body.dataset.connection = s.connection;
      document.body.dataset.connects = String(s.connects);
      $("connection").textContent = `${view.count.toLocaleString("en-US")} lines · ${s.connection}`;
      const done = s.finalIndex !== null && s.last >= s.finalIndex;
      const status = done ? s.status : s.status === "RUNNING" || s.status === null ? "RUNNING" : s.status;
      if (!status) return;
      badge.hidden = false;
      badge.className = `badge ${status}`;
      badge.textContent = done ? `${status}${s.exitCode !== null ? ` · exit ${s.exitCode}` : ""}` : status;
      document.body.dataset.status = done ? status : "RUNNING";
      if (done && s.exitCode !== null) document.body.dataset.exit = String(s.exitCode);
    },
    notice(text) {
      $("notice").textContent = text;
    },
    fatal(e) {
      sink.error = e;
    },
  };

  let key = storedKey() || (await askKey());
  for (;;) {
    sink.error = null;
    const follow = new Follow({ id, key, since: view.count, sink });
    await follow.run();
    if (!sink.error) return;
    if (refused(sink.error)) {
      key = await askKey(`${sink.error.message} Enter a key this stack accepts.`);
      continue;
    }
    showError(sink.error.message);
    document.body.dataset.connection = "failed";
    return;
  }
}

function main() {
  $("forget").addEventListener("click", () => {
    try {
      localStorage.removeItem(KEY);
    } catch {
      // nothing kept
    }
    location.reload();
  });
  const m = /^\/executions\/([^/]+)$/.exec(location.pathname);
  let id = null;
  try {
    id = m ? decodeURIComponent(m[1]) : null;
  } catch {
    showError("This address does not name an execution (a bad %-escape); open one from the list.");
    return;
  }
  if (id) viewerPage(id);
  else listPage();
}

main();
