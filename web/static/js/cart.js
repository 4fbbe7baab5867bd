// The order on the pay page: the demo catalogue's cart (quantities the customer picks; prices come
// from the server's catalogue, GET /catalogue, and the server prices the order again), and the
// read-only lines of an order the shop created (GET /checkout/{orderId}).
// The cart's quantities (and the order last created from it) are kept in localStorage.

import { formatKes } from "./format.js";

export const STORAGE_KEY = "checkout.cart.v2";
export const MAX_QUANTITY = 20;
// An order longer than this shows its first lines and a "show all" button, so that the Pay
// button stays on a phone's first screen.
export const LINES_SHOWN = 3;

function safeStorage() {
  try {
    return window.localStorage;
  } catch {
    return null; // storage disabled (or Node): the cart still works for this visit
  }
}

/** Catalogue items the page can show: { id, name, unitPrice (whole KES), description,
 *  defaultQuantity (in the cart a first visit starts with) }. */
export function cleanCatalogue(raw) {
  const items = Array.isArray(raw?.items) ? raw.items : Array.isArray(raw) ? raw : [];
  return items.filter((item) => item && typeof item.id === "string" && /^[\w-]{1,40}$/.test(item.id)
      && typeof item.name === "string" && item.name.trim() && Number.isSafeInteger(item.unitPrice)
      && item.unitPrice > 0)
    .map((item) => ({ id: item.id, name: item.name.trim(), unitPrice: item.unitPrice,
                      description: typeof item.description === "string" ? item.description : "",
                      defaultQuantity: Number.isInteger(item.defaultQuantity)
                        ? Math.min(MAX_QUANTITY, Math.max(0, item.defaultQuantity)) : 0 }));
}

function defaultQuantities(items) {
  const quantities = {};
  for (const item of items) quantities[item.id] = item.defaultQuantity;
  if (items.length && !items.some((item) => quantities[item.id] > 0)) quantities[items[0].id] = 1;
  return quantities;
}

export class Cart {
  constructor({ catalogue, storage = safeStorage(), key = STORAGE_KEY } = {}) {
    this.storage = storage;
    this.key = key;
    this.listeners = new Set();
    const items = cleanCatalogue(catalogue);
    const stored = this.#load();
    const quantities = stored?.quantities ?? defaultQuantities(items);
    this.orderId = stored?.orderId ?? null;
    this.items = items.map((item) => ({ ...item, quantity: quantities[item.id] ?? 0 }));
    if (!stored) this.save();
  }

  #load() {
    try {
      const data = JSON.parse((this.storage && this.storage.getItem(this.key)) || "null");
      if (!data || typeof data.quantities !== "object" || data.quantities === null) return null;
      const quantities = {};
      for (const [id, quantity] of Object.entries(data.quantities)) {
        if (!/^[\w-]{1,40}$/.test(id) || !Number.isInteger(quantity) || quantity < 0 || quantity > MAX_QUANTITY) {
          return null;
        }
        quantities[id] = quantity;
      }
      const orderId = typeof data.orderId === "string" && /^ord_[\w-]{1,64}$/.test(data.orderId) ? data.orderId : null;
      return { quantities, orderId };
    } catch {
      return null;
    }
  }

  save() {
    const quantities = Object.fromEntries(this.items.map((item) => [item.id, item.quantity]));
    try {
      this.storage?.setItem(this.key, JSON.stringify({ quantities, orderId: this.orderId }));
    } catch {
      // Quota or privacy mode: keep going without persistence.
    }
  }

  /** The order created from this cart (the receipt page empties the cart once it is paid). */
  rememberOrder(orderId) {
    this.orderId = orderId;
    this.save();
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
    return item.quantity * item.unitPrice;
  }

  totalKes() {
    return this.items.reduce((sum, item) => sum + this.lineTotal(item), 0);
  }

  itemCount() {
    return this.items.reduce((sum, item) => sum + item.quantity, 0);
  }

  /** What POST /catalogue/orders takes: the lines with a quantity. */
  orderLines() {
    return this.items.filter((item) => item.quantity > 0).map(({ id, quantity }) => ({ id, quantity }));
  }

  subscribe(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  #emit() {
    for (const listener of this.listeners) listener(this);
  }
}

/** Empty the stored cart if the order just paid was made from it (used by the receipt page). */
export function clearPaidCart(orderId, { storage = safeStorage(), key = STORAGE_KEY } = {}) {
  if (!storage || !orderId) return false;
  try {
    const data = JSON.parse(storage.getItem(key) || "null");
    if (data && data.orderId === orderId) {
      storage.removeItem(key);
      return true;
    }
  } catch {
    // nothing stored, or not ours: leave it
  }
  return false;
}

/** The order last created from the stored cart, if any (without touching the stored cart). */
export function storedCartOrder({ storage = safeStorage(), key = STORAGE_KEY } = {}) {
  try {
    const data = JSON.parse((storage && storage.getItem(key)) || "null");
    return data && typeof data.orderId === "string" ? data.orderId : null;
  } catch {
    return null;
  }
}

/** "1 item", "3 items" */
export function itemCountText(count) {
  return count === 1 ? "1 item" : `${count} items`;
}

