// The pay page's payment manager (web/static/js/payment.js) under Node's test runner:
// fetch, EventSource, navigation and the clock are all fakes the tests drive.
// Run: node --test tests/web/

import assert from "node:assert/strict";
import { beforeEach, describe, test } from "node:test";

import {
  MESSAGES,
  MpesaPaymentManager,
  amountMessage,
  confirmationPageUrl,
  parseAmount,
  statusEventsUrl,
  tokenQuery,
  validateCheckout,
  waitingMessage,
} from "../../web/static/js/payment.js";
import { FakeEventSource, advance, flush, reply, scriptedFetch } from "./fakes.mjs";

const ID = "ws_CO_191220191020363925";
const TOKEN = "tok/+=1"; // characters that must be encoded in a URL
const ORDER = { phone: "254708374149", amount: 1500, description: "Demo Shop", accountReference: "CART_K3F9Q2" };
const PENDING = { status: "pending", checkoutRequestId: ID };
const COMPLETED = { status: "completed", checkoutRequestId: ID, MpesaReceiptNumber: "NLJ7RT61SV" };

const pushAccepted = (extra = {}) =>
  reply(200, { success: true, checkoutRequestId: ID, paymentToken: TOKEN, message: "Check your phone", ...extra });

/**
 * A manager wired to fakes, with the clock faked (setTimeout and clearTimeout).
 * `push(call)` answers POST /stkpush; `status(call, n)` answers the n-th status poll (1-based).
 */
function setup(t, { push = () => pushAccepted(), status = () => reply(200, PENDING), eventSource = FakeEventSource,
                    ...options } = {}) {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const updates = [];
  const navigations = [];
  let polls = 0;
  const { fetchImpl, calls } = scriptedFetch((call) => {
    if (call.url === "/stkpush") return push(call);
    if (call.url === "/stkpush/status") return status(call, ++polls);
    throw new Error("unexpected URL " + call.url);
  });
  const manager = new MpesaPaymentManager({
    fetchImpl,
    EventSourceImpl: eventSource,
    navigate: (url) => navigations.push(url),
    onUpdate: (update) => updates.push(update),
    ...options,
  });
  return {
    manager,
    calls,
    updates,
    navigations,
    pushes: () => calls.filter((call) => call.url === "/stkpush"),
    polls: () => calls.filter((call) => call.url === "/stkpush/status"),
    source: () => FakeEventSource.instances.at(-1),
    states: () => updates.map((update) => update.state),
    advance: (ms) => advance(t.mock.timers, ms),
  };
}

/** Settles `promise` into an inspectable box, so a test can check it has not resolved yet. */
function track(promise) {
  const box = { done: false, value: undefined };
  promise.then((value) => {
    box.done = true;
    box.value = value;
  });
  return box;
}

beforeEach(() => {
  FakeEventSource.instances = [];
});

describe("one push per pay() call", () => {
  test("a double click sends one push; the second call resolves null at once", async (t) => {
    const page = setup(t);
    const first = track(page.manager.pay(ORDER));
    const second = track(page.manager.pay(ORDER)); // same tick, as a double click
    await flush();
    assert.deepEqual(second, { done: true, value: null });
    assert.equal(page.pushes().length, 1);
    assert.deepEqual(page.pushes()[0].body, ORDER);
    assert.equal(page.pushes()[0].init.method, "POST");
    assert.equal(page.pushes()[0].init.headers["Content-Type"], "application/json");
    assert.equal(page.manager.busy, true);
    const third = track(page.manager.pay(ORDER)); // while waiting for the phone
    await flush();
    assert.deepEqual(third, { done: true, value: null });
    assert.equal(page.pushes().length, 1);
    assert.equal(first.done, false);
    page.manager.stop();
  });

  test("after a failure, Try Again (reset) and pay again send exactly one more push", async (t) => {
    const page = setup(t, { push: () => reply(503, { success: false, message: "M-Pesa is busy" }) });
    assert.equal((await page.manager.pay(ORDER)).state, "failed");
    assert.equal(page.manager.busy, false);
    assert.equal(page.manager.reset(), true);
    assert.equal(page.manager.state, "idle");
    await page.manager.pay(ORDER);
    assert.equal(page.pushes().length, 2);
  });

  test("reset() is refused while a payment is in flight", async (t) => {
    const page = setup(t);
    const done = page.manager.pay(ORDER);
    await flush();
    assert.equal(page.manager.reset(), false);
    assert.equal(page.manager.state, "waiting");
    page.manager.stop();
    await done;
  });
});

