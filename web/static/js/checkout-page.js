// Wires the pay page: cart summary, the payment form, the status region and (in simulator mode)
// the virtual phone panel.

import { Cart, CartView } from "./cart.js";
import { normalisePhone } from "./format.js";
import { MpesaPaymentManager, confirmationPageUrl, validateCheckout } from "./payment.js";

function readConfig() {
  const node = document.getElementById("checkout-config");
  const defaults = { pollIntervalMs: 3000, pollTimeoutMs: 120000, maxAmount: 150000, usdToKes: 129,
                     simulator: false, phonePageBase: null, businessName: "Shop" };
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
const amountInput = $("amount");
const payButton = $("pay-button");
const statusBox = $("payment-status");
const statusText = $("payment-status-text");
const retryButton = $("retry-button");
const timeoutHelp = $("timeout-help");
const checkLink = $("check-payment-link");

const fields = {
  phone: { input: phoneInput, error: $("phone-error") },
  amount: { input: amountInput, error: $("amount-error") },
};

// ---- cart ---------------------------------------------------------------------------------------

const cart = new Cart({ usdToKes: config.usdToKes });
const cartView = new CartView(cart, {
  list: $("cart-items"),
  totalNode: $("cart-total"),
  countNode: $("cart-count"),
  rateNode: $("cart-rate"),
});

function fillAmountFromCart() {
  amountInput.value = String(cart.totalKes());
  if (fields.amount.error.textContent) validateField("amount");
}
fillAmountFromCart();
cart.subscribe(fillAmountFromCart);

// ---- field validation ---------------------------------------------------------------------------

function showFieldError(name, message) {
  const { input, error } = fields[name];
  error.textContent = message || "";
  error.hidden = !message;
  if (message) input.setAttribute("aria-invalid", "true");
  else input.removeAttribute("aria-invalid");
}

function validateField(name) {
  const result = validateCheckout({ phone: phoneInput.value, amount: amountInput.value }, config.maxAmount);
  showFieldError(name, result.errors[name]);
  return !result.errors[name];
}

// Errors appear on submit (not on blur: a message appearing as focus leaves a field would move
// the Pay button from under the pointer mid-click). Once shown, they are re-checked as the
// customer types, so they clear as soon as the value is right.
for (const name of Object.keys(fields)) {
  const { input, error } = fields[name];
  input.addEventListener("input", () => {
    if (error.textContent) validateField(name);
  });
}

// ---- virtual phone (simulator mode) -------------------------------------------------------------

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
  phoneFrame.src = phoneUrl(msisdn); // assigned on every push so the handset shows the new prompt
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
    validateField("phone");
    updatePhoneLink();
    phoneInput.focus();
  });
}

// ---- payment ------------------------------------------------------------------------------------

function setFormLocked(locked) {
  payButton.disabled = locked;
  payButton.setAttribute("aria-busy", String(locked));
  phoneInput.readOnly = locked;
  amountInput.readOnly = locked;
  cartView.setLocked(locked);
  form.classList.toggle("is-locked", locked);
}

function render(update) {
  const { state } = update;
  statusBox.dataset.state = state;
  statusText.textContent = update.message || "";
  const canRetry = state === "failed" || state === "timeout";
  retryButton.hidden = !canRetry;
  setFormLocked(state === "sending" || state === "waiting" || state === "completed");
  if (timeoutHelp) {
    const showHelp = state === "timeout" && update.checkoutRequestId;
    timeoutHelp.hidden = !showHelp;
    if (showHelp && checkLink) {
      checkLink.href = confirmationPageUrl(update.checkoutRequestId, update.paymentToken);
    }
  }
  if (state === "waiting" && update.phone) showPhoneFrame(update.phone);
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

const payment = new MpesaPaymentManager({
  pollIntervalMs: config.pollIntervalMs,
  pollTimeoutMs: config.pollTimeoutMs,
  onUpdate: render,
});

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  if (payment.busy) return;
  const result = validateCheckout({ phone: phoneInput.value, amount: amountInput.value }, config.maxAmount);
  showFieldError("phone", result.errors.phone);
  showFieldError("amount", result.errors.amount);
  if (!result.ok) {
    (result.errors.phone ? phoneInput : amountInput).focus();
    return;
  }
  const final = await payment.pay({
    phone: result.phone,
    amount: result.amount,
    description: orderDescription(config.businessName),
    accountReference: cart.reference,
  });
  if (final && (final.state === "failed" || final.state === "timeout")) {
    retryButton.focus();
  }
});

retryButton.addEventListener("click", () => {
  if (payment.reset()) phoneInput.focus();
});

// Coming back to this page from the receipt (back button, page restored from cache): start afresh.
window.addEventListener("pageshow", (event) => {
  if (event.persisted && payment.state === "completed") window.location.reload();
});

render({ state: "idle", message: "" });
document.documentElement.classList.add("js-ready");
