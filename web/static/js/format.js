// What the pay and confirmation pages share: money and time formatting, and the phone rule.
// Written once here and imported by the others; loads in Node as well (no DOM needed).

export const TIME_ZONE = "Africa/Nairobi";

const wholeNumber = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });

/** 150000 → "150,000" (whole shillings, no currency). */
export function formatShillings(amount) {
  return wholeNumber.format(amount);
}

/** 12900 → "KES 12,900" */
export function formatKes(amount) {
  return "KES " + formatShillings(amount);
}

/**
 * An Intl.DateTimeFormat in Nairobi time (en-GB), e.g. nairobiFormatter({ timeStyle: "short" }).
 * A browser without that time zone's data gets its own zone rather than an error.
 */
export function nairobiFormatter(options = {}) {
  try {
    return new Intl.DateTimeFormat("en-GB", { timeZone: TIME_ZONE, ...options });
  } catch {
    return new Intl.DateTimeFormat("en-GB", options);
  }
}

export const INVALID_PHONE = "Invalid phone number format";

// The gateway's rule (gateway/checkout.py): 07…/01…, 2547…/2541…, +254…, spaces and dashes tolerated.
export const PHONE_PATTERN = /^(?:\+254|254|0)([17][0-9]{8})$/;
const SEPARATORS = /[\s-]/g;

/** "0712 345-678" → "254712345678"; null when the number is not a Safaricom mobile number. */
export function normalisePhone(raw) {
  if (typeof raw !== "string") return null;
  const match = PHONE_PATTERN.exec(raw.replace(SEPARATORS, ""));
  return match ? "254" + match[1] : null;
}
