// M-Pesa STK push from the browser: validate, send one push, then follow the payment through
// server-sent events, with polling of POST /stkpush/status as the fallback, until it settles.

import { INVALID_PHONE, formatKes, formatShillings, normalisePhone } from "./format.js";

export const STATES = Object.freeze(["idle", "sending", "waiting", "completed", "failed", "timeout"]);

export const MESSAGES = Object.freeze({
  sending: "Sending payment request…",
  timeout: "Payment timeout: we did not hear back from M-Pesa in time.",
  completed: "Payment received. Opening your receipt…",
  unreachable: "We could not reach the payment server. Check your connection and try again.",
  unexpected: "Something went wrong sending the payment request. Please try again.",
  failed: "The payment failed",
});

export function waitingMessage(amount) {
  return `Check your phone: enter your M-Pesa PIN to pay ${formatKes(amount)}`;
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

/** Both fields at once: { ok, phone, amount, errors: { phone?, amount? } }. */
export function validateCheckout({ phone, amount }, maxAmount) {
  const errors = {};
  const msisdn = normalisePhone(phone);
  const value = parseAmount(amount, maxAmount);
  if (!msisdn) errors.phone = INVALID_PHONE;
  if (value === null) errors.amount = amountMessage(maxAmount);
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

/** The receipt page for a payment (the token, when there is one, unlocks its details). */
export function confirmationPageUrl(checkoutRequestId, token) {
  return "/confirmation.html?checkoutRequestId=" + encodeURIComponent(checkoutRequestId) + tokenQuery("&", token);
}

async function postJson(fetchImpl, url, body, timeoutMs) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  try {
    const response = await fetchImpl(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
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

/**
 * One payment at a time. `onUpdate` receives every state change:
 *   { state, message, checkoutRequestId?, amount?, phone?, field?, body? }
 * `pay()` resolves with the final update (completed, failed or timeout), or null when a payment
 * is already in progress (a double click sends nothing).
 */
export class MpesaPaymentManager {
  constructor({
    pollIntervalMs = 3000,
    pollTimeoutMs = 120000,
    onUpdate = () => {},
    navigate = (url) => window.location.assign(url),
    fetchImpl = (...args) => window.fetch(...args),
    EventSourceImpl = typeof window !== "undefined" ? window.EventSource : undefined,
    pushUrl = "/stkpush",
    statusUrl = "/stkpush/status",
    eventsUrl = statusEventsUrl,
    confirmationUrl = confirmationPageUrl,
    pushTimeoutMs = 45000,
  } = {}) {
    this.pollIntervalMs = Math.max(250, pollIntervalMs);
    this.pollTimeoutMs = Math.max(this.pollIntervalMs, pollTimeoutMs);
    this.maxPolls = Math.max(1, Math.ceil(this.pollTimeoutMs / this.pollIntervalMs));
    this.onUpdate = onUpdate;
    this.navigate = navigate;
    this.fetchImpl = fetchImpl;
    this.EventSourceImpl = EventSourceImpl;
    this.pushUrl = pushUrl;
    this.statusUrl = statusUrl;
    this.eventsUrl = eventsUrl;
    this.confirmationUrl = confirmationUrl;
    this.pushTimeoutMs = pushTimeoutMs;
    this.inFlight = false;
    this.state = "idle";
    this.watch = null;
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

  /** Back to idle after a failure or a timeout (the Try Again button). */
  reset() {
    if (this.inFlight) return false;
    this.#update({ state: "idle", message: "" });
    return true;
  }

  /** Stop following the current payment (the page is going away). */
  stop() {
    this.watch?.stop();
  }

  async pay({ phone, amount, description, accountReference }) {
    if (this.inFlight) return null;
    this.inFlight = true; // set before any await: a second click in the same tick is refused
    let final;
    try {
      final = await this.#pay({ phone, amount, description, accountReference });
    } catch (error) {
      console.warn("payment flow error", error);
      final = { state: "failed", message: MESSAGES.unexpected };
    }
    if (final.state === "completed") {
      this.#update(final);
      // Stay in flight: the page is leaving for the receipt and must not send another push.
      this.navigate(this.confirmationUrl(final.checkoutRequestId, final.paymentToken));
    } else {
      this.inFlight = false;
      this.#update(final);
    }
    return final;
  }

  async #pay({ phone, amount, description, accountReference }) {
    this.#update({ state: "sending", message: MESSAGES.sending, amount, phone });
    let reply;
    try {
      reply = await postJson(this.fetchImpl, this.pushUrl,
        { phone, amount, description, accountReference }, this.pushTimeoutMs);
    } catch {
      return { state: "failed", message: MESSAGES.unreachable };
    }
    const { response, data } = reply;
    if (!response.ok || !data || data.success !== true || typeof data.checkoutRequestId !== "string") {
      const message = data && typeof data.message === "string" && data.message ? data.message : MESSAGES.unexpected;
      return { state: "failed", message, field: data?.field, httpStatus: response.status };
    }
    const checkoutRequestId = data.checkoutRequestId;
    const paymentToken = typeof data.paymentToken === "string" ? data.paymentToken : "";
    this.#update({ state: "waiting", message: waitingMessage(amount), checkoutRequestId, paymentToken, amount, phone });
    const outcome = await this.#follow(checkoutRequestId, paymentToken);
    return { ...outcome, checkoutRequestId, paymentToken, amount, phone };
  }

  /** Resolves with the first final word from the event stream or from polling, or a timeout. */
  #follow(checkoutRequestId, paymentToken) {
    return new Promise((resolve) => {
      let settled = false;
      let source = null;
      let timer = null;
      let polls = 0;
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
        if (!body || typeof body !== "object" || settled) return;
        if (body.status === "completed") {
          settle({ state: "completed", message: MESSAGES.completed, body });
        } else if (body.status === "failed") {
          const message = typeof body.message === "string" && body.message ? body.message : MESSAGES.failed;
          settle({ state: "failed", message, body });
        }
      };
      const watch = { stop: () => settle({ state: "idle", message: "", stopped: true }) };
      this.watch = watch;

      // 1. Server-sent events: instant when they work. Any error: close and rely on polling.
      if (typeof this.EventSourceImpl === "function") {
        try {
          source = new this.EventSourceImpl(this.eventsUrl(checkoutRequestId, paymentToken));
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

      // 2. Polling: every pollIntervalMs, at most maxPolls times (40 x 3 s by default).
      const poll = async () => {
        if (settled) return;
        polls += 1;
        pollController = new AbortController();
        const abortTimer = setTimeout(() => pollController?.abort(), Math.max(this.pollIntervalMs * 2, 5000));
        try {
          const response = await this.fetchImpl(this.statusUrl, {
            method: "POST",
            headers: { "Content-Type": "application/json", Accept: "application/json" },
            body: JSON.stringify(paymentToken ? { checkoutRequestId, paymentToken } : { checkoutRequestId }),
            signal: pollController.signal,
            cache: "no-store",
          });
          if (response.ok) consider(await response.json());
        } catch {
          // Network trouble is not a failure: the payment may still go through. Keep polling.
        } finally {
          clearTimeout(abortTimer);
          pollController = null;
        }
        if (settled) return;
        if (polls >= this.maxPolls) {
          settle({ state: "timeout", message: MESSAGES.timeout });
        } else {
          timer = setTimeout(poll, this.pollIntervalMs);
        }
      };
      timer = setTimeout(poll, this.pollIntervalMs);
    });
  }
}
