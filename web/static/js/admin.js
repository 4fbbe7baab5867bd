// The operator's pages: follow a webhook event that is being sent (after Resend) until it is
// delivered or has failed again, then show the page anew with its attempts. Everything else on
// these pages is plain HTML and works without this script.

const POLL_MS = 1000;
const GIVE_UP_MS = 120_000;

function followEvent(marker) {
  const url = marker.dataset.url;
  const started = Date.now();
  const attempts = document.getElementById("event-attempts");
  const tick = async () => {
    if (Date.now() - started > GIVE_UP_MS) return;
    try {
      const response = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
      if (response.ok) {
        const event = await response.json();
        if (attempts) attempts.textContent = String(event.attempts);
        if (event.state !== "pending") {
          window.location.replace(window.location.pathname);  // the page with the outcome and its attempts
          return;
        }
      }
    } catch {
      // the server is restarting, or the network dropped: try again at the next tick
    }
    window.setTimeout(tick, POLL_MS);
  };
  window.setTimeout(tick, POLL_MS);
}

const marker = document.getElementById("event-state");
if (marker && marker.dataset.state === "pending") followEvent(marker);
