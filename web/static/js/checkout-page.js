// Wires the pay page: the order (the shop's, read-only; or the demo catalogue's cart), the phone
// field (and the amount, on the free-amount form), the Pay button labelled with the amount, the
// status region with what to do next, Try Again, the 429 countdown, and (in simulator mode) the
// virtual phone panel.

import { Cart, CartView, noBreakNodes, renderOrderLines, storedCartOrder } from "./cart.js";
import { formatKes, normalisePhone } from "./format.js";
import {
  MpesaPaymentManager,
  confirmationPageUrl,
  describeFailure,
  followHistory,
  openInPlace,
  parseAmount,
  validateCheckout,
  waitText,
} from "./payment.js";

function readConfig() {
  const node = document.getElementById("checkout-config");
  const defaults = { mode: "free", orderId: null, pollIntervalMs: 3000, pollTimeoutMs: 120000,
                     slowPollIntervalMs: 15000, watchLimitMs: 360000, maxAmount: 150000, simulator: false,
                     phonePageBase: null, businessName: "Shop", outcomes: null, catalogue: false };
  try {
    return { ...defaults, ...JSON.parse(node.textContent) };
  } catch {
    return defaults;
  }
}

const config = readConfig();
const $ = (id) => document.getElementById(id);

const form = $("pay-form");
const phoneInput = $("phone");
const amountInput = $("amount"); // the free-amount form only
const payButton = $("pay-button");
const payCard = $("pay-card");
const statusBox = $("payment-status");
const statusText = $("payment-status-text");
const nextText = $("payment-next");
const countdown = $("retry-countdown");
const retryButton = $("retry-button");
const timeoutHelp = $("timeout-help");
const checkLink = $("check-payment-link");
const orderCard = $("order");

const fields = { phone: { input: phoneInput, error: $("phone-error") } };
if (amountInput) fields.amount = { input: amountInput, error: $("amount-error") };

let mode = config.mode; // "order" | "catalogue" | "free" | "none"
let order = null; // the order being paid: GET /checkout/{orderId}, or just created from the cart
let cart = null;
let cartView = null;
// The page renders Pay disabled: before this script runs, a tap would submit the form natively (the
// fields in a GET's query). Until the order (or the catalogue) has loaded there is nothing to pay,
// so it stays disabled until then, rather than take a tap it would have to drop.
const somethingToPay = () => order !== null || cart !== null || mode === "free";

// ---- text: "M-Pesa" never breaks at its hyphen ---------------------------------------------------

/** Set `node`'s text, with every "M-Pesa" in a span that does not wrap (class "nb"). In a flex
 *  box (a button, the status line) the text goes into its one `.words` span: as flex items, the
 *  words and the span would otherwise be laid out as separate blocks. */
function writeText(node, text) {
  node = node.querySelector(":scope > .words") || node;
  node.replaceChildren(...noBreakNodes(text));
}

// ---- page notices (a bad link, nothing to pay, a paid order) --------------------------------------

function notice(heading, text, action = null) {
  $("page-notice").hidden = false;
  writeText($("page-notice-heading"), heading);
  writeText($("page-notice-text"), text);
  const row = $("page-notice-action");
  row.hidden = !action;
  if (action) {
    const link = $("page-notice-link");
    link.href = action.href;
    writeText(link, action.label);
  }
}

function hidePayment() {
  payCard.hidden = true;
  if (orderCard && !order) orderCard.hidden = true;
}

// ---- the order ------------------------------------------------------------------------------------

const orderNodes = () => ({ list: $("order-items"), totalNode: $("order-total"), countNode: $("order-count"),
                            moreButton: $("order-more") });

function amountToPay() {
  if (order) return order.amount;
  if (mode === "catalogue") return cart ? cart.totalKes() : null;
  if (mode === "free") return parseAmount(amountInput.value, config.maxAmount);
  return null;
}

function updatePayButton() {
  const amount = amountToPay();
  if (mode === "catalogue" && !order && cart && cart.totalKes() === 0) {
    writeText(payButton, "Add an item to pay");
    payButton.dataset.empty = "true";
    return;
  }
  delete payButton.dataset.empty;
  writeText(payButton, amount ? `Pay ${formatKes(amount)}` : "Pay with M-Pesa");
}

