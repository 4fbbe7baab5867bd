// The shopping cart: items priced in US dollars, charged in whole Kenya shillings.
// The cart (items, quantities and its reference) is kept in localStorage between visits.

import { formatKes, formatUsd } from "./format.js";

export const STORAGE_KEY = "checkout.cart.v1";
export const MAX_QUANTITY = 20;

export const DEFAULT_ITEMS = Object.freeze([
  { id: "dj-booking", name: "DJ booking (4-hour set)", quantity: 1, unitPriceUsd: 75 },
  { id: "speaker-hire", name: "Speaker hire (pair, per day)", quantity: 1, unitPriceUsd: 25 },
  { id: "lighting", name: "Stage lighting kit", quantity: 0, unitPriceUsd: 40 },
]);

/** One line's price in whole shillings, rounded up (never charge a fraction, never undercharge). */
export function lineTotalKes(item, usdToKes) {
  const exact = item.quantity * item.unitPriceUsd * usdToKes;
  // toFixed first so that float noise (e.g. 3225.0000000004) does not round a whole amount up.
  return Math.ceil(Number(exact.toFixed(6)));
}

/** A short reference for the order, e.g. "CART_K3F9Q2" (Daraja keeps at most 12 characters). */
export function newReference() {
  const alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
  const bytes = new Uint8Array(6);
  crypto.getRandomValues(bytes);
  let id = "";
  for (const byte of bytes) id += alphabet[byte % alphabet.length];
  return "CART_" + id;
}

function cleanItem(raw) {
  if (!raw || typeof raw !== "object") return null;
  const { id, name, quantity, unitPriceUsd } = raw;
  if (typeof id !== "string" || !/^[\w-]{1,40}$/.test(id)) return null;
  if (typeof name !== "string" || !name.trim() || name.length > 80) return null;
  if (!Number.isInteger(quantity) || quantity < 0 || quantity > MAX_QUANTITY) return null;
  if (typeof unitPriceUsd !== "number" || !Number.isFinite(unitPriceUsd) || unitPriceUsd <= 0
      || unitPriceUsd > 100000) return null;
  return { id, name: name.trim(), quantity, unitPriceUsd };
}

function defaultState() {
  return { reference: newReference(), items: DEFAULT_ITEMS.map((item) => ({ ...item })) };
}

function safeStorage() {
  try {
    return window.localStorage;
  } catch {
    return null; // storage disabled: the cart still works for this visit
  }
}

export class Cart {
  constructor({ usdToKes, storage = safeStorage(), key = STORAGE_KEY } = {}) {
    if (!(usdToKes > 0)) throw new Error("Cart needs a positive usdToKes rate");
    this.usdToKes = usdToKes;
    this.storage = storage;
    this.key = key;
    this.listeners = new Set();
    const stored = this.#load();
    const state = stored || defaultState();
    this.reference = state.reference;
    this.items = state.items;
    if (!stored) this.save(); // keep the new cart's reference stable across reloads
  }

  #load() {
    let raw = null;
    try {
      raw = this.storage ? this.storage.getItem(this.key) : null;
    } catch {
      return null;
    }
    if (!raw) return null;
    try {
      const data = JSON.parse(raw);
      if (!data || typeof data.reference !== "string" || !/^CART_[A-Z0-9]{1,7}$/.test(data.reference)) return null;
      if (!Array.isArray(data.items) || data.items.length === 0 || data.items.length > 50) return null;
      const items = data.items.map(cleanItem);
      if (items.some((item) => item === null)) return null;
      return { reference: data.reference, items };
    } catch {
      return null;
    }
  }

  save() {
    try {
      this.storage?.setItem(this.key, JSON.stringify({ reference: this.reference, items: this.items }));
    } catch {
      // Quota or privacy mode: keep going without persistence.
    }
  }

  /** Back to the demo items under a new reference (after an order has been paid). */
  reset() {
    const state = defaultState();
    this.reference = state.reference;
    this.items = state.items;
    this.save();
    this.#emit();
  }

  item(id) {
    return this.items.find((item) => item.id === id) || null;
  }

  setQuantity(id, quantity) {
    const item = this.item(id);
    if (!item) return;
    const next = Math.min(MAX_QUANTITY, Math.max(0, Math.trunc(quantity)));
    if (next === item.quantity) return;
    item.quantity = next;
    this.save();
    this.#emit();
  }

  increment(id) {
    const item = this.item(id);
    if (item) this.setQuantity(id, item.quantity + 1);
  }

  decrement(id) {
    const item = this.item(id);
    if (item) this.setQuantity(id, item.quantity - 1);
  }

  lineTotal(item) {
    return lineTotalKes(item, this.usdToKes);
  }

  totalKes() {
    return this.items.reduce((sum, item) => sum + this.lineTotal(item), 0);
  }

  itemCount() {
    return this.items.reduce((sum, item) => sum + item.quantity, 0);
  }

  subscribe(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  #emit() {
    for (const listener of this.listeners) listener(this);
  }
}

