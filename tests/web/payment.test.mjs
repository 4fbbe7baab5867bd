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
  describeFailure,
  newIdempotencyKey,
  openInPlace,
  orderEventsUrl,
  orderStatusUrl,
  parseAmount,
  retryAfterSeconds,
  statusEventsUrl,
  tokenQuery,
  validateCheckout,
  waitText,
  waitingMessage,
} from "../../web/static/js/payment.js";
import { FakeEventSource, advance, flush, reply, scriptedFetch } from "./fakes.mjs";

const ID = "ws_CO_191220191020363925";
const TOKEN = "tok/+=1"; // characters that must be encoded in a URL
const ORDER = { phone: "254708374149", amount: 1500, description: "Demo Shop", accountReference: "CART_K3F9Q2" };
const PENDING = { status: "pending", checkoutRequestId: ID };
const COMPLETED = { status: "completed", checkoutRequestId: ID, MpesaReceiptNumber: "NLJ7RT61SV" };

const ORDER_ID = "ord_AAAAAAAAAAAAAAAAAAAAA1";
const CREATED = { success: true, orderId: ORDER_ID, amount: 12900, currency: "KES", status: "open",
                  reference: "DEMO-1A2B3C", items: [{ name: "DJ booking", quantity: 1, unitPrice: 9675, total: 9675 }] };
const ORDER_PENDING = { success: true, status: "pending", checkoutRequestId: ID, amount: 12900 };

const pushAccepted = (extra = {}) =>
  reply(200, { success: true, checkoutRequestId: ID, paymentToken: TOKEN, message: "Check your phone", ...extra });

/**
 * A manager wired to fakes, with the clock faked (setTimeout and clearTimeout).
 * `push(call)` answers POST /stkpush; `status(call, n)` answers the n-th status poll (1-based).
 */
