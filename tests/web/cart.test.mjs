// The cart's parts that need no page (web/static/js/cart.js): the catalogue as the server sends
// it, prices in whole shillings, storage of quantities and of the order made from the cart.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  Cart,
  MAX_QUANTITY,
  STORAGE_KEY,
  cleanCatalogue,
  clearPaidCart,
  itemCountText,
  storedCartOrder,
} from "../../web/static/js/cart.js";

/** localStorage as far as the cart uses it. */
function memoryStorage(initial = {}) {
  const data = new Map(Object.entries(initial));
  return {
    data,
    getItem: (key) => (data.has(key) ? data.get(key) : null),
    setItem: (key, value) => data.set(key, String(value)),
    removeItem: (key) => data.delete(key),
  };
}

// GET /catalogue, as gateway/catalogue.json makes it.
const CATALOGUE = {
  items: [
    { id: "dj-booking", name: "DJ booking (4-hour set)", unitPrice: 9675, defaultQuantity: 1, description: "A DJ" },
    { id: "speaker-hire", name: "Speaker hire (pair, per day)", unitPrice: 3225, defaultQuantity: 1, description: "" },
    { id: "lighting", name: "Stage lighting kit", unitPrice: 5160, defaultQuantity: 0, description: "Lights" },
  ],
};
const ORDER_ID = "ord_AAAAAAAAAAAAAAAAAAAAA1";

const stored = (storage) => JSON.parse(storage.getItem(STORAGE_KEY));
const newCart = (storage = memoryStorage()) => new Cart({ catalogue: CATALOGUE, storage });

describe("the catalogue", () => {
  test("the default cart: 9,675 + 3,225 = KES 12,900, two items", () => {
    const cart = newCart();
    assert.equal(cart.totalKes(), 12900);
    assert.equal(cart.itemCount(), 2);
    assert.deepEqual(cart.orderLines(), [{ id: "dj-booking", quantity: 1 }, { id: "speaker-hire", quantity: 1 }]);
  });

  test("line totals are quantity x unit price, in whole shillings", () => {
    const cart = newCart();
    cart.setQuantity("lighting", 3);
    assert.equal(cart.lineTotal(cart.item("lighting")), 15480);
    assert.equal(cart.totalKes(), 12900 + 15480);
  });

  test("items the page cannot show are left out; an odd default quantity is none", () => {
    const items = cleanCatalogue({ items: [
      ...CATALOGUE.items,
      { id: "<script>", name: "x", unitPrice: 1 },
      { id: "free", name: "Free", unitPrice: 0 },
      { id: "half", name: "Half", unitPrice: 1.5 },
      { id: "blank", name: " ", unitPrice: 10 },
      { id: "odd", name: "Odd", unitPrice: 10, defaultQuantity: "2" },
      null,
    ] });
    assert.deepEqual(items.map((item) => item.id), ["dj-booking", "speaker-hire", "lighting", "odd"]);
    assert.equal(items.at(-1).defaultQuantity, 0);
    assert.deepEqual(cleanCatalogue(null), []);
  });

  test("a catalogue with no default quantities starts with one of its first item", () => {
    const cart = new Cart({ catalogue: [{ id: "a", name: "A", unitPrice: 10 }, { id: "b", name: "B", unitPrice: 20 }],
                            storage: memoryStorage() });
    assert.deepEqual(cart.orderLines(), [{ id: "a", quantity: 1 }]);
  });
});