/** Reset the stored cart if it is the one that was just paid (used by the confirmation page). */
export function clearPaidCart(accountReference, { storage = safeStorage(), key = STORAGE_KEY } = {}) {
  if (!storage || !accountReference) return false;
  try {
    const data = JSON.parse(storage.getItem(key) || "null");
    if (data && data.reference === accountReference) {
      storage.removeItem(key);
      return true;
    }
  } catch {
    // nothing stored, or not ours: leave it
  }
  return false;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "className") node.className = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
}

/**
 * Draws the cart into `list` (a <ul>) and the grand total into `totalNode`, with a quantity
 * stepper on each line. Clicks are handled by one delegated listener.
 */
export class CartView {
  constructor(cart, { list, totalNode, countNode = null, rateNode = null }) {
    this.cart = cart;
    this.list = list;
    this.totalNode = totalNode;
    this.countNode = countNode;
    this.rateNode = rateNode;
    this.locked = false;
    this.list.addEventListener("click", (event) => this.#onClick(event));
    cart.subscribe(() => this.update());
    this.render();
  }

  #onClick(event) {
    const button = event.target.closest("button[data-action]");
    if (!button || this.locked || !this.list.contains(button)) return;
    const id = button.closest("[data-item-id]")?.dataset.itemId;
    if (!id) return;
    if (button.dataset.action === "increase") this.cart.increment(id);
    else if (button.dataset.action === "decrease") this.cart.decrement(id);
  }

  /** While a payment is in progress the cart cannot change under it. */
  setLocked(locked) {
    this.locked = locked;
    this.update();
  }

  render() {
    this.list.replaceChildren(...this.cart.items.map((item) => this.#line(item)));
    this.update();
  }

  #line(item) {
    const quantityId = `qty-${item.id}`;
    return el("li", { className: "cart-line", dataset: { itemId: item.id } },
      el("div", { className: "cart-line-info" },
        el("span", { className: "cart-line-name" }, item.name),
        el("span", { className: "cart-line-unit" }, `${formatUsd(item.unitPriceUsd)} each`)),
      el("div", { className: "stepper", role: "group", "aria-label": `Quantity of ${item.name}` },
        el("button", { type: "button", className: "stepper-button", dataset: { action: "decrease" },
                       "aria-label": `Decrease quantity of ${item.name}`, "aria-controls": quantityId }, "−"),
        el("output", { id: quantityId, className: "stepper-value", "aria-live": "polite" }, ""),
        el("button", { type: "button", className: "stepper-button", dataset: { action: "increase" },
                       "aria-label": `Increase quantity of ${item.name}`, "aria-controls": quantityId }, "+")),
      el("span", { className: "cart-line-total" }, ""));
  }

  update() {
    for (const item of this.cart.items) {
      const line = this.list.querySelector(`[data-item-id="${CSS.escape(item.id)}"]`);
      if (!line) continue;
      line.classList.toggle("is-empty", item.quantity === 0);
      line.querySelector(".stepper-value").textContent = String(item.quantity);
      line.querySelector(".cart-line-total").textContent = formatKes(this.cart.lineTotal(item));
      // aria-disabled at the bounds (keeps keyboard focus on the button); disabled while locked.
      const decrease = line.querySelector('[data-action="decrease"]');
      const increase = line.querySelector('[data-action="increase"]');
      decrease.disabled = increase.disabled = this.locked;
      decrease.setAttribute("aria-disabled", String(item.quantity <= 0));
      increase.setAttribute("aria-disabled", String(item.quantity >= MAX_QUANTITY));
    }
    this.totalNode.textContent = formatKes(this.cart.totalKes());
    if (this.countNode) {
      const count = this.cart.itemCount();
      this.countNode.textContent = count === 1 ? "1 item" : `${count} items`;
    }
    if (this.rateNode) {
      this.rateNode.textContent = `KES ${this.cart.usdToKes.toLocaleString("en-US")}`;
    }
  }
}
