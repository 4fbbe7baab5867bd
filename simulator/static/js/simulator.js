// The simulator's overview (customers and every STK push, live) and the phone picker.

import { followPrompts } from "./prompt-feed.js";
import { formatKsh, formatKshWhole, msisdnFromTyped, nairobiFormatter } from "./sim-format.js";

const POLL_MS = 1000;
const MAX_ROWS = 200;
const timeFmt = nairobiFormatter({ hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
const stampFmt = nairobiFormatter({ dateStyle: "medium", timeStyle: "medium" });

// A small element builder: h("td", {className: "num"}, "text", childNode, …). Text is always text.
function h(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key in node && key !== "title") node[key] = value;
    else node.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

const picker = document.getElementById("picker-form");
if (picker) startPicker(picker);
const overview = document.getElementById("overview");
if (overview) startOverview(overview);

// ---- the phone picker ------------------------------------------------------------------------

function startPicker(picker) {
  const input = document.getElementById("phone");
  const error = document.getElementById("picker-error");
  const base = picker.dataset.phoneBase || "/simulator/phone/";
  const showError = (text) => {
    error.textContent = text;
    error.hidden = !text;
    if (text) input.setAttribute("aria-invalid", "true");
    else input.removeAttribute("aria-invalid");
  };
  input.addEventListener("input", () => {
    if (!error.hidden) showError("");
  });
  picker.addEventListener("submit", (event) => {
    event.preventDefault();
    const msisdn = msisdnFromTyped(input.value);
    if (!/[^\s-]/.test(input.value)) { // nothing typed but spaces and dashes
      showError("Enter a phone number, e.g. 0708 374 149.");
    } else if (!msisdn) {
      showError(`${input.value.trim().slice(0, 20)} is not a Safaricom number: use 07XXXXXXXX, 01XXXXXXXX or 254…`);
    } else {
      showError("");
      window.location.assign(base + msisdn);
      return;
    }
    input.focus();
  });
}

// ---- the overview ----------------------------------------------------------------------------

function startOverview(overview) {
  const api = overview.dataset.api || "/simulator/api";
  const phoneBase = overview.dataset.phoneBase || "/simulator/phone/";
  const pushesBody = document.querySelector("#pushes tbody");
  const pushesEmpty = pushesBody.querySelector("tr.empty");
  const pushesMore = document.getElementById("pushes-more");
  const subscribersBody = document.querySelector("#subscribers tbody");
  const liveStatus = document.getElementById("live-status");

  const phoneLink = (msisdn) => h("a", { href: phoneBase + encodeURIComponent(msisdn) }, h("code", {}, msisdn));

  // Customers ----------------------------------------------------------------------------------

  let subscribersLoading = false;
  let subscribersAgain = false;

  async function loadSubscribers() {
    if (subscribersLoading) {
      subscribersAgain = true;
      return;
    }
    subscribersLoading = true;
    try {
      const resp = await fetch(`${api}/subscribers`, { cache: "no-store", headers: { Accept: "application/json" } });
      if (resp.ok) renderSubscribers(await resp.json());
    } catch (err) {
      // The feed reports connection trouble; the last list stays.
    } finally {
      subscribersLoading = false;
      if (subscribersAgain) {
        subscribersAgain = false;
        loadSubscribers();
      }
    }
  }

  function renderSubscribers(list) {
    if (!Array.isArray(list)) return;
    const rows = list.map((s) => h("tr", { dataset: { msisdn: s.msisdn } },
      h("td", { "data-label": "Name" }, s.name),
      h("td", { "data-label": "Phone" }, phoneLink(s.msisdn)),
      h("td", { className: "num", "data-label": "Balance" }, formatKsh(s.balance))));
    if (rows.length === 0) {
      rows.push(h("tr", { className: "empty" }, h("td", { colSpan: 3 }, "No customers yet: they appear with their first STK push.")));
    }
    subscribersBody.replaceChildren(...rows);
  }

  // Pushes -------------------------------------------------------------------------------------

  const rows = new Map(); // checkoutRequestId -> {row, signature, secondsNode}
  let lastStates = "";

  function signature(prompt) {
    return JSON.stringify(prompt, (key, value) => (key === "secondsLeft" ? undefined : value));
  }

  function stateCell(prompt, entry) {
    const cell = h("td", { className: "state", "data-label": "State" });
    if (prompt.state === "open") {
      const seconds = h("span", { className: "seconds-left" }, `${Math.ceil(prompt.secondsLeft)} s left`);
      entry.secondsNode = seconds;
      cell.append(
        h("span", { className: "badge badge-open" }, "open"), " ", seconds,
        h("div", {}, h("a", { className: "answer-link", href: phoneBase + encodeURIComponent(prompt.msisdn) },
          "Answer on the phone →")));
    } else {
      entry.secondsNode = null;
      const ok = String(prompt.resultCode) === "0";
      cell.append(
        h("span", { className: `badge ${ok ? "badge-ok" : "badge-failed"}` }, ok ? "paid" : "failed"), " ",
        h("span", { className: "state-name" }, prompt.state),
        h("div", { className: "result" }, "ResultCode ", h("code", {}, String(prompt.resultCode)), " ",
          h("span", { className: "result-desc" }, prompt.resultDesc || "")));
    }
    return cell;
  }

  function callbackView(callback) {
    const ok = typeof callback.status === "number" && callback.status >= 200 && callback.status < 300;
    let outcome;
    if (callback.error) outcome = h("span", { className: "badge badge-failed", title: callback.error }, callback.error);
    else if (callback.status !== null && callback.status !== undefined) {
      outcome = h("span", { className: `badge ${ok ? "badge-ok" : "badge-failed"}` }, `HTTP ${callback.status}`);
    } else outcome = h("span", { className: "badge" }, "no answer");
    const duration = typeof callback.durationMs === "number" ? `${callback.durationMs} ms` : "";
    const sent = typeof callback.at === "number" ? timeFmt.format(new Date(callback.at * 1000)) : "";
    const attempt = callback.attempt > 1 ? `attempt ${callback.attempt}` : "";
    const resend = callback.journalId === null || callback.journalId === undefined ? null
      : h("button", { type: "button", className: "resend", dataset: { journalId: String(callback.journalId) },
        title: "POST this callback body to the URL again" }, "Resend");
    return h("div", { className: "callback" },
      h("div", { className: "callback-line" }, outcome, " ",
        h("span", { className: "callback-ms" }, [sent, duration, attempt].filter(Boolean).join(" · ")), resend),
      h("code", { className: "callback-url" }, callback.url),
      h("details", {},
        h("summary", {}, "JSON body"),
        h("pre", {}, JSON.stringify(callback.body, null, 2))));
  }

  function callbacksCell(prompt, oldCell) {
    const cell = h("td", { className: "callbacks", "data-label": "Callbacks" });
    const callbacks = Array.isArray(prompt.callbacks) ? prompt.callbacks : [];
    if (callbacks.length === 0) {
      cell.append(h("span", { className: "muted" }, prompt.state === "open" ? "—" : "none yet"));
      return cell;
    }
    const wasOpen = oldCell ? [...oldCell.querySelectorAll("details")].map((d) => d.open) : [];
    callbacks.forEach((callback, i) => {
      const view = callbackView(callback);
      if (wasOpen[i]) view.querySelector("details").open = true;
      cell.append(view);
    });
    return cell;
  }

  function fillRow(entry, prompt) {
    const { row } = entry;
    const created = new Date(prompt.createdAt * 1000);
    const cells = [
      h("td", { className: "when", "data-label": "Time" },
        h("time", { dateTime: created.toISOString(), title: stampFmt.format(created) }, timeFmt.format(created)),
        h("code", { className: "cid" }, prompt.checkoutRequestId)),
      h("td", { "data-label": "Phone" }, phoneLink(prompt.msisdn),
        prompt.scenario ? h("div", { className: "muted small" }, prompt.scenario) : null),
      h("td", { className: "num", "data-label": "Amount" }, formatKshWhole(prompt.amount)),
      h("td", { "data-label": "Account" }, prompt.accountReference,
        prompt.description ? h("div", { className: "muted small" }, prompt.description) : null),
      stateCell(prompt, entry),
      h("td", { "data-label": "Receipt" }, prompt.receipt ? h("code", { className: "receipt" }, prompt.receipt) : h("span", { className: "muted" }, "—")),
      callbacksCell(prompt, row.querySelector("td.callbacks")),
    ];
    row.replaceChildren(...cells);
    row.className = prompt.state === "open" ? "is-open" : (String(prompt.resultCode) === "0" ? "is-paid" : "is-failed");
    row.dataset.state = prompt.state;
    row.dataset.resultCode = prompt.resultCode === null ? "" : String(prompt.resultCode);
  }

  function renderPushes(prompts) {
    if (!Array.isArray(prompts)) return;
    const shown = prompts.slice(0, MAX_ROWS);
    const keep = new Set();
    shown.forEach((prompt, index) => {
      const id = prompt.checkoutRequestId;
      keep.add(id);
      let entry = rows.get(id);
      if (!entry) {
        entry = { row: h("tr", { dataset: { checkoutRequestId: id } }), signature: "", secondsNode: null };
        rows.set(id, entry);
      }
      const sig = signature(prompt);
      if (sig !== entry.signature) {
        fillRow(entry, prompt);
        entry.signature = sig;
      } else if (entry.secondsNode) {
        entry.secondsNode.textContent = `${Math.ceil(prompt.secondsLeft)} s left`;
      }
      const at = pushesBody.children[index];
      if (at !== entry.row) pushesBody.insertBefore(entry.row, at || null);
    });
    for (const [id, entry] of rows) {
      if (!keep.has(id)) {
        entry.row.remove();
        rows.delete(id);
      }
    }
    if (shown.length === 0) pushesBody.append(pushesEmpty);
    else pushesEmpty.remove();
    pushesMore.hidden = prompts.length <= MAX_ROWS;
    pushesMore.textContent = `Showing the newest ${MAX_ROWS} of ${prompts.length} pushes.`;

    // New pushes add customers; settled ones change balances.
    const states = prompts.map((p) => `${p.checkoutRequestId}:${p.state}`).join(",");
    if (states !== lastStates) {
      lastStates = states;
      loadSubscribers();
    }
  }

  // Resend a callback from the simulator's journal; the new attempt arrives through the feed.
  pushesBody.addEventListener("click", async (event) => {
    const button = event.target.closest("button.resend");
    if (!button || button.disabled) return;
    button.disabled = true;
    button.textContent = "Sending…";
    try {
      const resp = await fetch(`${api}/callbacks/${encodeURIComponent(button.dataset.journalId)}/resend`,
        { method: "POST", headers: { Accept: "application/json" } });
      button.textContent = resp.ok ? "Queued" : "Failed";
    } catch (err) {
      button.textContent = "Failed";
    }
    if (button.textContent === "Failed") button.disabled = false;
  });

  // ---- the journal: polled (it changes on every request, which the prompt feed does not cover) ----

  const journalBody = document.querySelector("#journal tbody");
  let journalLatest = -1;

  function pretty(value) {
    return typeof value === "string" ? value : JSON.stringify(value, null, 2);
  }

  function journalRow(entry) {
    const bodies = h("td", { dataset: { label: "Bodies" } });
    for (const [label, value] of [["request", entry.requestBody], ["response", entry.responseBody]]) {
      if (value === null || value === undefined) continue;
      bodies.append(h("details", {}, h("summary", {}, label), h("pre", {}, pretty(value))));
    }
    const status = entry.status === null ? (entry.error || "no answer") : entry.status;
    return h("tr", { dataset: { journalId: String(entry.id), kind: entry.kind } },
      h("td", { dataset: { label: "Time" } }, timeFmt.format(new Date(entry.at * 1000))),
      h("td", { dataset: { label: "Kind" } }, entry.kind === "callback" ? `callback #${entry.attempt}` : "request"),
      h("td", { dataset: { label: "Request" } }, h("code", {}, `${entry.method} ${entry.url}`)),
      h("td", { className: "num", dataset: { label: "Status" } }, String(status)),
      h("td", { className: "num", dataset: { label: "ms" } }, entry.durationMs === null ? "" : String(entry.durationMs)),
      bodies);
  }

  async function refreshJournal() {
    try {
      const resp = await fetch(`${api}/journal?limit=100`, { cache: "no-store", headers: { Accept: "application/json" } });
      if (!resp.ok) return;
      const entries = await resp.json();
      const newest = entries.length ? entries[0].id : 0;
      if (newest === journalLatest) return; // nothing new: leave open <details> alone
      journalLatest = newest;
      journalBody.replaceChildren(...(entries.length ? entries.map(journalRow)
        : [h("tr", { className: "empty" }, h("td", { colSpan: 6 }, "Nothing yet."))]));
    } catch (err) {
      // the live status above already says when the simulator cannot be reached
    }
  }

  if (journalBody) {
    refreshJournal();
    window.setInterval(refreshJournal, 2000);
  }

  // The feed (prompt-feed.js): server-sent events, polling while the stream is down --------------

  followPrompts({
    streamUrl: `${api}/events`,
    pollUrl: `${api}/prompts`,
    pollMs: POLL_MS,
    onPrompts: renderPushes,
    onStatus: (state) => {
      liveStatus.textContent = state;
      liveStatus.classList.toggle("down", state === "offline");
    },
  });
}