/** Show an order, read-only (the shop's, or the one just created from the cart). */
function showOrder(data, { fromCart = false } = {}) {
  order = data;
  mode = "order";
  refreshLock();
  if (cartView) {
    cartView.detach();
    cartView = null;
  }
  orderCard.hidden = false;
  orderCard.setAttribute("aria-busy", "false");
  renderOrderLines(data, orderNodes());
  if (data.reference) {
    writeText($("order-reference"), data.reference);
    $("order-reference-row").hidden = false;
  }
  const madeHere = fromCart || (config.catalogue && storedCartOrder() === data.orderId);
  $("order-change-row").hidden = !(madeHere && data.status !== "paid");
  if (fromCart) {
    cart?.rememberOrder(data.orderId);
    // A reload (or the back button) now follows this order instead of making another one.
    history.replaceState(null, "", "/pay.html?orderId=" + encodeURIComponent(data.orderId));
  }
  updatePayButton();
}

async function getJson(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  return { response, data };
}

async function loadOrder(orderId) {
  let reply;
  try {
    reply = await getJson("/checkout/" + encodeURIComponent(orderId));
  } catch {
    reply = null;
  }
  if (!reply || reply.response.status >= 500 || (reply.response.ok && !reply.data)) {
    hidePayment();
    notice("We could not load your order", "Check your connection, then reload this page.",
           { href: window.location.href, label: "Reload" });
    return;
  }
  const { response, data } = reply;
  if (response.status === 429) {
    hidePayment();
    notice("Please wait a moment", "Too many requests from this connection. Wait a minute, then reload this page.",
           { href: window.location.href, label: "Reload" });
    return;
  }
  if (!response.ok) {
    hidePayment();
    notice("This payment link is not valid",
           "We could not find this order. Check the link the shop sent you, or ask the shop for a new one.");
    return;
  }
  showOrder(data);
  const last = data.payment;
  if (data.status === "paid") {
    payCard.hidden = true;
    const receiptUrl = last?.checkoutRequestId ? confirmationPageUrl(last.checkoutRequestId, "", data.orderId) : null;
    notice("This order is paid", "Thank you: M-Pesa has confirmed the payment for this order.",
           receiptUrl ? { href: receiptUrl, label: "See the receipt" } : null);
    return;
  }
  restorePhone(data.orderId);
  if (last && last.status === "pending") {
    // A reload while the prompt is on the phone: follow that payment, do not send another.
    payment.follow({ orderId: data.orderId }, { amount: data.amount, phone: normalisePhone(phoneInput.value) });
  } else if (last && last.status === "failed") {
    const { message, next } = describeFailure(last, config.outcomes);
    render({ state: "failed", message, next, resultCode: last.resultCode, orderId: data.orderId });
    // Given up by the gateway, not refused by M-Pesa: a PIN entered late still pays, and this page
    // (reloaded since) shows it, as the page that pushed would have.
    if (String(last.resultCode) === "timeout") payment.watchLate({ orderId: data.orderId });
  }
}

async function loadCatalogue() {
  let reply;
  try {
    reply = await getJson("/catalogue");
  } catch {
    reply = null;
  }
  if (!reply || !reply.response.ok || !reply.data) {
    hidePayment();
    notice("The shop is not available", "We could not load the shop's items. Check your connection, then reload.",
           { href: "/pay.html", label: "Reload" });
    return;
  }
  cart = new Cart({ catalogue: reply.data });
  orderCard.setAttribute("aria-busy", "false");
  refreshLock();
  cartView = new CartView(cart, orderNodes());
  cart.subscribe(updatePayButton);
  updatePayButton();
}

// The phone typed for an order, kept for this tab: a reload or Try Again does not ask for it again.
function rememberPhone(orderId, msisdn) {
  try {
    window.sessionStorage.setItem("checkout.phone." + orderId, msisdn);
  } catch {
    // storage disabled: the customer types it again
  }
}

function restorePhone(orderId) {
  try {
    const msisdn = window.sessionStorage.getItem("checkout.phone." + orderId);
    if (msisdn && !phoneInput.value && normalisePhone(msisdn)) {
      phoneInput.value = "0" + msisdn.slice(3);
      updatePhoneLink();
    }
  } catch {
    // nothing kept
  }
}

// ---- field validation -----------------------------------------------------------------------------

function showFieldError(name, message) {
  const field = fields[name];
  if (!field) return;
  field.error.textContent = message || "";
  field.error.hidden = !message;
  if (message) field.input.setAttribute("aria-invalid", "true");
  else field.input.removeAttribute("aria-invalid");
}

function validate() {
  return validateCheckout({ phone: phoneInput.value, amount: amountInput?.value }, config.maxAmount,
                          { withAmount: mode === "free" });
}

