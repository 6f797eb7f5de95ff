// Fractional position keys (engine/ot/poskeys.py): base-62 fractions over 0-9A-Za-z, bytewise order.
// BigInt arithmetic so long keys stay exact.

const DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const BASE = 62n;
const VALUE = new Map([...DIGITS].map((ch, i) => [ch, BigInt(i)]));

function scaled(key, length) {
  const head = key.slice(0, length);
  let value = 0n;
  for (const ch of head) value = value * BASE + VALUE.get(ch);
  value *= BASE ** BigInt(length - head.length);
  return [value, key.slice(length).replace(/0+$/, "") !== ""];
}

function render(value, length) {
  const out = [];
  for (let i = 0; i < length; i++) {
    out.push(DIGITS[Number(value % BASE)]);
    value /= BASE;
  }
  return out.reverse().join("").replace(/0+$/, "");
}

/** A key strictly between a and b (null: open end), or null when none fits (reuse a neighbour's key). */
export function keyBetween(a, b) {
  if (a !== null && b !== null && !(a < b)) return null;
  const strip = (k) => (k || "").replace(/0+$/, "");
  if (b !== null && strip(b) === strip(a)) {
    return b.length - (a || "").length - 1 >= 1 ? (a || "") + "0" : null;
  }
  const longest = Math.max((a || "").length, (b || "").length);
  for (let length = 1; length <= Math.min(1024, longest + 1); length++) {
    const lo = a !== null ? scaled(a, length)[0] : 0n;
    let hi;
    if (b === null) hi = BASE ** BigInt(length);
    else {
      const [v, cut] = scaled(b, length);
      hi = v + (cut ? 1n : 0n);
    }
    if (hi - lo - 1n >= 1n) {
      let k;
      if (a === null && b === null) k = (lo + hi) / 2n;
      else if (b === null) k = lo + 1n;
      else if (a === null) k = hi - 1n;
      else k = lo + (hi - lo) / 2n;
      return render(k, length);
    }
  }
  return null;
}