describe("polling cadence", () => {
  test("every 3 s, 40 polls in 120 s, then the timeout state and no more polls", async (t) => {
    const page = setup(t); // the defaults: pollIntervalMs 3000, pollTimeoutMs 120000
    assert.equal(page.manager.maxPolls, 40);
    const result = track(page.manager.pay(ORDER));
    await flush();
    assert.equal(page.manager.state, "waiting");
    assert.equal(page.polls().length, 0, "the first poll waits one interval");
    await page.advance(2999);
    assert.equal(page.polls().length, 0);
    await page.advance(1);
    assert.equal(page.polls().length, 1);
    for (let n = 2; n <= 40; n += 1) {
      await page.advance(2950);
      assert.equal(page.polls().length, n - 1, `no early poll before poll ${n}`);
      await page.advance(50);
      assert.equal(page.polls().length, n, `poll ${n} at ${n * 3} s`);
      if (n < 40) assert.equal(result.done, false);
    }
    await flush();
    assert.equal(result.done, true);
    assert.equal(result.value.state, "timeout");
    assert.equal(result.value.message, MESSAGES.timeout);
    // The timeout keeps what the "check this payment" link needs.
    assert.equal(result.value.checkoutRequestId, ID);
    assert.equal(result.value.paymentToken, TOKEN);
    assert.equal(page.updates.at(-1).state, "timeout");
    assert.equal(page.manager.busy, false);
    assert.equal(page.source().closed, true);
    await page.advance(60000);
    assert.equal(page.polls().length, 40, "nothing after the last poll");
    assert.deepEqual(page.navigations, []);
  });

  test("the configured cadence: 0.5 s for 30 s is 60 polls", async (t) => {
    const page = setup(t, { pollIntervalMs: 500, pollTimeoutMs: 30000 });
    assert.equal(page.manager.maxPolls, 60);
    const result = track(page.manager.pay(ORDER));
    await page.advance(29950);
    assert.equal(page.polls().length, 59);
    assert.equal(result.done, false);
    await page.advance(50);
    assert.equal(page.polls().length, 60);
    assert.equal(result.value.state, "timeout");
    await page.advance(5000);
    assert.equal(page.polls().length, 60);
  });

  test("maxPolls is the timeout over the interval, rounded up; interval at least 250 ms, at least one poll", () => {
    const make = (options) => new MpesaPaymentManager({ EventSourceImpl: undefined, ...options });
    assert.equal(make({ pollIntervalMs: 7000, pollTimeoutMs: 120000 }).maxPolls, 18);
    assert.equal(make({ pollIntervalMs: 3000, pollTimeoutMs: 1000 }).maxPolls, 1);
    const fast = make({ pollIntervalMs: 10, pollTimeoutMs: 1000 });
    assert.equal(fast.pollIntervalMs, 250);
    assert.equal(fast.maxPolls, 4);
  });

  test("pending answers keep it polling", async (t) => {
    const page = setup(t);
    const result = track(page.manager.pay(ORDER));
    await page.advance(30000);
    assert.equal(page.polls().length, 10);
    assert.equal(result.done, false);
    assert.equal(page.manager.state, "waiting");
    page.manager.stop();
  });
});

