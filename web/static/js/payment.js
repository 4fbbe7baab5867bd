// M-Pesa STK push from the browser: validate, create the order (the demo catalogue) and send one
// push, then follow the payment through server-sent events, with polling as the fallback, until
// it settles. After the page's window (pollTimeoutMs) it keeps watching, more slowly, so that a
// prompt paid late still lands on the receipt; a payment it cannot see the end of is followed by
// its order after a reload or a 409.

import { INVALID_PHONE, formatKes, formatShillings, normalisePhone } from "./format.js";


export const MESSAGES = Object.freeze({
  sending: "Sending payment request…",
  watching: "Still waiting for M-Pesa. If the request is still on your phone, you can complete it: "
            + "this page will show the payment.",
  timeout: "Payment timeout: we did not hear back from M-Pesa in time.",
  completed: "Payment received. Opening your receipt…",
  unreachable: "We could not reach the payment server. Check your connection and try again.",
  unexpected: "Something went wrong sending the payment request. Please try again.",
  failed: "The payment failed",
  limited: "Too many payment requests for now.",
  alreadyPaid: "This order is already paid. Opening its receipt…",
});

export function waitingMessage(amount) {
  return `Check your phone: enter your M-Pesa PIN to pay ${formatKes(amount)}`;
}

/** A push refused because this order's prompt is still open: the page follows that prompt instead. */
export function alreadyWaitingMessage(amount) {
  return `A payment request for this order is already on your phone: enter your M-Pesa PIN there to pay `
         + formatKes(amount);
}

export function amountMessage(maxAmount) {
  return `Amount must be between 1 and ${formatShillings(maxAmount)}`;
}

/** A whole number of shillings from 1 to maxAmount, as the gateway accepts it; decimals are rejected. */
export function parseAmount(raw, maxAmount) {
  const text = String(raw ?? "").trim();
  if (!/^[0-9]+$/.test(text)) return null;
  const value = Number(text);
  return Number.isSafeInteger(value) && value >= 1 && value <= maxAmount ? value : null;
}

/** The fields the page asks for at once: { ok, phone, amount, errors: { phone?, amount? } }. The
 *  amount is checked only when the page asks for one (`withAmount`: the free-amount form). */
export function validateCheckout({ phone, amount }, maxAmount, { withAmount = true } = {}) {
  const errors = {};
  const msisdn = normalisePhone(phone);
  const value = withAmount ? parseAmount(amount, maxAmount) : null;
  if (!msisdn) errors.phone = INVALID_PHONE;
  if (withAmount && value === null) errors.amount = amountMessage(maxAmount);
  return { ok: !errors.phone && !errors.amount, phone: msisdn, amount: value, errors };
}

/** The payment's token (from the push answer) as a query parameter: it unlocks the details. */
export function tokenQuery(separator, token) {
  return typeof token === "string" && token ? separator + "paymentToken=" + encodeURIComponent(token) : "";
}

/** The payment's server-sent events: its status body now and on every change. */
export function statusEventsUrl(checkoutRequestId, token) {
  return "/stkpush/" + encodeURIComponent(checkoutRequestId) + "/events" + tokenQuery("?", token);
}

/** The order's newest payment, polled (POST) by a page that has no payment token (a reload). */
export function orderStatusUrl(orderId) {
  return "/checkout/" + encodeURIComponent(orderId) + "/status";
}

/** The order's newest payment as server-sent events. */
export function orderEventsUrl(orderId) {
  return "/checkout/" + encodeURIComponent(orderId) + "/events";
}

/** The receipt page for a payment: the token (the browser that pushed) or the order's id (the
 *  checkout link) unlocks its details. */
export function confirmationPageUrl(checkoutRequestId, token, orderId) {
  const base = "/confirmation.html?checkoutRequestId=" + encodeURIComponent(checkoutRequestId);
  if (typeof token === "string" && token) return base + tokenQuery("&", token);
  return typeof orderId === "string" && orderId ? base + "&orderId=" + encodeURIComponent(orderId) : base;
}

// The page this document shows now (its path): the pay page, or the receipt shown in its place.
let pageShown = null;

