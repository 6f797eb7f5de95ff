// Reads cases (JSON on stdin) and prints what the browser OT makes of them, for the Python parity test.
import { readFileSync } from "node:fs";
import { transformOp, applyText, transformPosition, cpToUtf16, utf16ToCp } from "../src/ot.js";
import { keyBetween } from "../src/poskeys.js";

const cases = JSON.parse(readFileSync(0, "utf8"));
const out = cases.map((c) => {
  switch (c.kind) {
    case "transform":
      return transformOp(c.op, c.other, c.op_first);
    case "apply":
      return applyText(c.source, c.ops);
    case "position":
      return transformPosition(c.pos, c.ops, c.stick_right);
    case "key_between":
      return keyBetween(c.a, c.b);
    case "utf16":
      return [cpToUtf16(c.s, c.cp), utf16ToCp(c.s, cpToUtf16(c.s, c.cp))];
    default:
      throw new Error(c.kind);
  }
});
process.stdout.write(JSON.stringify(out));