describe("completed", () => {
  test("from polling: the receipt page with id and token, and polling stops", async (t) => {
    const page = setup(t, { status: (call, n) => reply(200, n < 3 ? PENDING : COMPLETED) });
    const result = track(page.manager.pay(ORDER));
    await page.advance(9000);
    assert.equal(page.polls().length, 3);
    assert.equal(result.value.state, "completed");
    assert.equal(result.value.message, MESSAGES.completed);
    assert.deepEqual(page.navigations, [
      "/confirmation.html?checkoutRequestId=" + ID + "&paymentToken=" + encodeURIComponent(TOKEN),
    ]);
    assert.equal(page.source().closed, true);
    await page.advance(30000);
    assert.equal(page.polls().length, 3, "no poll after the payment completed");
    // The page is leaving for the receipt: it stays busy, so no second push can start.
    assert.equal(page.manager.busy, true);
    const again = track(page.manager.pay(ORDER));
    await flush();
    assert.deepEqual(again, { done: true, value: null });
    assert.equal(page.pushes().length, 1);
    assert.deepEqual(page.states(), ["sending", "waiting", "completed"]);
  });

  test("from the event stream: at once, with no poll ever sent", async (t) => {
    const page = setup(t);
    const result = track(page.manager.pay(ORDER));
    await flush();
    page.source().emitStatus(PENDING); // the stream's first word: still pending
    await page.advance(1000);
    page.source().emitStatus(COMPLETED);
    await flush();
    assert.equal(result.value.state, "completed");
    assert.deepEqual(page.navigations, [
      "/confirmation.html?checkoutRequestId=" + ID + "&paymentToken=" + encodeURIComponent(TOKEN),
    ]);
    assert.equal(page.source().closed, true);
    await page.advance(10000);
    assert.equal(page.polls().length, 0);
    assert.equal(page.navigations.length, 1);
  });

  test("a malformed event is ignored and the payment carries on", async (t) => {
    const page = setup(t, { status: (call, n) => reply(200, n < 2 ? PENDING : COMPLETED) });
    const result = track(page.manager.pay(ORDER));
    await flush();
    page.source().emitStatus("{not json");
    page.source().emitStatus("null");
    await page.advance(3000);
    assert.equal(result.done, false);
    assert.equal(page.source().closed, false);
    await page.advance(3000);
    assert.equal(result.value.state, "completed");
  });

  test("an answer arriving after the payment settled changes nothing", async (t) => {
    const page = setup(t);
    const result = track(page.manager.pay(ORDER));
    await flush();
    const source = page.source();
    source.emitStatus(COMPLETED);
    source.emitStatus({ status: "failed", message: "late" });
    await flush();
    assert.equal(result.value.state, "completed");
    assert.equal(page.navigations.length, 1);
    assert.deepEqual(page.states(), ["sending", "waiting", "completed"]);
  });
});

describe("failed", () => {
  test("from polling: the server's message, the form unlocked, polling stopped", async (t) => {
    const message = "You cancelled the payment on your phone.";
    const page = setup(t, { status: (call, n) => reply(200, n < 2 ? PENDING : { status: "failed", message }) });
    const result = track(page.manager.pay(ORDER));
    await page.advance(6000);
    assert.equal(result.value.state, "failed");
    assert.equal(result.value.message, message);
    assert.equal(page.updates.at(-1).message, message);
    assert.equal(page.manager.busy, false);
    assert.equal(page.source().closed, true);
    assert.deepEqual(page.navigations, []);
    await page.advance(30000);
    assert.equal(page.polls().length, 2);
  });

  test("from the event stream: the server's message", async (t) => {
    const page = setup(t);
    const result = track(page.manager.pay(ORDER));
    await flush();
    page.source().emitStatus({ status: "failed", message: "Insufficient M-Pesa balance." });
    await flush();
    assert.equal(result.value.state, "failed");
    assert.equal(result.value.message, "Insufficient M-Pesa balance.");
    await page.advance(10000);
    assert.equal(page.polls().length, 0);
  });

  test("without a message from the server: a plain one", async (t) => {
    const page = setup(t, { status: () => reply(200, { status: "failed", message: "" }) });
    const result = track(page.manager.pay(ORDER));
    await page.advance(3000);
    assert.equal(result.value.state, "failed");
    assert.equal(result.value.message, MESSAGES.failed);
  });
});

