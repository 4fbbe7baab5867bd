// The cart's parts that need no page (web/static/js/cart.js): prices, storage, quantities.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  Cart,
  DEFAULT_ITEMS,
  MAX_QUANTITY,
  STORAGE_KEY,
  clearPaidCart,
  lineTotalKes,
  newReference,
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

const stored = (storage) => JSON.parse(storage.getItem(STORAGE_KEY));

describe("prices", () => {
  test("each line is rounded up to the next whole shilling", () => {
    assert.equal(lineTotalKes({ quantity: 1, unitPriceUsd: 75 }, 129), 9675);
    assert.equal(lineTotalKes({ quantity: 3, unitPriceUsd: 0.1 }, 100), 30, "float noise does not add a shilling");
    assert.equal(lineTotalKes({ quantity: 1, unitPriceUsd: 10.01 }, 129.5), 1297); // 1296.295 → 1297
    assert.equal(lineTotalKes({ quantity: 0, unitPriceUsd: 40 }, 129), 0);
  });

  test("the demo cart at 129: 9,675 + 3,225 = 12,900", () => {
    const cart = new Cart({ usdToKes: 129, storage: memoryStorage() });
    assert.equal(cart.totalKes(), 12900);
    assert.equal(cart.itemCount(), 2);
  });

  test("a rate that is not positive is refused", () => {
    for (const usdToKes of [0, -1, NaN, undefined, null]) {
      assert.throws(() => new Cart({ usdToKes, storage: memoryStorage() }), /positive usdToKes/);
    }
  });
});

describe("references", () => {
  test("CART_ and six characters without look-alikes, at most 12 characters", () => {
    const seen = new Set();
    for (let i = 0; i < 200; i += 1) {
      const reference = newReference();
      assert.match(reference, /^CART_[ABCDEFGHJKLMNPQRSTUVWXYZ23456789]{6}$/);
      assert.ok(reference.length <= 12);
      seen.add(reference);
    }
    assert.ok(seen.size > 190, "random");
  });
});

describe("the stored cart", () => {
  test("a new cart is saved at once, so its reference survives a reload", () => {
    const storage = memoryStorage();
    const cart = new Cart({ usdToKes: 129, storage });
    assert.equal(stored(storage).reference, cart.reference);
    assert.deepEqual(stored(storage).items, DEFAULT_ITEMS.map((item) => ({ ...item })));
    const again = new Cart({ usdToKes: 129, storage });
    assert.equal(again.reference, cart.reference);
  });

  test("quantities are kept between visits", () => {
    const storage = memoryStorage();
    const cart = new Cart({ usdToKes: 129, storage });
    cart.increment("lighting");
    cart.decrement("speaker-hire");
    const again = new Cart({ usdToKes: 129, storage });
    assert.equal(again.item("lighting").quantity, 1);
    assert.equal(again.item("speaker-hire").quantity, 0);
  });

  test("a stored cart that is not well formed is replaced by the demo cart", () => {
    const good = { reference: "CART_ABC234", items: [{ id: "x", name: "Thing", quantity: 2, unitPriceUsd: 5 }] };
    const bad = [
      "not json",
      "null",
      JSON.stringify({ ...good, reference: "ORDER_1" }),
      JSON.stringify({ ...good, reference: "CART_ABCDEFGH" }),
      JSON.stringify({ ...good, items: [] }),
      JSON.stringify({ ...good, items: [{ ...good.items[0], quantity: MAX_QUANTITY + 1 }] }),
      JSON.stringify({ ...good, items: [{ ...good.items[0], quantity: 1.5 }] }),
      JSON.stringify({ ...good, items: [{ ...good.items[0], unitPriceUsd: -1 }] }),
      JSON.stringify({ ...good, items: [{ ...good.items[0], id: "<script>" }] }),
      JSON.stringify({ ...good, items: [{ ...good.items[0], name: " " }] }),
    ];
    for (const raw of bad) {
      const cart = new Cart({ usdToKes: 129, storage: memoryStorage({ [STORAGE_KEY]: raw }) });
      assert.deepEqual(cart.items.map((item) => item.id), DEFAULT_ITEMS.map((item) => item.id), raw);
      assert.notEqual(cart.reference, "CART_ABC234");
    }
    const kept = new Cart({ usdToKes: 129, storage: memoryStorage({ [STORAGE_KEY]: JSON.stringify(good) }) });
    assert.equal(kept.reference, "CART_ABC234");
    assert.equal(kept.totalKes(), 1290);
  });

  test("works without storage, and when storage throws", () => {
    const none = new Cart({ usdToKes: 129, storage: null });
    none.increment("lighting");
    assert.equal(none.item("lighting").quantity, 1);
    const throwing = { getItem() { throw new Error("denied"); }, setItem() { throw new Error("quota"); } };
    const cart = new Cart({ usdToKes: 129, storage: throwing });
    cart.increment("lighting");
    assert.equal(cart.totalKes(), 12900 + 5160);
  });

  test("in Node there is no window: the default storage is none", () => {
    const cart = new Cart({ usdToKes: 129 });
    assert.equal(cart.storage, null);
  });
});

describe("quantities", () => {
  test("stay between 0 and 20, whole, and tell subscribers only of a change", () => {
    const cart = new Cart({ usdToKes: 129, storage: memoryStorage() });
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

  test("reset() brings back the demo items under a new reference", () => {
    const storage = memoryStorage();
    const cart = new Cart({ usdToKes: 129, storage });
    const before = cart.reference;
    cart.setQuantity("dj-booking", 5);
    let heard = 0;
    cart.subscribe(() => { heard += 1; });
    cart.reset();
    assert.notEqual(cart.reference, before);
    assert.equal(cart.item("dj-booking").quantity, 1);
    assert.equal(stored(storage).reference, cart.reference);
    assert.equal(heard, 1);
    assert.equal(DEFAULT_ITEMS[0].quantity, 1, "the defaults themselves are never changed");
  });
});

describe("clearPaidCart (the receipt page)", () => {
  test("removes the stored cart only when it is the order just paid", () => {
    const storage = memoryStorage();
    const cart = new Cart({ usdToKes: 129, storage });
    assert.equal(clearPaidCart("CART_OTHER1", { storage }), false);
    assert.notEqual(storage.getItem(STORAGE_KEY), null);
    assert.equal(clearPaidCart(cart.reference, { storage }), true);
    assert.equal(storage.getItem(STORAGE_KEY), null);
  });

  test("nothing stored, something else stored, no reference, no storage: false", () => {
    assert.equal(clearPaidCart("CART_ABC234", { storage: memoryStorage() }), false);
    assert.equal(clearPaidCart("CART_ABC234", { storage: memoryStorage({ [STORAGE_KEY]: "{oops" }) }), false);
    assert.equal(clearPaidCart("", { storage: memoryStorage() }), false);
    assert.equal(clearPaidCart("CART_ABC234", { storage: null }), false);
  });
});