/**
 * Keep Back and Forward true to the URL once a page may be shown in place (openInPlace): history
 * entries of one document then name two pages (the pay page's URL and the receipt's; after a
 * reload, both entries belong to the reloaded page), and moving between them changes only the
 * URL. Then the page the URL names is loaded. A move within the page (a #fragment) changes nothing.
 * Each page calls it once it runs; openInPlace again for the page it shows.
 */
export function followHistory(win = window) {
  if (pageShown === null) {
    win.addEventListener("popstate", () => {
      if (win.location.pathname !== pageShown) win.location.reload();
    });
  }
  pageShown = win.location.pathname;
}

/**
 * Open a page of this site (the receipt) in place of this one: what a navigation to `url` shows,
 * without leaving the document. Its HTML is fetched (the server renders it from the store, as for
 * a navigation), its <main>, title and body class replace this page's (the old content is hidden
 * at once, removed after the next frame), its URL is pushed into the history (a reload or a
 * bookmark then loads the page itself; Back loads the page left anew), and its module scripts
 * run. This saves the new document's start-up: its commit, its style sheet and
 * scripts, and its first paint. Whenever the swap could show less than a navigation would (the
 * network, an answer other than a plain 200 HTML page, a style sheet this page does not have, a
 * script that is not a module), it navigates instead. Resolves true when shown in place.
 */
export async function openInPlace(url, {
  fetchImpl = (...args) => window.fetch(...args),
  doc = typeof document !== "undefined" ? document : null,
  win = typeof window !== "undefined" ? window : null,
  assign = (to) => win.location.assign(to),
  importModule = (src) => import(src),
  timeoutMs = 5000,
} = {}) {
  let next;
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  try {
    const response = await fetchImpl(url, { headers: { Accept: "text/html" }, cache: "no-store",
                                            signal: controller.signal });
    const type = String(headerOf(response, "Content-Type") || "");
    if (response.status !== 200 || response.redirected || !type.startsWith("text/html")) throw new Error("not shown");
    next = new win.DOMParser().parseFromString(await response.text(), "text/html");
  } catch {
    assign(url);
    return false;
  } finally {
    clearTimeout(timer);
  }
  const here = doc.querySelector("main");
  const there = next.querySelector("main");
  const sheets = (page) => [...page.querySelectorAll('link[rel~="stylesheet"]')].map((link) => link.getAttribute("href"));
  const ours = new Set(sheets(doc));
  const scripts = [...next.querySelectorAll("script")];
  const inert = (script) => script.type === "application/json";
  const modules = scripts.filter((script) => !inert(script));
  if (!here || !there || sheets(next).some((href) => !ours.has(href))
      || modules.some((script) => script.type !== "module" || !script.getAttribute("src") || there.contains(script))) {
    assign(url);
    return false;
  }
  const target = new URL(url, win.location.href);
  win.history.pushState({ inPlace: true }, "", target.href);
  doc.title = next.title;
  doc.body.className = next.body.className;
  // The new content first, the old one hidden at once; once the new one is painted, the old one
  // is removed (unloading what it holds, the virtual phone's frame say, then costs the receipt
  // nothing) and the focus moves to the new content, as after a navigation (moved earlier, it
  // would lay the page out before its first paint, for nothing).
  const old = [...here.childNodes];
  for (const node of old) {
    if (node.nodeType === 1) node.style.setProperty("display", "none", "important");
    else node.remove();
  }
  here.prepend(...[...there.childNodes].map((node) => doc.importNode(node, true)));
  win.scrollTo(0, 0);
  win.requestAnimationFrame(() => win.setTimeout(() => {
    old.forEach((node) => node.remove());
    if (here.isConnected && !here.contains(doc.activeElement)) here.focus({ preventScroll: true });
  }));
  followHistory(win);
  for (const script of modules) {
    importModule(new URL(script.getAttribute("src"), target).href).catch(() => win.location.reload());
  }
  return true;
}

/** A fresh Idempotency-Key (one per click): 128 random bits. Works on plain http too, where
 *  crypto.randomUUID is missing. */
export function newIdempotencyKey() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return "pay-" + Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

/** Seconds from a Retry-After header (seconds, or an HTTP date); `fallback` when absent or odd. */
export function retryAfterSeconds(value, { now = Date.now(), fallback = 60 } = {}) {
  const text = String(value ?? "").trim();
  if (/^[0-9]{1,6}$/.test(text)) return Math.max(1, Number(text));
  const date = text ? Date.parse(text) : NaN;
  return Number.isFinite(date) ? Math.max(1, Math.ceil((date - now) / 1000)) : fallback;
}