describe("live updates fall back to polling", () => {
  test("an EventSource error closes the stream and polling carries on", async (t) => {
    const page = setup(t, { status: (call, n) => reply(200, n < 2 ? PENDING : COMPLETED) });
    const result = track(page.manager.pay(ORDER));
    await flush();
    const source = page.source();
    source.emitError();
    assert.equal(source.closed, true);
    await page.advance(3000);
    assert.equal(page.polls().length, 1);
    assert.equal(result.done, false);
    await page.advance(3000);
    assert.equal(result.value.state, "completed");
    assert.equal(page.navigations.length, 1);
    assert.equal(FakeEventSource.instances.length, 1, "the stream is not reopened");
  });

  test("no EventSource at all: polling alone", async (t) => {
    const page = setup(t, { eventSource: null, status: (call, n) => reply(200, n < 2 ? PENDING : COMPLETED) });
    const result = track(page.manager.pay(ORDER));
    await page.advance(6000);
    assert.equal(result.value.state, "completed");
    assert.equal(FakeEventSource.instances.length, 0);
  });

  test("an EventSource that throws on construction: polling alone", async (t) => {
    class Refused {
      constructor() {
        throw new Error("blocked");
      }
    }
    const page = setup(t, { eventSource: Refused, status: (call, n) => reply(200, n < 2 ? PENDING : COMPLETED) });
    const result = track(page.manager.pay(ORDER));
    await page.advance(6000);
    assert.equal(result.value.state, "completed");
  });

  test("network errors while polling do not fail the payment", async (t) => {
    const page = setup(t, {
      status: (call, n) => {
        if (n <= 2) throw new TypeError("Failed to fetch"); // offline for a moment
        if (n === 3) return reply(502); // a proxy's HTML error page
        if (n === 4) return reply(500, { error: "server error" });
        if (n === 5) return reply(200); // 200 but not JSON
        return reply(200, COMPLETED);
      },
    });
    const result = track(page.manager.pay(ORDER));
    await page.advance(15000);
    assert.equal(page.polls().length, 5);
    assert.equal(result.done, false);
    assert.deepEqual(page.states(), ["sending", "waiting"]);
    await page.advance(3000);
    assert.equal(result.value.state, "completed");
    assert.equal(page.navigations.length, 1);
  });

  test("a poll that hangs is abandoned after max(2 × interval, 5 s) and polling carries on", async (t) => {
    const aborted = [];
    const page = setup(t, {
      status: (call, n) => n > 1 ? reply(200, PENDING) : new Promise((resolve, reject) => {
        call.init.signal.addEventListener("abort", () => {
          aborted.push(n);
          reject(new DOMException("aborted", "AbortError"));
        });
      }),
    });
    const result = track(page.manager.pay(ORDER));
    await page.advance(3000);
    assert.equal(page.polls().length, 1);
    await page.advance(5950);
    assert.deepEqual(aborted, []);
    await page.advance(50); // 6 s after the poll was sent
    assert.deepEqual(aborted, [1]);
    assert.equal(result.done, false);
    await page.advance(3000);
    assert.equal(page.polls().length, 2);
    page.manager.stop();
  });
});

