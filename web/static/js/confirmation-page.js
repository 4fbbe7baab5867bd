// The confirmation page: print button, the cart reset after a paid order, and a refresh once a
// pending payment settles (or once a confirmed payment's receipt number arrives).

import { clearPaidCart } from "./cart.js";
import { followHistory, statusEventsUrl } from "./payment.js";

function readData() {
  try {
    return JSON.parse(document.getElementById("confirmation-data").textContent);
  } catch {
    return null;
  }
}

const data = readData();

document.getElementById("print-button")?.addEventListener("click", () => window.print());

// Shown in place of the pay page, this page shares its history entries: Back loads the pay page.
followHistory();

if (data && data.status === "completed") {
  clearPaidCart(data.orderId); // the cart's order is paid: the next visit starts a new cart
}

/**
 * Reload the page when the payment's state moves on. `changed(body)` says whether a status body
 * is news. Listens to the event stream and polls as the fallback; gives up after `maxChecks`.
 */
function reloadWhen(changed, { intervalMs, maxChecks }) {
  const id = data.checkoutRequestId;
  const token = data.paymentToken || "";
  let done = false;
  let checks = 0;
  let source = null;

  const finish = () => {
    if (done) return;
    done = true;
    source?.close();
    window.location.reload();
  };

  if (typeof window.EventSource === "function") {
    source = new EventSource(statusEventsUrl(id, token));
    source.addEventListener("status", (event) => {
      try {
        if (changed(JSON.parse(event.data))) finish();
      } catch {
        // ignore a malformed event
      }
    });
    source.addEventListener("error", () => {
      source?.close();
      source = null;
    });
  }

  const poll = async () => {
    if (done) return;
    checks += 1;
    try {
      const response = await fetch("/stkpush/status", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify(token ? { checkoutRequestId: id, paymentToken: token } : { checkoutRequestId: id }),
        cache: "no-store",
      });
      if (response.ok && changed(await response.json())) {
        finish();
        return;
      }
    } catch {
      // offline for a moment: try again at the next tick
    }
    if (!done && checks < maxChecks) setTimeout(poll, intervalMs);
  };
  setTimeout(poll, intervalMs);
}

if (data && data.checkoutRequestId) {
  const intervalMs = Math.max(1000, Number(data.pollIntervalMs) || 3000);
  if (data.status === "pending") {
    // Pending payments are settled by the server within minutes (callback, query or local timeout).
    reloadWhen((body) => body && body.status && body.status !== "pending",
               { intervalMs, maxChecks: Math.ceil(600000 / intervalMs) });
  } else if (data.status === "completed" && !data.hasReceipt) {
    reloadWhen((body) => body && body.status === "completed" && Boolean(body.MpesaReceiptNumber),
               { intervalMs: Math.max(intervalMs, 5000), maxChecks: 24 });
  }
}