/** "42 s", "1:05 min": how long until the customer can try again. */
export function waitText(seconds) {
  const whole = Math.max(0, Math.ceil(seconds));
  if (whole < 60) return `${whole} s`;
  return `${Math.floor(whole / 60)}:${String(whole % 60).padStart(2, "0")} min`;
}

/**
 * A failed status body in the customer's words: { message, next }. `outcomes` (the pages' table,
 * web/outcomes.py) may replace the reason for a result code (a no-answer reads as the phone says
 * it) and adds what to do next; without it, the server's message and no next step.
 */
export function describeFailure(body, outcomes = null) {
  const code = body && body.resultCode != null ? String(body.resultCode) : "";
  const own = body && typeof body.message === "string" && body.message ? body.message : MESSAGES.failed;
  if (!outcomes) return { message: own, next: "" };
  const reason = outcomes.reasons?.[code];
  const next = outcomes.next?.[code] ?? outcomes.defaultNext ?? "";
  return { message: reason || own, next };
}

async function postJson(fetchImpl, url, body, timeoutMs, headers = {}) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  try {
    const response = await fetchImpl(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json", ...headers },
      body: JSON.stringify(body),
      signal: controller.signal,
      cache: "no-store",
    });
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null; // not JSON (a proxy's error page, say)
    }
    return { response, data };
  } finally {
    clearTimeout(timer);
  }
}

function headerOf(response, name) {
  try {
    return response.headers?.get?.(name) ?? null;
  } catch {
    return null;
  }
}

const wait = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * One payment at a time. `onUpdate` receives every state change:
 *   { state, message, checkoutRequestId?, paymentToken?, orderId?, amount?, phone?, field?, next?, … }
 * States: sending → waiting (the window: events and a poll every pollIntervalMs) → watching (after
 * the window: a poll every slowPollIntervalMs, for up to watchLimitMs in all) → completed (then the
 * receipt page), failed, limited (429: `retryAt`), or timeout (nothing heard in watchLimitMs).
 * `pay()` and `follow()` resolve with the final update, or null when a payment is already in
 * progress (a double click sends nothing).
 */
export class MpesaPaymentManager {
  constructor({
    pollIntervalMs = 3000,
    pollTimeoutMs = 120000,
    slowPollIntervalMs = null,
    watchLimitMs = 1800000,
    onUpdate = () => {},
    navigate = (url) => window.location.assign(url),
    fetchImpl = (...args) => window.fetch(...args),
    EventSourceImpl = typeof window !== "undefined" ? window.EventSource : undefined,
    pushUrl = "/stkpush",
    statusUrl = "/stkpush/status",
    ordersUrl = "/catalogue/orders",
    eventsUrl = statusEventsUrl,
    orderStatus = orderStatusUrl,
    orderEvents = orderEventsUrl,
    confirmationUrl = confirmationPageUrl,
    pushTimeoutMs = 45000,
    retryDelayMs = 1000,
    outcomes = null,
    newKey = newIdempotencyKey,
    now = () => Date.now(),
  } = {}) {
    this.pollIntervalMs = Math.max(250, pollIntervalMs);
    this.pollTimeoutMs = Math.max(this.pollIntervalMs, pollTimeoutMs);
    this.maxPolls = Math.max(1, Math.ceil(this.pollTimeoutMs / this.pollIntervalMs));
    this.slowPollIntervalMs = Math.max(this.pollIntervalMs, slowPollIntervalMs ?? this.pollIntervalMs * 5);
    this.maxSlowPolls = Math.max(0, Math.ceil((watchLimitMs - this.pollTimeoutMs) / this.slowPollIntervalMs));
    this.onUpdate = onUpdate;
    this.navigate = navigate;
    this.fetchImpl = fetchImpl;
    this.EventSourceImpl = EventSourceImpl;
    this.pushUrl = pushUrl;
    this.statusUrl = statusUrl;
    this.ordersUrl = ordersUrl;
    this.eventsUrl = eventsUrl;
    this.orderStatus = orderStatus;
    this.orderEvents = orderEvents;
    this.confirmationUrl = confirmationUrl;
    this.pushTimeoutMs = pushTimeoutMs;
    this.retryDelayMs = retryDelayMs;
    this.outcomes = outcomes;
    this.newKey = newKey;
    this.now = now;
    this.inFlight = false;
    this.state = "idle";
    this.watch = null; // the payment being followed ({ stop })
    this.lateWatch = null; // after a failure that may yet turn into a success ({ stop })
  }