describe("the push answer", () => {
  test("a non-2xx answer shows the server's message and field, and nothing is followed", async (t) => {
    const page = setup(t, {
      push: () => reply(400, { success: false, message: "Invalid phone number format", field: "phone" }),
    });
    const final = await page.manager.pay(ORDER);
    assert.equal(final.state, "failed");
    assert.equal(final.message, "Invalid phone number format");
    assert.equal(final.field, "phone");
    assert.equal(final.httpStatus, 400);
    assert.deepEqual(page.updates.at(-1), final);
    assert.equal(page.manager.busy, false);
    await page.advance(10000);
    assert.equal(page.polls().length, 0);
    assert.equal(FakeEventSource.instances.length, 0);
  });

  test("a 2xx answer without success or an id is a failure too", async (t) => {
    const page = setup(t, {
      push: () => reply(200, { success: false, message: "Amount must be between 1 and 150,000", field: "amount" }),
    });
    const final = await page.manager.pay(ORDER);
    assert.deepEqual([final.state, final.message, final.field],
                     ["failed", "Amount must be between 1 and 150,000", "amount"]);
  });

  test("a 2xx answer without a checkoutRequestId: the plain message", async (t) => {
    const page = setup(t, { push: () => reply(200, { success: true, message: "" }) });
    const final = await page.manager.pay(ORDER);
    assert.deepEqual([final.state, final.message], ["failed", MESSAGES.unexpected]);
    assert.equal(FakeEventSource.instances.length, 0);
  });

  test("an answer that is not JSON: the plain message, no field", async (t) => {
    const page = setup(t, { push: () => reply(502) });
    const final = await page.manager.pay(ORDER);
    assert.equal(final.message, MESSAGES.unexpected);
    assert.equal(final.field, undefined);
    assert.equal(final.httpStatus, 502);
  });

  test("no answer at all: the server could not be reached", async (t) => {
    const page = setup(t, { push: () => { throw new TypeError("Failed to fetch"); } });
    const final = await page.manager.pay(ORDER);
    assert.deepEqual(final, { state: "failed", message: MESSAGES.unreachable });
  });

  test("a push that hangs is abandoned after pushTimeoutMs", async (t) => {
    const page = setup(t, {
      pushTimeoutMs: 45000,
      push: (call) => new Promise((resolve, reject) => {
        call.init.signal.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError")));
      }),
    });
    const result = track(page.manager.pay(ORDER));
    await page.advance(44950);
    assert.equal(result.done, false);
    assert.equal(page.manager.state, "sending");
    await page.advance(50);
    assert.equal(result.value.state, "failed");
    assert.equal(result.value.message, MESSAGES.unreachable);
  });

  test("the updates: sending, then waiting with the amount in shillings", async (t) => {
    const page = setup(t);
    const done = page.manager.pay(ORDER);
    await flush();
    assert.deepEqual(page.updates[0], { state: "sending", message: MESSAGES.sending, amount: 1500, phone: ORDER.phone });
    assert.deepEqual(page.updates[1], {
      state: "waiting", message: "Check your phone: enter your M-Pesa PIN to pay KES 1,500",
      checkoutRequestId: ID, paymentToken: TOKEN, amount: 1500, phone: ORDER.phone,
    });
    page.manager.stop();
    await done;
  });

  test("a listener that throws does not stop the payment", async (t) => {
    t.mock.method(console, "warn", () => {});
    const page = setup(t, {
      onUpdate: () => { throw new Error("render failed"); },
      status: () => reply(200, COMPLETED),
    });
    const result = track(page.manager.pay(ORDER));
    await page.advance(3000);
    assert.equal(result.value.state, "completed");
    assert.equal(page.navigations.length, 1);
    assert.ok(console.warn.mock.calls.length >= 3);
  });
});

describe("the payment token", () => {
  test("goes with every status poll, in the events URL and in the receipt URL", async (t) => {
    const page = setup(t, { status: (call, n) => reply(200, n < 4 ? PENDING : COMPLETED) });
    const result = track(page.manager.pay(ORDER));
    await flush();
    assert.equal(page.source().url, "/stkpush/" + ID + "/events?paymentToken=" + encodeURIComponent(TOKEN));
    await page.advance(12000);
    assert.equal(result.value.state, "completed");
    assert.equal(page.polls().length, 4);
    for (const poll of page.polls()) {
      assert.deepEqual(poll.body, { checkoutRequestId: ID, paymentToken: TOKEN });
      assert.equal(poll.init.method, "POST");
      assert.equal(poll.init.cache, "no-store");
    }
    assert.match(page.navigations[0], /&paymentToken=tok%2F%2B%3D1$/);
  });

  test("without a token in the push answer: the id alone, no empty parameter", async (t) => {
    const odd = "ws_CO_1/2?3";
    const page = setup(t, {
      push: () => reply(200, { success: true, checkoutRequestId: odd }),
      status: () => reply(200, { ...COMPLETED, checkoutRequestId: odd }),
    });
    const result = track(page.manager.pay(ORDER));
    await flush();
    assert.equal(page.source().url, "/stkpush/ws_CO_1%2F2%3F3/events");
    await page.advance(3000);
    assert.deepEqual(page.polls()[0].body, { checkoutRequestId: odd });
    assert.equal(result.value.paymentToken, "");
    assert.deepEqual(page.navigations, ["/confirmation.html?checkoutRequestId=ws_CO_1%2F2%3F3"]);
  });
});