/** `text` as nodes to append, with every "M-Pesa" in a span that does not wrap (class "nb"): the
 *  pages' own words and the shop's (item names, references) alike. Text only, never markup. */
export function noBreakNodes(text) {
  const parts = String(text ?? "").split("M-Pesa");
  const nodes = [parts[0]];
  for (const part of parts.slice(1)) {
    const keep = document.createElement("span");
    keep.className = "nb";
    keep.textContent = "M-Pesa";
    nodes.push(keep, part);
  }
  return nodes;
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
  constructor(cart, { list, totalNode, countNode = null }) {
    this.cart = cart;
    this.list = list;
    this.totalNode = totalNode;
    this.countNode = countNode;
    this.locked = false;
    this.onClick = (event) => this.#onClick(event);
    this.list.addEventListener("click", this.onClick);
    this.unsubscribe = cart.subscribe(() => this.update());
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

  /** The order was created: this view gives the list to the order's read-only lines. */
  detach() {
    this.list.removeEventListener("click", this.onClick);
    this.unsubscribe();
  }

  render() {
    this.list.replaceChildren(...this.cart.items.map((item) => this.#line(item)));
    this.update();
  }

  #line(item) {
    const quantityId = `qty-${item.id}`;
    return el("li", { className: "order-line cart-line", dataset: { itemId: item.id } },
      el("span", { className: "order-line-name" }, ...noBreakNodes(item.name)),
      el("span", { className: "order-line-unit" }, `${formatKes(item.unitPrice)} each`),
      el("div", { className: "stepper", role: "group", "aria-label": `Quantity of ${item.name}` },
        el("button", { type: "button", className: "stepper-button", dataset: { action: "decrease" },
                       "aria-label": `Decrease quantity of ${item.name}`, "aria-controls": quantityId }, "−"),
        el("output", { id: quantityId, className: "stepper-value", "aria-live": "polite" }, ""),
        el("button", { type: "button", className: "stepper-button", dataset: { action: "increase" },
                       "aria-label": `Increase quantity of ${item.name}`, "aria-controls": quantityId }, "+")),
      el("span", { className: "order-line-total" }, ""));
  }

  update() {
    for (const item of this.cart.items) {
      const line = this.list.querySelector(`[data-item-id="${CSS.escape(item.id)}"]`);
      if (!line) continue;
      line.classList.toggle("is-empty", item.quantity === 0);
      line.querySelector(".stepper-value").textContent = String(item.quantity);
      line.querySelector(".order-line-total").textContent = formatKes(this.cart.lineTotal(item));
      // aria-disabled at the bounds (keeps keyboard focus on the button); disabled while locked.
      const decrease = line.querySelector('[data-action="decrease"]');
      const increase = line.querySelector('[data-action="increase"]');
      decrease.disabled = increase.disabled = this.locked;
      decrease.setAttribute("aria-disabled", String(item.quantity <= 0));
      increase.setAttribute("aria-disabled", String(item.quantity >= MAX_QUANTITY));
    }
    this.totalNode.textContent = formatKes(this.cart.totalKes());
    if (this.countNode) this.countNode.textContent = itemCountText(this.cart.itemCount());
  }
}

/**
 * An order's lines, read-only: "2 × KES 1,500" and the line's total. Past LINES_SHOWN + 1 lines,
 * the first LINES_SHOWN are shown with a button (`moreButton`) that shows the rest.
 */
export function renderOrderLines(order, { list, totalNode, countNode = null, moreButton = null }) {
  const items = Array.isArray(order.items) ? order.items : [];
  if (items.length === 0) {
    // An order of an amount alone: one line, its description (or reference), and the amount.
    const name = order.description || `${order.businessName || "Shop"} order`;
    list.replaceChildren(el("li", { className: "order-line order-line-single" },
      el("span", { className: "order-line-name" }, ...noBreakNodes(name)),
      el("span", { className: "order-line-total" }, formatKes(order.amount))));
    if (moreButton) moreButton.hidden = true;
    totalNode.textContent = formatKes(order.amount);
    if (countNode) countNode.textContent = "";
    return;
  }
  list.replaceChildren(...items.map((item, index) => {
    const line = el("li", { className: "order-line", dataset: { index: String(index) } },
      el("span", { className: "order-line-name" }, ...noBreakNodes(item.name)),
      el("span", { className: "order-line-unit" }, `${item.quantity} × ${formatKes(item.unitPrice)}`),
      el("span", { className: "order-line-total" }, formatKes(item.total ?? item.quantity * item.unitPrice)));
    return line;
  }));
  const collapsible = items.length > LINES_SHOWN + 1;
  const show = (all) => {
    for (const line of list.children) line.hidden = !all && Number(line.dataset.index) >= LINES_SHOWN;
    if (moreButton) {
      moreButton.hidden = !collapsible;
      moreButton.setAttribute("aria-expanded", String(all));
      moreButton.textContent = all ? "Show fewer items" : `Show all ${items.length} items`;
    }
  };
  show(!collapsible);
  if (moreButton && collapsible) {
    moreButton.onclick = () => show(moreButton.getAttribute("aria-expanded") !== "true");
  }
  totalNode.textContent = formatKes(order.amount);
  if (countNode) countNode.textContent = itemCountText(items.reduce((sum, item) => sum + (item.quantity || 0), 0));
}
