// The module the pages share (web/static/js/format.js): money, Nairobi time, the phone rule.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  INVALID_PHONE,
  PHONE_PATTERN,
  TIME_ZONE,
  formatKes,
  formatShillings,
  nairobiFormatter,
  normalisePhone,
} from "../../web/static/js/format.js";

describe("money", () => {
  test("formatKes: whole shillings with thousands separators", () => {
    assert.equal(formatKes(12900), "KES 12,900");
    assert.equal(formatKes(150000), "KES 150,000");
    assert.equal(formatKes(1), "KES 1");
    assert.equal(formatKes(0), "KES 0");
    assert.equal(formatKes(1234567), "KES 1,234,567");
    assert.equal(formatKes(999.6), "KES 1,000", "never shows a fraction");
  });

  test("formatShillings: the number alone", () => {
    assert.equal(formatShillings(150000), "150,000");
  });
});

describe("Nairobi time", () => {
  test("is East Africa Time (UTC+3, no daylight saving), in British order", () => {
    assert.equal(TIME_ZONE, "Africa/Nairobi");
    const time = nairobiFormatter({ hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
    assert.equal(time.resolvedOptions().timeZone, "Africa/Nairobi");
    assert.equal(time.format(new Date(Date.UTC(2024, 0, 15, 21, 30, 5))), "00:30:05");
    assert.equal(time.format(new Date(Date.UTC(2024, 6, 15, 21, 30, 5))), "00:30:05");
    const date = nairobiFormatter({ day: "numeric", month: "long", year: "numeric" });
    assert.equal(date.format(new Date(Date.UTC(2024, 0, 15, 21, 30))), "16 January 2024", "the next day in Nairobi");
  });

  test("falls back to the local zone when Intl does not know Nairobi", (t) => {
    const Real = Intl.DateTimeFormat;
    t.mock.method(Intl, "DateTimeFormat", function (locale, options = {}) {
      if (options.timeZone) throw new RangeError("Invalid time zone specified: " + options.timeZone);
      return new Real(locale, options);
    });
    const fallback = nairobiFormatter({ hour: "2-digit", hour12: false });
    assert.equal(fallback.resolvedOptions().timeZone, new Real().resolvedOptions().timeZone);
  });
});

describe("the phone rule (the gateway's, gateway/checkout.py)", () => {
  const valid = [
    ["0712345678", "254712345678"],
    ["0112345678", "254112345678"],
    ["254712345678", "254712345678"],
    ["254112345678", "254112345678"],
    ["+254712345678", "254712345678"],
    ["+254112345678", "254112345678"],
    ["0712 345 678", "254712345678"],
    ["0712-345-678", "254712345678"],
    ["+254 712-345 678", "254712345678"],
    [" 0712345678 ", "254712345678"],
    ["0712\t345\u00a0678", "254712345678"],
  ];
  for (const [raw, expected] of valid) {
    test(`${JSON.stringify(raw)} → ${expected}`, () => {
      assert.equal(normalisePhone(raw), expected);
    });
  }

  const invalid = [
    "", "   ", "712345678", "071234567", "07123456789", "0812345678", "0212345678", "2540712345678",
    "+2540712345678", "255712345678", "+255712345678", "00254712345678", "254 7123 4567", "0712.345.678",
    "(0712) 345678", "07123456a8", "+ 254712345678x", "0712345678\n1", "０７１２３４５６７８",
  ];
  for (const raw of invalid) {
    test(`${JSON.stringify(raw)} is refused`, () => {
      assert.equal(normalisePhone(raw), null);
    });
  }

  test("anything but a string is refused", () => {
    for (const raw of [null, undefined, 712345678, 254712345678, ["0712345678"], { phone: "0712345678" }]) {
      assert.equal(normalisePhone(raw), null);
    }
  });

  test("the pattern is anchored and keeps the nine digits after the prefix", () => {
    assert.equal(PHONE_PATTERN.exec("0712345678")[1], "712345678");
    assert.equal(PHONE_PATTERN.test("x0712345678"), false);
    assert.equal(PHONE_PATTERN.test("0712345678x"), false);
    assert.equal(INVALID_PHONE, "Invalid phone number format");
  });
});
