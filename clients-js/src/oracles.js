// The perturbation each oracle's device does (docs/device-wire.md §4), as plain objects for the
// `oracle` case of the Report message (protos/fedhh/v1/report.proto).
import { affineBucket, bucket, poolSeed } from "./hashing.js";
import { DeviceError } from "./errors.js";

/** GRR over d symbols: the true one with probability p, else a uniform other one. */
export function randomisedResponse(truth, d, p, rng) {
  if (rng.double() < p) return truth;
  const other = rng.below(d - 1);
  return other >= truth ? other + 1 : other;
}

/** The symbol of a key: its index among the task's candidate keys, else |C| (any other key). */
export function symbolOf(key, task) {
  return task.symbols.get(key) ?? task.candidateKeys.length;
}

function grr(task, key, rng) {
  const d = task.candidateKeys.length + 1;
  const e = Math.exp(task.epsilon);
  const symbol = randomisedResponse(symbolOf(key, task), d, e / (e + d - 1), rng);
  return { grr: { symbol } };
}

function oue(task, key, rng) {
  const d = task.candidateKeys.length + 1;
  const truth = symbolOf(key, task);
  const threshold = Math.ceil(2 ** 32 / (Math.exp(task.epsilon) + 1));
  const bits = Buffer.alloc(Math.ceil(d / 8));
  for (let i = 0; i < d; i++) {
    const one = i === truth ? rng.bit() === 1 : rng.u32() < threshold;
    if (one) bits[i >> 3] |= 0x80 >> (i & 7);
  }
  return { oue: { bits } };
}

function localHashing(task, seed, key, rng) {
  const g = task.g;
  const e = Math.exp(task.epsilon);
  return randomisedResponse(bucket(seed, key, g), g, e / (e + g - 1), rng);
}

function olh(task, key, rng) {
  const seed = rng.u64();
  return { olh: { seed: seed.toString(), bucket: localHashing(task, seed, key, rng) } };
}

function olhAffine(task, key, rng) {
  const seed = rng.u64();
  const g = task.g;
  const e = Math.exp(task.epsilon);
  const y = randomisedResponse(affineBucket(seed, key, g), g, e / (e + g - 1), rng);
  return { olh_affine: { seed: seed.toString(), bucket: y } };
}

function olhPool(task, key, rng) {
  const index = rng.below(task.poolSize);
  const seed = poolSeed(task.poolSeed, index);
  return { olh_pool: { seed_index: index, bucket: localHashing(task, seed, key, rng) } };
}

export const ORACLES = { grr, oue, olh, "olh-pool": olhPool, "olh-affine": olhAffine };
export const NEEDS_CANDIDATES = new Set(["grr", "oue"]);

/** The Report message (as an object for proto-loader) of a user whose key is `key`. */
export function perturb(task, key, rng) {
  const fn = ORACLES[task.oracle];
  if (fn === undefined) throw new DeviceError("BAD_TASK", `unknown oracle ${task.oracle}`);
  return fn(task, key, rng);
}
