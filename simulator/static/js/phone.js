// The virtual handset: shows the STK prompt for one number, sends the PIN or a cancel to the
// simulator's control API, and keeps an inbox of M-PESA messages. Live through server-sent events,
// with polling as the fallback when the stream breaks.

import { followPrompts } from "./prompt-feed.js";
import { formatKsh, formatShillings, nairobiFormatter } from "./sim-format.js";

const handset = document.getElementById("handset");
if (handset) startHandset(handset);

function startHandset(handset) {
  const msisdn = handset.dataset.msisdn;
  const api = handset.dataset.api || "/simulator/api";
  const pinLength = Number.parseInt(handset.dataset.pinLength, 10) || 0;
  const RECENT_SECONDS = 5 * 60; // on first load, settled prompts this recent still get their message
  const POLL_MS = 1000;

  const byId = (id) => document.getElementById(id);
  const el = {
    balance: byId("balance"),
    home: byId("home"),
    prompt: byId("prompt"),
    form: byId("prompt-form"),
    promptText: byId("prompt-text"),
    pin: byId("pin"),
    hint: byId("pin-hint"),
    ok: byId("pin-ok"),
    cancel: byId("pin-cancel"),
    countdown: byId("countdown"),
    timerBar: byId("timer-bar"),
    keypad: handset.querySelector(".keypad"),
    sms: byId("sms"),
    smsEmpty: byId("sms-empty"),
    feedStatus: byId("feed-status"),
  };

  const inFrame = (() => {
    try {
      return window.self !== window.top;
    } catch (err) {
      return true;
    }
  })();
  if (inFrame) document.documentElement.classList.add("in-frame");

  // ---- clock and formatting -------------------------------------------------------------------

  const timeFmt = nairobiFormatter({ hour: "2-digit", minute: "2-digit", hour12: false });
  const dateFmt = nairobiFormatter({ weekday: "long", day: "numeric", month: "long" });

  function renderClock() {
    const now = new Date();
    const time = timeFmt.format(now);
    const date = dateFmt.format(now);
    for (const node of handset.querySelectorAll("[data-clock]")) {
      const text = node.dataset.clock === "date" ? date : time;
      if (node.textContent !== text) node.textContent = text;
    }
  }
  renderClock();
  window.setInterval(renderClock, 1000);

  function setBalance(value) {
    if (typeof value !== "number" || !Number.isFinite(value)) return;
    const text = formatKsh(value);
    if (el.balance.textContent === text) return;
    el.balance.textContent = text;
    // Restart the highlight: off now, on again in the next frame (reading offsetWidth in between
    // would force a layout at once, on the main thread the embedding pay page shares).
    el.balance.classList.remove("changed");
    window.requestAnimationFrame(() => el.balance.classList.add("changed"));
  }

  let balanceRequest = 0;
  async function refreshBalance() {
    const mine = ++balanceRequest;
    try {
      const resp = await fetch(`${api}/subscribers/${encodeURIComponent(msisdn)}`,
        { cache: "no-store", headers: { Accept: "application/json" } });
      if (!resp.ok) return;
      const subscriber = await resp.json();
      if (mine === balanceRequest) setBalance(subscriber.balance);
    } catch (err) {
      // Offline for a moment: the balance from the prompt stays.
    }
  }

  // ---- messages -------------------------------------------------------------------------------

  const seen = new Set(); // CheckoutRequestIDs whose outcome has been shown (or deliberately skipped)
  let firstBatch = true;

  function messageFor(prompt) {
    switch (String(prompt.resultCode)) {
      case "0":
        return prompt.smsText || `${prompt.receipt || ""} Confirmed. Ksh${formatShillings(prompt.amount)} paid.`.trim();
      case "2001":
        return "Wrong PIN. Transaction failed.";
      case "1032":
        return "Request cancelled.";
      case "1037":
      case "1019":
        return "The payment request has expired.";
      case "1":
        return "Insufficient funds: you do not have enough money to complete this transaction.";
      default:
        return prompt.resultDesc || `The payment failed (ResultCode ${prompt.resultCode}).`;
    }
  }

  function addMessage(prompt, atSeconds) {
    const ok = String(prompt.resultCode) === "0";
    const bubble = document.createElement("article");
    bubble.className = `sms ${ok ? "sms-ok" : "sms-failed"}`;
    bubble.dataset.checkoutRequestId = prompt.checkoutRequestId;
    bubble.dataset.resultCode = String(prompt.resultCode);

    const head = document.createElement("header");
    head.className = "sms-head";
    const from = document.createElement("span");
    from.className = "sms-from";
    from.textContent = "MPESA";
    const time = document.createElement("time");
    const moment = new Date(atSeconds * 1000);
    time.dateTime = moment.toISOString();
    time.textContent = timeFmt.format(moment);
    head.append(from, time);

    const text = document.createElement("p");
    text.className = "sms-text";
    text.textContent = messageFor(prompt);

    bubble.append(head, text);
    el.sms.prepend(bubble);
    el.smsEmpty.hidden = true;
  }

  // A prompt we have just learnt is settled: its message once, and the new balance after a payment.
  function announce(prompt) {
    if (seen.has(prompt.checkoutRequestId)) return false;
    seen.add(prompt.checkoutRequestId);
    addMessage(prompt, typeof prompt.settledAt === "number" ? prompt.settledAt : Date.now() / 1000);
    if (String(prompt.resultCode) === "0") setBalance(prompt.balanceAfter);
    return true;
  }

  // ---- the prompt -----------------------------------------------------------------------------

  let current = null; // the prompt on screen
  let pending = null; // CheckoutRequestID of an answer in flight
  let deadline = 0; // performance.now() at which the current prompt expires
  let lifetime = 60;
  let ticker = 0;

  function hint(text) {
    el.hint.textContent = text;
  }

  function setBusy(busy) {
    el.ok.disabled = busy;
    el.cancel.disabled = busy;
    el.pin.readOnly = busy;
    for (const key of el.keypad.querySelectorAll(".key")) key.disabled = busy;
    el.prompt.classList.toggle("busy", busy);
    el.prompt.setAttribute("aria-busy", String(busy));
  }

  function renderCountdown() {
    const ms = Math.max(0, deadline - performance.now());
    const seconds = Math.floor(ms / 1000);
    if (el.countdown.textContent !== String(seconds)) el.countdown.textContent = String(seconds);
    el.timerBar.style.transform = `scaleX(${Math.min(1, ms / 1000 / lifetime).toFixed(4)})`;
    el.prompt.classList.toggle("urgent", seconds <= 10);
  }

  function setDeadline(prompt, samePrompt) {
    const left = Math.max(0, Number(prompt.secondsLeft) || 0);
    const candidate = performance.now() + left * 1000;
    // Never let the display tick back up because an update took a few ms to arrive.
    deadline = samePrompt ? Math.min(deadline, candidate) : candidate;
    renderCountdown();
  }

  function showPrompt(prompt) {
    current = prompt;
    el.promptText.textContent = prompt.promptText;
    el.pin.value = "";
    hint("");
    setBusy(false);
    lifetime = Math.max(1, Number(prompt.expiresAt) - Number(prompt.createdAt) || 60);
    setDeadline(prompt, false);
    el.prompt.dataset.checkoutRequestId = prompt.checkoutRequestId;
    el.prompt.hidden = false;
    el.home.hidden = true;
    handset.classList.add("has-prompt");
    window.clearInterval(ticker);
    ticker = window.setInterval(renderCountdown, 200);
    el.pin.focus({ preventScroll: inFrame });
  }

  function hidePrompt() {
    const hadFocus = el.prompt.contains(document.activeElement);
    current = null;
    window.clearInterval(ticker);
    ticker = 0;
    el.prompt.hidden = true;
    delete el.prompt.dataset.checkoutRequestId;
    el.home.hidden = false;
    el.pin.value = "";
    hint("");
    setBusy(false);
    handset.classList.remove("has-prompt");
    if (hadFocus) el.sms.focus({ preventScroll: true });
  }

  // ---- updates from the simulator -------------------------------------------------------------

  function handle(prompts) {
    if (!Array.isArray(prompts)) return;
    const mine = prompts.filter((p) => p && p.msisdn === msisdn);
    const settled = mine.filter((p) => p.state !== "open");
    let paid = false;
    // The list is newest first: walk it oldest first so the newest message ends up on top.
    for (const prompt of settled.slice().reverse()) {
      if (seen.has(prompt.checkoutRequestId)) continue;
      if (firstBatch) {
        seen.add(prompt.checkoutRequestId);
        const at = typeof prompt.settledAt === "number" ? prompt.settledAt : prompt.createdAt;
        if (Date.now() / 1000 - at <= RECENT_SECONDS) addMessage(prompt, at);
      } else if (announce(prompt)) {
        paid = true;
      }
    }
    firstBatch = false;
    if (paid) refreshBalance();

    const open = mine.filter((p) => p.state === "open");
    if (current) {
      const still = open.find((p) => p.checkoutRequestId === current.checkoutRequestId);
      if (still) {
        current = still;
        setDeadline(still, true);
      } else {
        hidePrompt(); // answered elsewhere, scripted, or expired
      }
    }
    if (!current && open.length > 0) showPrompt(open[0]);
  }

  async function fetchPrompt(checkoutRequestId) {
    try {
      const resp = await fetch(`${api}/prompts/${encodeURIComponent(checkoutRequestId)}`,
        { cache: "no-store", headers: { Accept: "application/json" } });
      return resp.ok ? await resp.json() : null;
    } catch (err) {
      return null;
    }
  }

  function settledNow(prompt, id) {
    if (prompt && prompt.state && prompt.state !== "open") {
      if (announce(prompt)) refreshBalance();
      if (current && current.checkoutRequestId === id) hidePrompt();
    } else if (current && current.checkoutRequestId === id) {
      setBusy(false);
    }
  }

  async function answer(kind) {
    if (!current || pending) return;
    const id = current.checkoutRequestId;
    let body = "{}";
    if (kind === "pin") {
      const pin = el.pin.value;
      if (!pin) {
        hint("Enter your M-PESA PIN first.");
        el.pin.focus();
        return;
      }
      body = JSON.stringify({ pin });
    }
    pending = id;
    setBusy(true);
    hint("");
    try {
      const resp = await fetch(`${api}/prompts/${encodeURIComponent(id)}/${kind === "pin" ? "pin" : "cancel"}`, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body,
      });
      let data = null;
      try {
        data = await resp.json();
      } catch (err) {
        data = null;
      }
      if (resp.ok && data && data.checkoutRequestId) {
        settledNow(data, id);
      } else if (resp.status === 409 || resp.status === 404) {
        // Settled meanwhile (expired, or answered elsewhere): show how it ended.
        const latest = await fetchPrompt(id);
        if (latest) settledNow(latest, id);
        else if (current && current.checkoutRequestId === id) hidePrompt();
      } else {
        throw new Error((data && data.error) || `HTTP ${resp.status}`);
      }
    } catch (err) {
      if (current && current.checkoutRequestId === id) {
        setBusy(false);
        hint(`Could not send your answer (${err.message}). Try again.`);
      }
    } finally {
      if (pending === id) pending = null;
    }
  }

  // ---- input ----------------------------------------------------------------------------------

  function typeDigit(digit) {
    if (el.pin.readOnly) return;
    if (pinLength && el.pin.value.length >= pinLength) return;
    el.pin.value += digit;
    hint("");
  }

  function deleteDigit() {
    if (el.pin.readOnly) return;
    el.pin.value = el.pin.value.slice(0, -1);
  }

  el.form.addEventListener("submit", (event) => {
    event.preventDefault(); // Enter in the PIN field, or OK
    answer("pin");
  });
  el.cancel.addEventListener("click", () => answer("cancel"));

  el.pin.addEventListener("input", () => {
    const digits = el.pin.value.replace(/\D+/g, "");
    const clipped = pinLength ? digits.slice(0, pinLength) : digits;
    if (clipped !== el.pin.value) el.pin.value = clipped;
    hint("");
  });

  // Keep the focus in the PIN field while the keypad is clicked, as on a real phone.
  el.keypad.addEventListener("mousedown", (event) => {
    if (event.target.closest(".key")) event.preventDefault();
  });
  el.keypad.addEventListener("click", (event) => {
    const key = event.target.closest(".key");
    if (!key || key.disabled) return;
    if (key.dataset.key === "del") deleteDigit();
    else typeDigit(key.dataset.key);
  });

  el.prompt.addEventListener("keydown", (event) => {
    if (event.key === "Tab") {
      // A modal prompt: Tab cycles inside it.
      const stops = [...el.prompt.querySelectorAll("input, button")].filter((n) => !n.disabled && n.offsetParent);
      if (stops.length === 0) return;
      const first = stops[0];
      const last = stops[stops.length - 1];
      if (event.shiftKey && document.activeElement === first) {
        event.preventDefault();
        last.focus();
      } else if (!event.shiftKey && document.activeElement === last) {
        event.preventDefault();
        first.focus();
      }
      return;
    }
    if (event.target === el.pin || event.ctrlKey || event.metaKey || event.altKey) return;
    // Digits typed while a keypad button has the focus still go into the PIN.
    if (/^[0-9]$/.test(event.key)) {
      event.preventDefault();
      typeDigit(event.key);
    } else if (event.key === "Backspace") {
      event.preventDefault();
      deleteDigit();
    }
  });

  // ---- the feed (prompt-feed.js): server-sent events, polling while the stream is down -----------

  followPrompts({
    streamUrl: `${api}/events?msisdn=${encodeURIComponent(msisdn)}`,
    pollUrl: `${api}/prompts?msisdn=${encodeURIComponent(msisdn)}`,
    pollMs: POLL_MS,
    onPrompts: handle,
    onStatus: (state) => {
      const text = state === "offline" ? "No connection to the simulator: retrying…" : "";
      if (el.feedStatus.textContent !== text) el.feedStatus.textContent = text;
    },
  });
}
