// Test doubles for the browser modules under Node's test runner: a scripted fetch, an
// EventSource the test drives, and a clock stepped with node:test's mock timers.

/** A fetch Response as far as the pages use one: ok, status, headers.get() and json(). */
export function reply(status, data, headers = {}) {
  const lower = new Map(Object.entries(headers).map(([name, value]) => [name.toLowerCase(), String(value)]));
  return {
    ok: status >= 200 && status < 300,
    status,
    headers: { get: (name) => lower.get(String(name).toLowerCase()) ?? null },
    json: async () => {
      if (data === undefined) throw new SyntaxError("Unexpected token < in JSON"); // an HTML error page
      return structuredClone(data);
    },
  };
}

/** An EventSource the test drives: emitStatus(body), emitError(); records close(). */
export class FakeEventSource {
  static instances = [];

  constructor(url) {
    this.url = url;
    this.closed = false;
    this.listeners = new Map();
    FakeEventSource.instances.push(this);
  }

  addEventListener(type, listener) {
    if (!this.listeners.has(type)) this.listeners.set(type, []);
    this.listeners.get(type).push(listener);
  }

  close() {
    this.closed = true;
  }

  emit(type, event) {
    for (const listener of this.listeners.get(type) || []) listener(event);
  }

  emitStatus(body) {
    this.emit("status", { data: typeof body === "string" ? body : JSON.stringify(body) });
  }

  emitError() {
    this.emit("error", {});
  }
}

/**
 * A fetch that records every call ({ url, init, body }) and answers with `route(call, calls)`:
 * a reply(), a promise of one, or a throw (a network error).
 */
export function scriptedFetch(route) {
  const calls = [];
  const fetchImpl = async (url, init = {}) => {
    const call = { url, init, body: init.body ? JSON.parse(init.body) : undefined };
    calls.push(call);
    return route(call, calls);
  };
  return { fetchImpl, calls };
}

/** Run every pending promise callback (setImmediate is not faked, so it comes after them all). */
export function flush() {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * Move the faked clock on by `ms`, in small steps with the promise callbacks run between them,
 * so that a timer set after an awaited fetch is set at the time it would be in a browser.
 */
export async function advance(timers, ms, step = 50) {
  await flush();
  for (let done = 0; done < ms; done += step) {
    timers.tick(Math.min(step, ms - done));
    await flush();
  }
}