function setup(t, { push = () => pushAccepted(), status = () => reply(200, PENDING), eventSource = FakeEventSource,
                    order = () => reply(201, CREATED), orderStatus = () => reply(200, ORDER_PENDING),
                    ...options } = {}) {
  t.mock.timers.enable({ apis: ["setTimeout", "Date"] });
  const updates = [];
  const navigations = [];
  let polls = 0;
  let orderPolls = 0;
  const { fetchImpl, calls } = scriptedFetch((call, all) => {
    if (call.url === "/stkpush") return push(call, all);
    if (call.url === "/stkpush/status") return status(call, ++polls);
    if (call.url === "/catalogue/orders") return order(call, all);
    if (call.url === `/checkout/${ORDER_ID}/status`) return orderStatus(call, ++orderPolls);
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
    orders: () => calls.filter((call) => call.url === "/catalogue/orders"),
    orderPolls: () => calls.filter((call) => call.url === `/checkout/${ORDER_ID}/status`),
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
  test("every 3 s, 40 polls in 120 s (the window), then it keeps watching", async (t) => {
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
      assert.equal(page.manager.state, n < 40 ? "waiting" : "watching");
    }
    await flush();
    // The window is over, but the prompt may still be on the phone: no result yet, no Try Again.
    assert.equal(result.done, false);
    assert.equal(page.manager.busy, true);
    assert.deepEqual(page.updates.at(-1), {
      state: "watching", message: MESSAGES.watching, checkoutRequestId: ID, paymentToken: TOKEN,
      amount: ORDER.amount, phone: ORDER.phone,
    });
    assert.deepEqual(page.states(), ["sending", "waiting", "watching"]);
    assert.deepEqual(page.navigations, []);
    page.manager.stop();
  });

  test("after the window: a poll every 15 s until watchLimitMs, then the timeout state and no more polls",
    async (t) => {
      const page = setup(t); // slowPollIntervalMs: 5 x 3 s; watchLimitMs: 30 min
      assert.equal(page.manager.slowPollIntervalMs, 15000);
      assert.equal(page.manager.maxSlowPolls, 112); // (1,800 s - 120 s) / 15 s
      const result = track(page.manager.pay(ORDER));
      await page.advance(120000);
      assert.equal(page.polls().length, 40);
      await page.advance(14950);
      assert.equal(page.polls().length, 40, "no poll sooner than 15 s after the window");
      await page.advance(50);
      assert.equal(page.polls().length, 41);
      await page.advance(15000);
      assert.equal(page.polls().length, 42);
      assert.equal(result.done, false);
      await page.advance(1800000 - 150000 - 50);
      assert.equal(page.polls().length, 151);
      assert.equal(result.done, false);
      await page.advance(50);
      assert.equal(page.polls().length, 152);
      assert.equal(result.done, true);
      assert.equal(result.value.state, "timeout");
      assert.equal(result.value.message, MESSAGES.timeout);
      // The timeout keeps what the "check this payment" link needs.
      assert.equal(result.value.checkoutRequestId, ID);
      assert.equal(result.value.paymentToken, TOKEN);
      assert.equal(page.updates.at(-1).state, "timeout");
      assert.equal(page.manager.busy, false);
      assert.equal(page.source().closed, true);
      await page.advance(600000);
      assert.equal(page.polls().length, 152, "nothing after the last poll");
      assert.deepEqual(page.navigations, []);
    });

  test("a success after the window (the prompt paid late) lands on the receipt", async (t) => {
    const page = setup(t, { status: (call, n) => reply(200, n < 43 ? PENDING : COMPLETED) });
    const result = track(page.manager.pay(ORDER));
    await page.advance(120000 + 2 * 15000);
    assert.equal(page.manager.state, "watching");
    assert.equal(result.done, false);
    await page.advance(15000);
    assert.equal(result.value.state, "completed");
    assert.deepEqual(page.states(), ["sending", "waiting", "watching", "completed"]);
    assert.deepEqual(page.navigations, [
      "/confirmation.html?checkoutRequestId=" + ID + "&paymentToken=" + encodeURIComponent(TOKEN),
    ]);
  });

  test("a success on the stream after the window counts too, at once", async (t) => {
    const page = setup(t, { pollIntervalMs: 500, pollTimeoutMs: 3000 });
    const result = track(page.manager.pay(ORDER));
    await page.advance(4000);
    assert.equal(page.manager.state, "watching");
    page.source().emitStatus(COMPLETED);
    await flush();
    assert.equal(result.value.state, "completed");
    assert.equal(page.navigations.length, 1);
  });

  test("a failure after the window: failed, with the reason", async (t) => {
    const expired = { status: "failed", resultCode: "1037", message: "The phone could not be reached" };
    const page = setup(t, { pollIntervalMs: 500, pollTimeoutMs: 3000,
                            status: (call, n) => reply(200, n < 8 ? PENDING : expired) });
    const result = track(page.manager.pay(ORDER));
    await page.advance(3000 + 2500 * 2);
    assert.equal(result.value.state, "failed");
    assert.equal(result.value.resultCode, "1037");
    assert.deepEqual(page.states(), ["sending", "waiting", "watching", "failed"]);
    assert.equal(page.manager.busy, false);
  });

  test("watchLimitMs no longer than the window: the timeout comes at the window's end", async (t) => {
    const page = setup(t, { pollIntervalMs: 500, pollTimeoutMs: 3000, watchLimitMs: 3000 });
    assert.equal(page.manager.maxSlowPolls, 0);
    const result = track(page.manager.pay(ORDER));
    await page.advance(3000);
    assert.equal(page.polls().length, 6);
    assert.equal(result.value.state, "timeout");
    assert.deepEqual(page.states(), ["sending", "waiting", "timeout"]);
  });

  test("the configured cadence: 0.5 s for 30 s is 60 polls, then one every 2.5 s", async (t) => {
    const page = setup(t, { pollIntervalMs: 500, pollTimeoutMs: 30000 });
    assert.equal(page.manager.maxPolls, 60);
    const result = track(page.manager.pay(ORDER));
    await page.advance(29950);
    assert.equal(page.polls().length, 59);
    assert.equal(page.manager.state, "waiting");
    await page.advance(50);
    assert.equal(page.polls().length, 60);
    assert.equal(page.manager.state, "watching");
    await page.advance(2450);
    assert.equal(page.polls().length, 60);
    await page.advance(50);
    assert.equal(page.polls().length, 61);
    assert.equal(result.done, false);
    page.manager.stop();
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

  test("no answer at all: sent once more with the same Idempotency-Key, then the server could not be reached",
    async (t) => {
      const page = setup(t, { push: () => { throw new TypeError("Failed to fetch"); } });
      const result = track(page.manager.pay(ORDER));
      await flush();
      assert.equal(page.pushes().length, 1);
      await page.advance(950);
      assert.equal(page.pushes().length, 1);
      await page.advance(50);
      assert.equal(page.pushes().length, 2);
      assert.deepEqual(result.value, { state: "failed", message: MESSAGES.unreachable });
      const [first, second] = page.pushes().map((call) => call.init.headers["Idempotency-Key"]);
      assert.match(first, /^pay-[0-9a-f]{32}$/);
      assert.equal(second, first);
    });

  test("an answer lost once: the second send's answer is the answer", async (t) => {
    const page = setup(t, {
      push: (call, calls) => {
        if (calls.filter((c) => c.url === "/stkpush").length === 1) throw new TypeError("Failed to fetch");
        return pushAccepted();
      },
    });
    const result = track(page.manager.pay(ORDER));
    await page.advance(1000);
    assert.equal(page.manager.state, "waiting");
    assert.equal(page.pushes().length, 2);
    page.manager.stop();
    await flush();
    assert.equal(result.value.state, "idle");
  });

  test("each pay() has its own Idempotency-Key", async (t) => {
    const page = setup(t, { push: () => reply(503, { success: false, message: "M-Pesa is busy" }) });
    await page.manager.pay(ORDER);
    await page.manager.pay(ORDER);
    const keys = page.pushes().map((call) => call.init.headers["Idempotency-Key"]);
    assert.equal(keys.length, 2);
    assert.notEqual(keys[0], keys[1]);
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

describe("orders", () => {
  const BY_ORDER = { phone: "254708374149", orderId: ORDER_ID, amount: 12900 };
  const receiptOfOrder = "/confirmation.html?checkoutRequestId=" + ID + "&orderId=" + ORDER_ID;

  test("an order's push sends the order and the phone only: the server sets the amount", async (t) => {
    const page = setup(t, { status: () => reply(200, COMPLETED) });
    const result = track(page.manager.pay(BY_ORDER));
    await page.advance(3000);
    assert.deepEqual(page.pushes()[0].body, { orderId: ORDER_ID, phone: BY_ORDER.phone });
    assert.match(page.pushes()[0].init.headers["Idempotency-Key"], /^pay-[0-9a-f]{32}$/);
    assert.equal(result.value.state, "completed");
    // After a push the page holds the payment's token: the receipt is opened with it.
    assert.deepEqual(page.navigations, [
      "/confirmation.html?checkoutRequestId=" + ID + "&paymentToken=" + encodeURIComponent(TOKEN),
    ]);
    assert.equal(page.updates[1].orderId, ORDER_ID);
  });

  test("from the catalogue: the order is created first (its own key), then pushed for", async (t) => {
    const page = setup(t);
    const items = [{ id: "dj-booking", quantity: 1 }, { id: "speaker-hire", quantity: 1 }];
    const done = page.manager.pay({ phone: BY_ORDER.phone, items });
    await flush();
    assert.deepEqual(page.orders().map((call) => call.body), [{ items }]);
    assert.deepEqual(page.pushes()[0].body, { orderId: ORDER_ID, phone: BY_ORDER.phone });
    const [orderKey, pushKey] = [page.orders()[0], page.pushes()[0]].map((c) => c.init.headers["Idempotency-Key"]);
    assert.ok(orderKey && pushKey && orderKey !== pushKey);
    const created = page.updates.find((update) => update.order);
    assert.deepEqual([created.state, created.orderId, created.amount], ["sending", ORDER_ID, 12900]);
    assert.equal(page.updates.at(-1).state, "waiting");
    assert.equal(page.updates.at(-1).message, "Check your phone: enter your M-Pesa PIN to pay KES 12,900");
    page.manager.stop();
    await done;
  });

  test("an order refused (429): limited, with when to try again, and no push", async (t) => {
    const page = setup(t, {
      order: () => reply(429, { success: false, message: "Too many orders" }, { "Retry-After": "42" }),
    });
    const final = await page.manager.pay({ phone: BY_ORDER.phone, items: [{ id: "dj-booking", quantity: 1 }] });
    assert.equal(final.state, "limited");
    assert.equal(final.retryAfterSeconds, 42);
    assert.equal(final.retryAt, Date.now() + 42000);
    assert.equal(page.pushes().length, 0);
    assert.equal(page.manager.busy, false);
  });

  test("409 'waiting on the phone': follows the order's open payment instead of failing", async (t) => {
    const page = setup(t, {
      push: () => reply(409, { success: false, message: "A payment for this order is waiting on the phone",
                               checkoutRequestId: ID }),
      orderStatus: (call, n) => reply(200, n < 2 ? ORDER_PENDING : { ...COMPLETED, amount: 12900 }),
    });
    const result = track(page.manager.pay(BY_ORDER));
    await flush();
    assert.equal(page.source().url, `/checkout/${ORDER_ID}/events`);
    assert.deepEqual(page.updates.at(-1), {
      state: "waiting", orderId: ORDER_ID, amount: 12900, phone: BY_ORDER.phone,
      message: "A payment request for this order is already on your phone: enter your M-Pesa PIN there to pay KES 12,900",
    });
    await page.advance(3000);
    assert.deepEqual(page.orderPolls()[0].body, {});
    assert.equal(page.orderPolls()[0].init.method, "POST");
    assert.equal(result.done, false);
    await page.advance(3000);
    assert.equal(result.value.state, "completed");
    assert.equal(page.polls().length, 0, "no token: the payment is followed by its order");
    assert.deepEqual(page.navigations, [receiptOfOrder]);
  });

  test("409 'already paid': follows the order to its receipt", async (t) => {
    const page = setup(t, {
      push: () => reply(409, { success: false, message: "This order is already paid", orderStatus: "paid" }),
      orderStatus: () => reply(200, COMPLETED),
    });
    const result = track(page.manager.pay(BY_ORDER));
    await flush();
    assert.equal(page.updates.at(-1).message, MESSAGES.alreadyPaid);
    page.source().emitStatus(COMPLETED);
    await flush();
    assert.equal(result.value.state, "completed");
    assert.deepEqual(page.navigations, [receiptOfOrder]);
  });

  test("a 409 of a payment without an order (free amount) stays a failure with the server's words", async (t) => {
    const message = "A payment request is already waiting on this phone. Complete or cancel it, then try again in a minute.";
    const page = setup(t, { push: () => reply(409, { success: false, message, errorCode: "500.001.1001" }) });
    const final = await page.manager.pay(ORDER);
    assert.deepEqual([final.state, final.message], ["failed", message]);
    assert.equal(page.orderPolls().length, 0);
  });

  test("follow({ orderId }) after a reload: waits, then watches after the window, like a push", async (t) => {
    const page = setup(t, {
      pollIntervalMs: 500, pollTimeoutMs: 3000,
      orderStatus: (call, n) => reply(200, n < 3 ? { success: true, status: "none" } : n < 9 ? ORDER_PENDING : COMPLETED),
    });
    const result = track(page.manager.follow({ orderId: ORDER_ID }, { amount: 12900 }));
    await flush();
    assert.deepEqual(page.updates[0], { state: "waiting", orderId: ORDER_ID, amount: 12900, phone: undefined,
                                        message: "Check your phone: enter your M-Pesa PIN to pay KES 12,900" });
    assert.equal(page.manager.busy, true);
    const again = track(page.manager.pay(BY_ORDER));
    await flush();
    assert.deepEqual(again, { done: true, value: null }, "no push while the order's payment is followed");
    await page.advance(3000);
    assert.equal(page.manager.state, "watching");
    await page.advance(2500 * 3);
    assert.equal(result.value.state, "completed");
    assert.deepEqual(page.states(), ["waiting", "watching", "completed"]);
    assert.deepEqual(page.navigations, [receiptOfOrder]);
    assert.equal(page.pushes().length, 0);
  });

  test("504 (the push's answer lost): failed with the server's words, and a success still shows", async (t) => {
    const message = "We could not confirm the payment request with M-Pesa. Please check your phone before trying again.";
    const page = setup(t, {
      push: () => reply(504, { success: false, message }),
      orderStatus: (call, n) => reply(200, n < 2 ? { success: true, status: "none" } : COMPLETED),
    });
    const final = await page.manager.pay(BY_ORDER);
    assert.deepEqual([final.state, final.message, final.orderId], ["failed", message, ORDER_ID]);
    assert.equal(final.lateTarget, undefined);
    assert.equal(page.manager.busy, false);
    await page.advance(15000);
    assert.equal(page.orderPolls().length, 1);
    assert.deepEqual(page.navigations, []);
    await page.advance(15000);
    assert.deepEqual(page.navigations, [receiptOfOrder]);
    assert.equal(page.updates.at(-1).state, "completed");
    assert.equal(page.updates.at(-1).late, true);
  });
});

describe("429: when the customer can try again", () => {
  test("limited, with Retry-After's seconds and the moment; nothing followed; a later pay() is sent", async (t) => {
    let n = 0;
    const page = setup(t, {
      push: () => (++n === 1
        ? reply(429, { success: false, message: "Too many payment requests to this phone." }, { "Retry-After": "7" })
        : pushAccepted()),
    });
    const final = await page.manager.pay(ORDER);
    assert.deepEqual(final, { state: "limited", message: MESSAGES.limited, retryAfterSeconds: 7,
                              retryAt: Date.now() + 7000, httpStatus: 429 });
    assert.equal(page.manager.busy, false);
    assert.equal(FakeEventSource.instances.length, 0);
    await page.advance(7000);
    const again = page.manager.pay(ORDER);
    await flush();
    assert.equal(page.manager.state, "waiting");
    page.manager.stop();
    await again;
  });

  test("409 with Retry-After (a lost answer's prompt may still be paid): limited, in the server's words", async (t) => {
    const words = "The last payment request may still be on the phone: if it is, enter your M-Pesa PIN there.";
    const page = setup(t, {
      push: () => reply(409, { success: false, message: words, orderStatus: "open", retryAfterSeconds: 90 },
                        { "Retry-After": "90" }),
    });
    const final = await page.manager.pay({ phone: "254708374149", orderId: ORDER_ID });
    assert.equal(final.state, "limited");
    assert.equal(final.message, words);
    assert.equal(final.httpStatus, 409);
    assert.equal(final.retryAt, Date.now() + 90_000);
    assert.equal(FakeEventSource.instances.length, 0);
    assert.ok(page.manager.lateWatch, "the order is still watched quietly: that prompt may be paid");
    page.manager.stop();
  });

  test("Retry-After as seconds, as a date, or missing", () => {
    assert.equal(retryAfterSeconds("42"), 42);
    assert.equal(retryAfterSeconds("0"), 1);
    assert.equal(retryAfterSeconds(" 5 "), 5);
    const now = Date.parse("2026-01-01T10:00:00Z");
    assert.equal(retryAfterSeconds("Thu, 01 Jan 2026 10:01:30 GMT", { now }), 90);
    assert.equal(retryAfterSeconds(null), 60);
    assert.equal(retryAfterSeconds("soon", { fallback: 30 }), 30);
  });

  test("the countdown's words", () => {
    assert.equal(waitText(42), "42 s");
    assert.equal(waitText(0.2), "1 s");
    assert.equal(waitText(0), "0 s");
    assert.equal(waitText(60), "1:00 min");
    assert.equal(waitText(125), "2:05 min");
  });
});

describe("a failure in the customer's words, with what to do next", () => {
  const OUTCOMES = {
    reasons: { 1037: "The payment request has expired", timeout: "The payment request has expired" },
    next: { 1037: "Check that your phone is on, then tap Try Again.", 1: "Top up, then tap Try Again." },
    defaultNext: "Tap Try Again.",
  };

  test("the table replaces a no-answer's reason and adds the next step", async (t) => {
    const page = setup(t, {
      outcomes: OUTCOMES,
      status: () => reply(200, { status: "failed", resultCode: "1037", message: "The phone could not be reached" }),
    });
    const result = track(page.manager.pay(ORDER));
    await page.advance(3000);
    const final = result.value;
    assert.equal(final.message, "The payment request has expired");
    assert.equal(final.next, "Check that your phone is on, then tap Try Again.");
    assert.equal(final.resultCode, "1037");
  });

  test("describeFailure: the server's reason when the table has none; the default next step", () => {
    assert.deepEqual(describeFailure({ status: "failed", resultCode: "1", message: "Insufficient M-Pesa balance" }, OUTCOMES),
                     { message: "Insufficient M-Pesa balance", next: "Top up, then tap Try Again." });
    assert.deepEqual(describeFailure({ status: "failed", resultCode: "2001", message: "Wrong PIN" }, OUTCOMES),
                     { message: "Wrong PIN", next: "Tap Try Again." });
    assert.deepEqual(describeFailure({ status: "failed", message: "" }, null), { message: MESSAGES.failed, next: "" });
  });

  test("given up locally ('timeout'): failed, Try Again possible, and a late success still opens the receipt",
    async (t) => {
      const page = setup(t, {
        outcomes: OUTCOMES,
        status: (call, n) => reply(200, n < 2 ? { status: "failed", resultCode: "timeout", message: "not in time" }
          : n < 3 ? { status: "failed", resultCode: "timeout", message: "not in time" } : COMPLETED),
      });
      const result = track(page.manager.pay(ORDER));
      await page.advance(3000);
      const final = result.value;
      assert.deepEqual([final.state, final.message], ["failed", "The payment request has expired"]);
      assert.equal(page.manager.busy, false);
      assert.ok(page.manager.lateWatch, "still watching, quietly");
      await page.advance(15000);
      assert.deepEqual(page.navigations, []);
      await page.advance(15000);
      assert.equal(page.updates.at(-1).state, "completed");
      assert.deepEqual(page.navigations, [
        "/confirmation.html?checkoutRequestId=" + ID + "&paymentToken=" + encodeURIComponent(TOKEN),
      ]);
      assert.equal(page.manager.busy, true);
    });

  test("watchLate(): a page loaded after the gateway gave up follows the order quietly to a late success",
    async (t) => {
      const page = setup(t, {
        orderStatus: (call, n) => reply(200, n < 2 ? { status: "failed", resultCode: "timeout", checkoutRequestId: ID }
          : { ...COMPLETED, orderId: ORDER_ID }),
      });
      assert.equal(page.manager.watchLate({ orderId: ORDER_ID }), true);
      assert.deepEqual(page.updates, [], "quiet: the failure shown stays");
      await page.advance(15000);
      assert.equal(page.orderPolls().length, 1);
      assert.deepEqual(page.navigations, []);
      await page.advance(15000);
      assert.equal(page.updates.at(-1).state, "completed");
      assert.equal(page.updates.at(-1).late, true);
      assert.deepEqual(page.navigations, ["/confirmation.html?checkoutRequestId=" + ID + "&orderId=" + ORDER_ID]);
      assert.equal(page.manager.busy, true, "no second push once the receipt is opening");
      assert.equal(page.manager.watchLate({ orderId: ORDER_ID }), false);
    });

  test("Try Again (a new pay()) ends the quiet watch of the old payment", async (t) => {
    const page = setup(t, {
      status: () => reply(200, { status: "failed", resultCode: "timeout", message: "not in time" }),
    });
    track(page.manager.pay(ORDER));
    await page.advance(3000);
    assert.ok(page.manager.lateWatch);
    page.manager.pay(ORDER);
    assert.equal(page.manager.lateWatch, null);
    page.manager.stop();
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

  test("the order's URLs, and the receipt unlocked by the token or else the order", () => {
    assert.equal(orderStatusUrl("ord_a/b"), "/checkout/ord_a%2Fb/status");
    assert.equal(orderEventsUrl("ord_a"), "/checkout/ord_a/events");
    assert.equal(confirmationPageUrl("ws_CO_1", "", "ord_1"), "/confirmation.html?checkoutRequestId=ws_CO_1&orderId=ord_1");
    assert.equal(confirmationPageUrl("ws_CO_1", "t", "ord_1"), "/confirmation.html?checkoutRequestId=ws_CO_1&paymentToken=t");
  });

  test("Idempotency-Keys: 128 random bits, printable", () => {
    const keys = new Set(Array.from({ length: 50 }, newIdempotencyKey));
    assert.equal(keys.size, 50);
    for (const key of keys) assert.match(key, /^pay-[0-9a-f]{32}$/);
  });

  test("the form checks the amount only for the free-amount form", () => {
    assert.deepEqual(validateCheckout({ phone: "0712345678", amount: "" }, 150000, { withAmount: false }),
      { ok: true, phone: "254712345678", amount: null, errors: {} });
  });

  test("the waiting message", () => {
    assert.equal(waitingMessage(12900), "Check your phone: enter your M-Pesa PIN to pay KES 12,900");
  });
});

describe("openInPlace: the receipt without leaving the page, or a plain navigation", () => {
  const URL_ = "/confirmation.html?checkoutRequestId=ws_CO_1&paymentToken=t";

  async function open(answer) {
    const navigations = [];
    const asked = [];
    const shown = await openInPlace(URL_, {
      fetchImpl: async (url, init) => {
        asked.push({ url, init });
        return answer();
      },
      doc: null, // never reached: each of these falls back before touching the page
      win: null,
      assign: (url) => navigations.push(url),
    });
    return { shown, navigations, asked };
  }

  test("a network error navigates to the page instead", async () => {
    const { shown, navigations, asked } = await open(() => {
      throw new TypeError("Failed to fetch");
    });
    assert.equal(shown, false);
    assert.deepEqual(navigations, [URL_]);
    assert.equal(asked[0].url, URL_);
    assert.equal(asked[0].init.cache, "no-store");
  });

  for (const [what, answer] of [
    ["a 404 (the page says so itself)", () => reply(404, undefined, { "Content-Type": "text/html" })],
    ["a 429", () => reply(429, undefined, { "Content-Type": "text/html", "Retry-After": "30" })],
    ["a 500", () => reply(500, undefined, { "Content-Type": "text/html" })],
    ["an answer that is not HTML", () => reply(200, { status: "completed" }, { "Content-Type": "application/json" })],
    ["a redirect", () => ({ ...reply(200, undefined, { "Content-Type": "text/html" }), redirected: true })],
  ]) {
    test(`${what} navigates to the page instead`, async () => {
      const { shown, navigations } = await open(answer);
      assert.equal(shown, false);
      assert.deepEqual(navigations, [URL_]);
    });
  }
});