  get busy() {
    return this.inFlight;
  }

  #update(update) {
    this.state = update.state;
    try {
      this.onUpdate(update);
    } catch (error) {
      console.warn("payment status listener failed", error);
    }
    return update;
  }

  /** Back to idle after a failure or a timeout. */
  reset() {
    if (this.inFlight) return false;
    this.#stopLateWatch();
    this.#update({ state: "idle", message: "" });
    return true;
  }

  /** Stop following the current payment (the page is going away). */
  stop() {
    this.#stopLateWatch();
    this.watch?.stop();
  }

  /**
   * Pay: `{ phone, orderId }` for an order, `{ phone, items: [{ id, quantity }] }` to order from
   * the demo catalogue first, or `{ phone, amount, description, accountReference }` (free amount).
   */
  async pay(request) {
    return this.#run(() => this.#pay(request));
  }

  /**
   * Follow a payment this page did not start: `{ orderId }` (the order's newest payment, after a
   * reload) or `{ checkoutRequestId, paymentToken }`. `details` ({ amount, phone }) fill the messages.
   */
  async follow(target, details = {}) {
    return this.#run(() => this.#watch(target, details, waitingMessage(details.amount)));
  }

  /**
   * Watch `target` quietly for a late success (as after the gateway's own time-out): a page loaded
   * after such a failure (a reload) still lands on the receipt if the PIN is entered late. False
   * when a payment is in progress.
   */
  watchLate(target) {
    if (this.inFlight) return false;
    this.#stopLateWatch();
    this.#watchLate(target);
    return true;
  }

  async #run(flow) {
    if (this.inFlight) return null;
    this.inFlight = true; // set before any await: a second click in the same tick is refused
    this.#stopLateWatch();
    let final;
    try {
      final = await flow();
    } catch (error) {
      console.warn("payment flow error", error);
      final = { state: "failed", message: MESSAGES.unexpected };
    }
    if (final.state === "completed") {
      this.#update(final);
      // Stay in flight: the page is leaving for the receipt and must not send another push.
      this.navigate(this.confirmationUrl(final.checkoutRequestId, final.paymentToken, final.orderId));
      return final;
    }
    this.inFlight = false;
    const { lateTarget, ...shown } = final;
    this.#update(shown);
    if (lateTarget) this.#watchLate(lateTarget);
    return shown;
  }

  /** POST with one Idempotency-Key; a request that never got an answer (the network) is sent once
   *  more with the same key, so the server answers it without doing the work twice. */
  async #send(url, body, timeoutMs) {
    const headers = { "Idempotency-Key": this.newKey() };
    for (let attempt = 1; ; attempt += 1) {
      try {
        return await postJson(this.fetchImpl, url, body, timeoutMs, headers);
      } catch (error) {
        if (attempt >= 2 || error?.name === "AbortError") return null;
        await wait(this.retryDelayMs);
      }
    }
  }

  /** A refused request as the customer is told it: limited (429, with when to try again) or failed. */
  #refusal(reply, extra = {}) {
    if (!reply) return { state: "failed", message: MESSAGES.unreachable, ...extra };
    const { response, data } = reply;
    // 429: a limit. 409 with Retry-After: a prompt whose answer was lost may still be on the phone,
    // so no new push until it can no longer be paid (the server's message says so).
    const waitHeader = headerOf(response, "Retry-After");
    if (response.status === 429 || (response.status === 409 && waitHeader)) {
      const seconds = retryAfterSeconds(waitHeader, { now: this.now() });
      const message = response.status === 409 && typeof data?.message === "string" && data.message
        ? data.message : MESSAGES.limited;
      return { state: "limited", message, retryAfterSeconds: seconds,
               retryAt: this.now() + seconds * 1000, httpStatus: response.status, ...extra };
    }
    const message = data && typeof data.message === "string" && data.message ? data.message : MESSAGES.unexpected;
    return { state: "failed", message, field: data?.field, httpStatus: response.status, ...extra };
  }

  async #pay({ phone, amount, orderId = null, items = null, description, accountReference }) {
    this.#update({ state: "sending", message: MESSAGES.sending, amount, phone, ...(orderId ? { orderId } : {}) });
    if (!orderId && Array.isArray(items)) {
      const reply = await this.#send(this.ordersUrl, { items }, this.pushTimeoutMs);
      const data = reply?.data;
      if (!reply || !reply.response.ok || !data || typeof data.orderId !== "string") return this.#refusal(reply);
      orderId = data.orderId;
      amount = data.amount;
      this.#update({ state: "sending", message: MESSAGES.sending, amount, phone, orderId, order: data });
    }
    const body = orderId ? { orderId, phone } : { phone, amount, description, accountReference };
    const reply = await this.#send(this.pushUrl, body, this.pushTimeoutMs);
    const extra = orderId ? { orderId, amount, phone } : {};
    if (!reply) return this.#refusal(null, extra);
    const { response, data } = reply;
    if (response.ok && data && data.success === true && typeof data.checkoutRequestId === "string") {
      const paymentToken = typeof data.paymentToken === "string" ? data.paymentToken : "";
      const target = { checkoutRequestId: data.checkoutRequestId, paymentToken, ...(orderId ? { orderId } : {}) };
      return this.#watch(target, { amount, phone }, waitingMessage(amount));
    }
    if (orderId && response.status === 409 && data && (data.orderStatus === "paid" || data.checkoutRequestId)) {
      // Paid already, or its prompt is still open (a reload, another tab): follow the order's payment.
      const message = data.orderStatus === "paid" ? MESSAGES.alreadyPaid : alreadyWaitingMessage(amount);
      return this.#watch({ orderId }, { amount, phone }, message);
    }
    const refused = this.#refusal(reply, extra);
    // The prompt may yet be paid: after a lost answer (504), and while the server holds a new push
    // back because of one (409 with Retry-After).
    if (orderId && (response.status === 504 || (response.status === 409 && refused.state === "limited"))) {
      refused.lateTarget = { orderId };
    }
    return refused;
  }

  /** Follow `target` to its end: { state, message, checkoutRequestId, paymentToken, orderId, … }. */
  async #watch(target, { amount, phone } = {}, message) {
    const about = { amount, phone };
    this.#update({ state: "waiting", message, ...target, ...about });
    const onWindowEnd = () => this.#update({ state: "watching", message: MESSAGES.watching, ...target, ...about });
    const outcome = await this.#follow(target, onWindowEnd);
    const final = { ...outcome, ...target, ...about };
    if (outcome.body?.checkoutRequestId) final.checkoutRequestId = outcome.body.checkoutRequestId;
    if (outcome.state === "failed" && outcome.resultCode === "timeout") {
      // Given up locally: M-Pesa may still report a success, which the page then shows.
      final.lateTarget = target;
    }
    return final;
  }

  #settleOn(body) {
    if (!body || typeof body !== "object") return null;
    if (body.status === "completed") return { state: "completed", message: MESSAGES.completed, body };
    if (body.status === "failed") {
      const { message, next } = describeFailure(body, this.outcomes);
      const resultCode = body.resultCode != null ? String(body.resultCode) : undefined;
      return { state: "failed", message, next, resultCode, body };
    }
    return null; // pending, or "none" (an order with no payment yet)
  }

  /** One status poll of `target`: its body, or null (network trouble is not an answer). */
  async #ask(target, signal) {
    const byOrder = !target.checkoutRequestId;
    const url = byOrder ? this.orderStatus(target.orderId) : this.statusUrl;
    const body = byOrder ? {} : target.paymentToken
      ? { checkoutRequestId: target.checkoutRequestId, paymentToken: target.paymentToken }
      : { checkoutRequestId: target.checkoutRequestId };
    try {
      const response = await this.fetchImpl(url, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify(body),
        signal,
        cache: "no-store",
      });
      return response.ok ? await response.json() : null;
    } catch {
      return null; // the payment may still go through: keep asking
    }
  }

  /** Resolves with the first final word from the event stream or from polling, or a timeout. */
  #follow(target, onWindowEnd) {
    return new Promise((resolve) => {
      let settled = false;
      let source = null;
      let timer = null;
      let polls = 0;
      let slowPolls = 0;
      let pollController = null;

      const stop = () => {
        settled = true;
        clearTimeout(timer);
        pollController?.abort();
        if (source) {
          source.close();
          source = null;
        }
        if (this.watch === watch) this.watch = null;
      };
      const settle = (outcome) => {
        if (settled) return;
        stop();
        resolve(outcome);
      };
      const consider = (body) => {
        if (settled) return;
        const outcome = this.#settleOn(body);
        if (outcome) settle(outcome);
      };
      const watch = { stop: () => settle({ state: "idle", message: "", stopped: true }) };
      this.watch = watch;

      // 1. Server-sent events: instant when they work. Any error: close and rely on polling.
      if (typeof this.EventSourceImpl === "function") {
        try {
          const url = target.checkoutRequestId ? this.eventsUrl(target.checkoutRequestId, target.paymentToken)
            : this.orderEvents(target.orderId);
          source = new this.EventSourceImpl(url);
          source.addEventListener("status", (event) => {
            try {
              consider(JSON.parse(event.data));
            } catch {
              // a malformed event is ignored; polling carries on
            }
          });
          source.addEventListener("error", () => {
            if (source) {
              source.close();
              source = null;
            }
          });
        } catch {
          source = null;
        }
      }

      // 2. Polling: every pollIntervalMs, maxPolls times (40 x 3 s by default: the window); then
      //    every slowPollIntervalMs, maxSlowPolls times, until watchLimitMs is over.
      const poll = async () => {
        if (settled) return;
        const slow = polls >= this.maxPolls;
        if (slow) slowPolls += 1;
        else polls += 1;
        const interval = slow ? this.slowPollIntervalMs : this.pollIntervalMs;
        pollController = new AbortController();
        const abortTimer = setTimeout(() => pollController?.abort(), Math.max(interval * 2, 5000));
        const body = await this.#ask(target, pollController.signal);
        clearTimeout(abortTimer);
        pollController = null;
        consider(body);
        if (settled) return;
        if (!slow && polls === this.maxPolls) { // the window's last poll
          if (this.maxSlowPolls === 0) {
            settle({ state: "timeout", message: MESSAGES.timeout });
            return;
          }
          onWindowEnd(); // the prompt may still be on the phone: keep watching, more slowly
        } else if (slow && slowPolls >= this.maxSlowPolls) {
          settle({ state: "timeout", message: MESSAGES.timeout });
          return;
        }
        timer = setTimeout(poll, polls >= this.maxPolls ? this.slowPollIntervalMs : this.pollIntervalMs);
      };
      timer = setTimeout(poll, this.pollIntervalMs);
    });
  }

  /** After a failure that may yet turn out paid (given up locally, a lost push answer): poll
   *  slowly, quietly; a success then shows as one and opens the receipt. */
  #watchLate(target) {
    let stopped = false;
    let timer = null;
    let controller = null;
    let checks = 0;
    const limit = Math.max(1, this.maxSlowPolls);
    const handle = {
      stop: () => {
        stopped = true;
        clearTimeout(timer);
        controller?.abort();
        if (this.lateWatch === handle) this.lateWatch = null;
      },
    };
    const check = async () => {
      if (stopped) return;
      checks += 1;
      controller = new AbortController();
      const body = await this.#ask(target, controller.signal);
      controller = null;
      if (stopped) return;
      if (body && body.status === "completed" && !this.inFlight) {
        handle.stop();
        this.inFlight = true;
        const final = { state: "completed", message: MESSAGES.completed, body, late: true, ...target,
                        checkoutRequestId: body.checkoutRequestId || target.checkoutRequestId };
        this.#update(final);
        this.navigate(this.confirmationUrl(final.checkoutRequestId, final.paymentToken, final.orderId));
        return;
      }
      if (checks < limit) timer = setTimeout(check, this.slowPollIntervalMs);
      else handle.stop();
    };
    this.lateWatch = handle;
    timer = setTimeout(check, this.slowPollIntervalMs);
  }

  #stopLateWatch() {
    this.lateWatch?.stop();
  }
}