describe("stop()", () => {
  test("ends the stream, the polling and the flow, without navigating", async (t) => {
    const page = setup(t);
    const result = track(page.manager.pay(ORDER));
    await page.advance(6000);
    assert.equal(page.polls().length, 2);
    page.manager.stop();
    await flush();
    assert.equal(result.value.state, "idle");
    assert.equal(result.value.stopped, true);
    assert.equal(page.source().closed, true);
    assert.equal(page.manager.busy, false);
    assert.equal(page.manager.watch, null);
    await page.advance(60000);
    assert.equal(page.polls().length, 2);
    assert.deepEqual(page.navigations, []);
    page.source().emitStatus(COMPLETED); // a straggler from the closed stream
    await flush();
    assert.deepEqual(page.navigations, []);
  });

  test("aborts a status request in flight", async (t) => {
    let signal;
    const page = setup(t, {
      status: (call) => {
        signal = call.init.signal;
        return new Promise(() => {});
      },
    });
    const result = track(page.manager.pay(ORDER));
    await page.advance(3000);
    assert.equal(signal.aborted, false);
    page.manager.stop();
    assert.equal(signal.aborted, true);
    await flush();
    assert.equal(result.value.state, "idle");
  });

  test("with nothing in flight does nothing", () => {
    const manager = new MpesaPaymentManager({ EventSourceImpl: undefined });
    manager.stop();
    assert.equal(manager.state, "idle");
  });
});

describe("the pure helpers", () => {
  test("the phone and the amount, with the server's messages", () => {
    assert.deepEqual(validateCheckout({ phone: "0712 345-678", amount: "1500" }, 150000),
      { ok: true, phone: "254712345678", amount: 1500, errors: {} });
    assert.deepEqual(validateCheckout({ phone: "12345", amount: "0" }, 150000), {
      ok: false, phone: null, amount: null,
      errors: { phone: "Invalid phone number format", amount: "Amount must be between 1 and 150,000" },
    });
  });

  test("amounts: whole shillings from 1 to the maximum", () => {
    for (const [raw, expected] of [["1", 1], [" 150000 ", 150000], ["150001", null], ["0", null], ["10.50", null],
                                   ["1e3", null], ["-5", null], ["", null], [null, null], [undefined, null],
                                   ["99999999999999999999", null], [42, 42]]) {
      assert.equal(parseAmount(raw, 150000), expected, `parseAmount(${JSON.stringify(raw)})`);
    }
    assert.equal(amountMessage(70000), "Amount must be between 1 and 70,000");
  });

  test("the token query parameter", () => {
    assert.equal(tokenQuery("?", "a b/c"), "?paymentToken=a%20b%2Fc");
    assert.equal(tokenQuery("&", ""), "");
    assert.equal(tokenQuery("&", null), "");
    assert.equal(tokenQuery("&", 42), "");
  });

  test("the events and receipt URLs (the timeout's link and the receipt page's stream use them too)", () => {
    assert.equal(statusEventsUrl("ws_CO_1/2", "t k"), "/stkpush/ws_CO_1%2F2/events?paymentToken=t%20k");
    assert.equal(statusEventsUrl("ws_CO_1", ""), "/stkpush/ws_CO_1/events");
    assert.equal(confirmationPageUrl("ws_CO_1&x=1", "t&k"),
                 "/confirmation.html?checkoutRequestId=ws_CO_1%26x%3D1&paymentToken=t%26k");
    assert.equal(confirmationPageUrl("ws_CO_1", undefined), "/confirmation.html?checkoutRequestId=ws_CO_1");
  });

  test("the waiting message", () => {
    assert.equal(waitingMessage(12900), "Check your phone: enter your M-Pesa PIN to pay KES 12,900");
  });
});