describe("the stored cart", () => {
  test("a new cart is saved at once; quantities are kept between visits", () => {
    const storage = memoryStorage();
    const cart = newCart(storage);
    assert.deepEqual(stored(storage), { quantities: { "dj-booking": 1, "speaker-hire": 1, lighting: 0 }, orderId: null });
    cart.increment("lighting");
    cart.decrement("speaker-hire");
    const again = newCart(storage);
    assert.equal(again.item("lighting").quantity, 1);
    assert.equal(again.item("speaker-hire").quantity, 0);
  });

  test("prices always come from the catalogue, never from storage", () => {
    const storage = memoryStorage({ [STORAGE_KEY]: JSON.stringify({ quantities: { "dj-booking": 2 }, orderId: null,
                                                                     prices: { "dj-booking": 1 } }) });
    const cart = newCart(storage);
    assert.equal(cart.totalKes(), 2 * 9675);
  });

  test("the order made from the cart is remembered", () => {
    const storage = memoryStorage();
    const cart = newCart(storage);
    cart.rememberOrder(ORDER_ID);
    assert.equal(storedCartOrder({ storage }), ORDER_ID);
    assert.equal(newCart(storage).orderId, ORDER_ID);
  });

  test("a stored cart that is not well formed is replaced by the default cart", () => {
    const bad = [
      "not json",
      "null",
      JSON.stringify({ quantities: null }),
      JSON.stringify({ quantities: { "dj-booking": MAX_QUANTITY + 1 } }),
      JSON.stringify({ quantities: { "dj-booking": 1.5 } }),
      JSON.stringify({ quantities: { "dj-booking": -1 } }),
      JSON.stringify({ quantities: { "<script>": 1 } }),
    ];
    for (const raw of bad) {
      const cart = newCart(memoryStorage({ [STORAGE_KEY]: raw }));
      assert.equal(cart.totalKes(), 12900, raw);
    }
    const odd = newCart(memoryStorage({ [STORAGE_KEY]: JSON.stringify({ quantities: {}, orderId: "DROP TABLE" }) }));
    assert.equal(odd.orderId, null);
  });

  test("works without storage, and when storage throws", () => {
    const none = newCart(null);
    none.increment("lighting");
    assert.equal(none.item("lighting").quantity, 1);
    const throwing = { getItem() { throw new Error("denied"); }, setItem() { throw new Error("quota"); } };
    const cart = newCart(throwing);
    cart.increment("lighting");
    assert.equal(cart.totalKes(), 12900 + 5160);
    assert.equal(storedCartOrder({ storage: throwing }), null);
  });

  test("in Node there is no window: the default storage is none", () => {
    const cart = new Cart({ catalogue: CATALOGUE });
    assert.equal(cart.storage, null);
  });
});

describe("quantities", () => {
  test("stay between 0 and 20, whole, and tell subscribers only of a change", () => {
    const cart = newCart();
    const heard = [];
    const unsubscribe = cart.subscribe((c) => heard.push(c.item("lighting").quantity));
    cart.decrement("lighting"); // already 0
    cart.setQuantity("lighting", 2.9);
    cart.setQuantity("lighting", 99);
    cart.increment("lighting"); // already 20
    cart.setQuantity("lighting", -5);
    cart.setQuantity("no-such-item", 3);
    assert.deepEqual(heard, [2, MAX_QUANTITY, 0]);
    unsubscribe();
    cart.increment("lighting");
    assert.equal(heard.length, 3);
  });

  test("an emptied cart orders nothing", () => {
    const cart = newCart();
    cart.setQuantity("dj-booking", 0);
    cart.setQuantity("speaker-hire", 0);
    assert.deepEqual(cart.orderLines(), []);
    assert.equal(cart.totalKes(), 0);
    assert.equal(itemCountText(cart.itemCount()), "0 items");
    assert.equal(itemCountText(1), "1 item");
  });
});

describe("clearPaidCart (the receipt page)", () => {
  test("removes the stored cart only when its order is the one just paid", () => {
    const storage = memoryStorage();
    const cart = newCart(storage);
    cart.rememberOrder(ORDER_ID);
    assert.equal(clearPaidCart("ord_OTHER", { storage }), false);
    assert.notEqual(storage.getItem(STORAGE_KEY), null);
    assert.equal(clearPaidCart(ORDER_ID, { storage }), true);
    assert.equal(storage.getItem(STORAGE_KEY), null);
  });

  test("nothing stored, something else stored, no order, no storage: false", () => {
    assert.equal(clearPaidCart(ORDER_ID, { storage: memoryStorage() }), false);
    assert.equal(clearPaidCart(ORDER_ID, { storage: memoryStorage({ [STORAGE_KEY]: "{oops" }) }), false);
    assert.equal(clearPaidCart("", { storage: memoryStorage() }), false);
    assert.equal(clearPaidCart(null, { storage: memoryStorage() }), false);
    assert.equal(clearPaidCart(ORDER_ID, { storage: null }), false);
  });
});
