// What the simulator's pages share, written once: Ksh amounts as M-PESA writes them, clocks on
// Nairobi time, and the phone rule (the browser's copy of simulator/phones.py).

export const TIME_ZONE = "Africa/Nairobi";

/** An Intl.DateTimeFormat on Nairobi's clock (the browser's own zone if it does not know Nairobi). */
export function nairobiFormatter(options) {
  try {
    return new Intl.DateTimeFormat("en-GB", { timeZone: TIME_ZONE, ...options });
  } catch (err) {
    return new Intl.DateTimeFormat("en-GB", options);
  }
}

const cents = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const whole = new Intl.NumberFormat("en-US");

/** 1234 -> "1,234.00" (M-PESA's messages write "Ksh1,234.00"). */
export function formatShillings(value) {
  return cents.format(value);
}

/** 1234 -> "Ksh 1,234.00": a balance. */
export function formatKsh(value) {
  return `Ksh ${formatShillings(value)}`;
}

/** 1234 -> "Ksh 1,234": an amount asked for, in whole shillings. */
export function formatKshWhole(value) {
  return `Ksh ${whole.format(value)}`;
}

// Safaricom's numbers after the country code: 7XX XXX XXX, and 110-115 XXX XXX.
export const PHONE_PATTERN = /^(?:\+254|254|0)(7[0-9]{8}|11[0-5][0-9]{6})$/;
const SEPARATORS = /[\s-]/g;

/** The MSISDN (2547…, 2541…) of a number as a person types it (07…, 011…, +254…, spaces and
 * dashes allowed), or null if it is not a Safaricom number. */
export function msisdnFromTyped(raw) {
  const match = PHONE_PATTERN.exec(String(raw ?? "").replace(SEPARATORS, ""));
  return match ? `254${match[1]}` : null;
}
