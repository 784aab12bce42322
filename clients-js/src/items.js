// Items to 64-bit oracle keys (docs/device-wire.md §2): encode with the task's codec, cut to the
// task's prefix length, the prefix itself up to 64 bits, its fingerprint above.
import { fingerprint } from "./hashing.js";
import { DeviceError } from "./errors.js";

/** The codec of a task's `codec` field: {kind: "int"|"str", m, width}. */
export function parseCodec(name) {
  const match = /^(int|str):(\d+)$/.exec(name);
  if (!match) throw new DeviceError("BAD_TASK", `unknown item codec ${JSON.stringify(name)}`);
  const n = Number(match[2]);
  if (match[1] === "int") {
    if (n < 1 || n > 64) throw new DeviceError("BAD_TASK", `int codec of ${n} bits`);
    return { kind: "int", m: n, width: 0 };
  }
  if (n < 1 || n > 64) throw new DeviceError("BAD_TASK", `str codec of ${n} bytes`);
  return { kind: "str", m: 8 * n, width: n };
}

/** The m-bit code of an item (BigInt): an integer as it is; text as its UTF-8 bytes,
 * zero-padded on the right to the width, read as one big-endian integer. */
export function encodeItem(codec, item) {
  if (codec.kind === "int") {
    const decimal = typeof item === "string" && /^[0-9]+$/.test(item);
    if (!(decimal || typeof item === "bigint" || Number.isSafeInteger(item))) {
      throw new DeviceError("BAD_ITEM", `not an integer item: ${JSON.stringify(String(item))}`);
    }
    const v = BigInt(item);
    if (v < 0n || v >> BigInt(codec.m) !== 0n) {
      throw new DeviceError("BAD_ITEM", `integer item ${v} does not fit in ${codec.m} bits`);
    }
    return v;
  }
  const bytes = Buffer.from(String(item), "utf8");
  if (bytes.length > codec.width) {
    throw new DeviceError("BAD_ITEM", `item of ${bytes.length} bytes is over ${codec.width}`);
  }
  if (bytes.includes(0)) throw new DeviceError("BAD_ITEM", "an item cannot hold a zero byte");
  let v = 0n;
  for (let i = 0; i < codec.width; i++) v = (v << 8n) | BigInt(i < bytes.length ? bytes[i] : 0);
  return v;
}

/** The 64-bit key of the `length`-bit prefix of an m-bit code. */
export function prefixKey(code, m, length) {
  if (length < 0 || length > m) {
    throw new DeviceError("BAD_TASK", `prefix length ${length} outside 0..${m}`);
  }
  const prefix = code >> BigInt(m - length);
  if (length <= 64) return prefix;
  const n = Math.ceil(length / 64);
  const words = [];
  for (let j = n - 1; j >= 0; j--) words.push((prefix >> BigInt(64 * j)) & ((1n << 64n) - 1n));
  return fingerprint(words, length);
}

/** The oracle key of `item` for a task. */
export function itemKey(task, item) {
  const codec = parseCodec(task.codec);
  if (codec.m !== Number(task.m)) {
    throw new DeviceError("BAD_TASK", `codec ${task.codec} does not have m = ${task.m} bits`);
  }
  return prefixKey(encodeItem(codec, item), codec.m, Number(task.length));
}
