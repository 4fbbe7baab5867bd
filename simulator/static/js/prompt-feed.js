// The simulator's prompt feed for its pages: server-sent events from /simulator/api/events, with
// polling of /simulator/api/prompts while the stream is down, and reconnection with back-off.

/**
 * followPrompts({streamUrl, pollUrl, pollMs, onPrompts, onStatus})
 *   onPrompts(list) gets the prompt list (newest first) on every change;
 *   onStatus(state) gets "live" (stream open), "polling" (stream down, polls answer) or "offline".
 */
export function followPrompts({ streamUrl, pollUrl, pollMs = 1000, onPrompts, onStatus }) {
  let source = null;
  let pollTimer = 0;
  let polling = false;
  let retryTimer = 0;
  let retryDelay = 2000;
  const status = (state) => { if (onStatus) onStatus(state); };

  async function pollOnce() {
    if (polling) return;
    polling = true;
    try {
      const resp = await fetch(pollUrl, { cache: "no-store", headers: { Accept: "application/json" } });
      if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
      onPrompts(await resp.json());
      status("polling");
    } catch (err) {
      status("offline");
    } finally {
      polling = false;
    }
  }

  function startPolling() {
    if (pollTimer) return;
    pollOnce();
    pollTimer = window.setInterval(pollOnce, pollMs);
  }

  function stopPolling() {
    window.clearInterval(pollTimer);
    pollTimer = 0;
  }

  function startStream() {
    retryTimer = 0;
    if (!("EventSource" in window)) {
      startPolling();
      return;
    }
    const stream = new EventSource(streamUrl);
    source = stream;
    stream.addEventListener("open", () => {
      stopPolling();
      retryDelay = 2000;
      status("live");
    });
    stream.addEventListener("prompts", (event) => {
      let data;
      try {
        data = JSON.parse(event.data);
      } catch (err) {
        return;
      }
      onPrompts(data);
    });
    stream.addEventListener("error", () => {
      stream.close();
      if (source === stream) source = null;
      startPolling();
      if (!retryTimer) {
        retryTimer = window.setTimeout(startStream, retryDelay);
        retryDelay = Math.min(retryDelay * 2, 30000);
      }
    });
  }

  window.addEventListener("pagehide", () => {
    if (source) source.close();
    source = null;
    stopPolling();
  });
  window.addEventListener("pageshow", (event) => {
    if (event.persisted && !source) startStream(); // back from the back/forward cache
  });

  startStream();
}
