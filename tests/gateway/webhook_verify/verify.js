const crypto = require("node:crypto");

// True if rawBody (a Buffer: the request body as received) was signed with secret less than tolerance s ago.
function verify(secret, header, rawBody, tolerance = 300) {
  const fields = Object.fromEntries(String(header).split(",").map((item) => item.trim().split("=", 2)));
  const t = fields.t ?? "";
  if (!/^\d+$/.test(t) || Math.abs(Date.now() / 1000 - Number(t)) > tolerance) return false;
  const expected = crypto.createHmac("sha256", secret).update(`${t}.`).update(rawBody).digest();
  const given = Buffer.from(fields.v1 ?? "", "hex");
  return given.length === expected.length && crypto.timingSafeEqual(given, expected);
}

module.exports = { verify };