// Errors appear on submit (not on blur: a message appearing as focus leaves a field would move
// the Pay button from under the pointer mid-click). Once shown, they are re-checked as the
// customer types, so they clear as soon as the value is right.
for (const name of Object.keys(fields)) {
  const { input, error } = fields[name];
  input.addEventListener("input", () => {
    if (error.textContent) showFieldError(name, validate().errors[name]);
  });
}
amountInput?.addEventListener("input", updatePayButton);

// ---- virtual phone (simulator mode) ---------------------------------------------------------------

const phonePanel = $("phone-panel");
const openPhone = $("open-phone");
const phoneFrame = $("phone-frame");
const phoneUrl = (msisdn) => config.phonePageBase + encodeURIComponent(msisdn);

function updatePhoneLink() {
  if (!phonePanel || !openPhone || !config.phonePageBase) return;
  const msisdn = normalisePhone(phoneInput.value);
  const hint = $("open-phone-hint");
  if (msisdn) {
    openPhone.href = phoneUrl(msisdn);
    openPhone.removeAttribute("aria-disabled");
    openPhone.classList.remove("is-disabled");
    if (hint) hint.textContent = `Opens the handset of ${msisdn} in a new tab.`;
  } else {
    openPhone.removeAttribute("href");
    openPhone.setAttribute("aria-disabled", "true");
    openPhone.classList.add("is-disabled");
    if (hint) hint.textContent = "Enter a valid phone number to open its virtual phone.";
  }
}

function showPhoneFrame(msisdn) {
  if (!phoneFrame || !config.phonePageBase) return;
  const url = phoneUrl(msisdn);
  if (phoneFrame.hidden || phoneFrame.dataset.src !== url) {
    phoneFrame.src = url; // assigned on every push so the handset shows the new prompt
    phoneFrame.dataset.src = url;
  }
  phoneFrame.hidden = false;
  phonePanel?.classList.add("has-frame");
  const jump = $("jump-to-phone");
  if (jump) jump.hidden = false;
}

if (phonePanel) {
  phoneInput.addEventListener("input", updatePhoneLink);
  updatePhoneLink();
  // The magic numbers fill the phone field.
  phonePanel.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-phone]");
    if (!button || payment.busy) return;
    phoneInput.value = button.dataset.phone;
    showFieldError("phone", validate().errors.phone);
    updatePhoneLink();
    phoneInput.focus();
  });
}

// ---- the payment ----------------------------------------------------------------------------------

// While a prompt can still be paid, or once paid, the form cannot send another push.
const LOCKED_STATES = new Set(["sending", "waiting", "watching", "completed"]);

function setFormLocked(locked) {
  const busy = locked || !somethingToPay();
  payButton.disabled = busy;
  payButton.setAttribute("aria-busy", String(busy));
  phoneInput.readOnly = locked;
  if (amountInput) amountInput.readOnly = locked;
  cartView?.setLocked(locked);
  form.classList.toggle("is-locked", locked);
}

/** The form's lock again, as the state shown asks for: once there is something to pay. */
function refreshLock() {
  setFormLocked(LOCKED_STATES.has(statusBox.dataset.state));
}

// 429: the customer can try again at `retryAt`; until then Try Again counts down.
let countdownTimer = null;

function stopCountdown() {
  clearInterval(countdownTimer);
  countdownTimer = null;
}

function startCountdown(retryAt) {
  stopCountdown();
  const tick = () => {
    const left = Math.ceil((retryAt - Date.now()) / 1000);
    countdown.hidden = false;
    if (left > 0) {
      retryButton.disabled = true;
      retryButton.setAttribute("aria-disabled", "true");
      writeText(retryButton, `Try Again in ${waitText(left)}`);
      countdown.textContent = `You can try again in ${waitText(left)}.`;
      countdown.dataset.seconds = String(left);
      return;
    }
    stopCountdown();
    retryButton.disabled = false;
    retryButton.removeAttribute("aria-disabled");
    writeText(retryButton, "Try Again");
    countdown.textContent = "You can try again now.";
    countdown.dataset.seconds = "0";
  };
  tick();
  countdownTimer = setInterval(tick, 250);
}

