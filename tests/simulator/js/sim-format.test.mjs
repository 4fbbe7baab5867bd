// sim-format.js: the simulator pages' Ksh amounts, Nairobi clock and phone rule.

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  formatKsh, formatKshWhole, formatShillings, msisdnFromTyped, nairobiFormatter, PHONE_PATTERN,
} from "../../../simulator/static/js/sim-format.js";

test("amounts are written as M-PESA writes them", () => {
  assert.equal(formatShillings(1234), "1,234.00");
  assert.equal(formatKsh(250000), "Ksh 250,000.00");
  assert.equal(formatKsh(0.5), "Ksh 0.50");
  assert.equal(formatKshWhole(1234), "Ksh 1,234");
});

test("clocks show Nairobi time (UTC+3) whatever the browser's zone", () => {
  const moment = new Date(Date.UTC(2026, 10, 26, 7, 15, 30));
  const time = nairobiFormatter({ hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
  assert.equal(time.format(moment), "10:15:30");
  const late = new Date(Date.UTC(2026, 2, 25, 22, 0));
  assert.equal(nairobiFormatter({ day: "numeric", month: "long" }).format(late), "26 March");
});

test("a typed number becomes its MSISDN in every local form", () => {
  for (const [typed, msisdn] of [
    ["0712345678", "254712345678"], ["0712 345 678", "254712345678"], ["+254-712-345-678", "254712345678"],
    ["254712345678", "254712345678"], ["0110000001", "254110000001"], ["+254115999999", "254115999999"],
  ]) {
    assert.equal(msisdnFromTyped(typed), msisdn, typed);
  }
});

test("numbers outside Safaricom's ranges are not phones", () => {
  for (const typed of ["", "07", "712345678", "0812345678", "0116000000", "0120000000", "07123456789", null]) {
    assert.equal(msisdnFromTyped(typed), null, String(typed));
  }
  assert.ok(PHONE_PATTERN.test("0708374149"));
});