function render(update) {
  const { state } = update;
  statusBox.dataset.state = state;
  writeText(statusText, update.message || "");
  writeText(nextText, update.next || "");
  nextText.hidden = !update.next;
  if (update.order) showOrder(update.order, { fromCart: true }); // just created from the cart
  // One clear action after a failure: Try Again (it sends a new push) takes the Pay button's place;
  // while a prompt can still be paid (sending, waiting, watching) there is neither.
  const ended = state === "failed" || state === "timeout" || state === "limited";
  payButton.hidden = ended;
  retryButton.hidden = !ended;
  setFormLocked(LOCKED_STATES.has(state));
  if (state === "limited") {
    startCountdown(update.retryAt);
  } else {
    stopCountdown();
    countdown.hidden = true;
    retryButton.disabled = false;
    retryButton.removeAttribute("aria-disabled");
    writeText(retryButton, "Try Again");
  }
  if (timeoutHelp) {
    const showHelp = state === "timeout" && update.checkoutRequestId;
    timeoutHelp.hidden = !showHelp;
    if (showHelp && checkLink) {
      checkLink.href = confirmationPageUrl(update.checkoutRequestId, update.paymentToken, update.orderId);
    }
  }
  if ((state === "waiting" || state === "watching") && update.phone) showPhoneFrame(update.phone);
  if (state === "failed" && (update.field === "phone" || update.field === "amount")) {
    showFieldError(update.field, update.message); // the server's word on a field wins
  }
}

// Daraja keeps 13 characters of the description: "Demo Shop order" would read "Demo Shop ord".
const DESCRIPTION_MAX = 13;
function orderDescription(name) {
  const shop = String(name || "").trim();
  const full = `${shop} order`.trim();
  if (full.length <= DESCRIPTION_MAX) return full;
  return shop && shop.length <= DESCRIPTION_MAX ? shop : (shop.slice(0, DESCRIPTION_MAX).trim() || "Order");
}

/** A short reference for a free-amount payment, e.g. "PAY_K3F9Q2" (Daraja keeps 12 characters). */
function newReference() {
  const alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
  const bytes = new Uint8Array(6);
  crypto.getRandomValues(bytes);
  return "PAY_" + Array.from(bytes, (byte) => alphabet[byte % alphabet.length]).join("");
}
const freeReference = newReference();

const payment = new MpesaPaymentManager({
  pollIntervalMs: config.pollIntervalMs,
  pollTimeoutMs: config.pollTimeoutMs,
  slowPollIntervalMs: config.slowPollIntervalMs,
  watchLimitMs: config.watchLimitMs,
  outcomes: config.outcomes,
  onUpdate: render,
  // The receipt replaces this page in place (its URL pushed), as fast as the live update allows;
  // a real navigation whenever that is not certain to show the same.
  navigate: (url) => openInPlace(url),
});

async function submit() {
  if (payment.busy || countdownTimer !== null) return;
  const result = validate();
  showFieldError("phone", result.errors.phone);
  showFieldError("amount", result.errors.amount);
  if (!result.ok) {
    (result.errors.phone ? phoneInput : amountInput).focus();
    return;
  }
  let request;
  if (order) {
    request = { phone: result.phone, orderId: order.orderId, amount: order.amount };
    rememberPhone(order.orderId, result.phone);
  } else if (mode === "catalogue" && cart) {
    if (cart.orderLines().length === 0) return;
    request = { phone: result.phone, items: cart.orderLines(), amount: cart.totalKes() };
  } else if (mode === "free") {
    request = { phone: result.phone, amount: result.amount, description: orderDescription(config.businessName),
                accountReference: freeReference };
  } else {
    return;
  }
  const final = await payment.pay(request);
  if (final?.orderId) rememberPhone(final.orderId, result.phone);
  if (final && (final.state === "failed" || final.state === "timeout" || final.state === "limited")) {
    retryButton.focus();
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  submit();
});

// Try Again is the one action after a failure: it sends a new push (with the number in the field).
retryButton.addEventListener("click", () => {
  if (!retryButton.disabled) submit();
});

// Coming back to this page from the receipt (back button, page restored from cache): start afresh.
window.addEventListener("pageshow", (event) => {
  if (event.persisted && payment.state === "completed") window.location.reload();
});

followHistory(); // Back from a receipt shown in place of this page loads this page anew
render({ state: "idle", message: "" });
updatePayButton();
if (mode === "order") {
  if (config.orderId) loadOrder(config.orderId);
  else {
    hidePayment();
    notice("This payment link is not valid", "Check the link the shop sent you, or ask the shop for a new one.");
  }
} else if (mode === "catalogue") {
  loadCatalogue();
} else if (mode === "none") {
  hidePayment();
  notice("Pay from your order's link",
         "This page takes payments for orders: open the payment link the shop sent you.");
}
document.documentElement.classList.add("js-ready");
