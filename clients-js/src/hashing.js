// The hash functions of the device wire (docs/device-wire.md §3): SplitMix64, the fingerprint
// of a long prefix and the strongly universal hash family of OLH. All arithmetic is on 64-bit
// words, here BigInt values reduced mod 2^64.

const MASK64 = (1n << 64n) - 1n;
const LOW32 = (1n << 32n) - 1n;
const GOLDEN = 0x9e3779b97f4a7c15n;
const MIX1 = 0xbf58476d1ce4e5b9n;
const MIX2 = 0x94d049bb133111ebn;
export const FINGERPRINT_SALT = 0xf1a9e2c5b3d4a697n;
export const SALT_HI = 0xd1b54a32d192ed03n;
export const SALT_B = 0x8cb92ba72f3d8dd7n;

/** SplitMix64's finaliser of the word x + golden ratio (mod 2^64). */
export function splitmix64(x) {
  let z = (BigInt.asUintN(64, x) + GOLDEN) & MASK64;
  z = ((z ^ (z >> 30n)) * MIX1) & MASK64;
  z = ((z ^ (z >> 27n)) * MIX2) & MASK64;
  return z ^ (z >> 31n);
}

/** The 64-bit key of a prefix of `length` > 64 bits given as its 64-bit words, most
 * significant first: h = splitmix64(length XOR salt), then h = splitmix64(h XOR word). */
export function fingerprint(words, length) {
  let h = splitmix64(BigInt(length) ^ FINGERPRINT_SALT);
  for (const w of words) h = splitmix64(h ^ w);
  return h;
}

/** The keys (aLo, aHi, b) of the hash function of a 64-bit seed. */
export function hashKeys(seed) {
  const s = BigInt.asUintN(64, seed);
  return { aLo: splitmix64(s), aHi: splitmix64(s ^ SALT_HI), b: splitmix64(s ^ SALT_B) };
}

/** h(x) in [0, 2^32): the top 32 bits of aLo·x_lo + aHi·x_hi + b (mod 2^64). */
export function hash32(keys, x) {
  const t = (keys.aLo * (x & LOW32) + keys.aHi * (x >> 32n) + keys.b) & MASK64;
  return t >> 32n;
}

/** The bucket in [0, g) of a 32-bit hash value: (h·g) >> 32. */
export function bucketOf(h, g) {
  return Number((h * BigInt(g)) >> 32n);
}

/** The bucket of key x under the hash function of `seed`. */
export function bucket(seed, x, g) {
  return bucketOf(hash32(hashKeys(seed), x), g);
}

/** The seed of index i of the public pool of `poolSeed`: i XOR splitmix64(poolSeed). */
export function poolSeed(poolSeedValue, index) {
  return BigInt(index) ^ splitmix64(BigInt(poolSeedValue));
}

export const AFFINE_ROW_SALT = 0xa5f152c30b7de911n;
export const AFFINE_OFFSET_SALT = 0x3c6ef372fe94f82bn;

function parity(x) {
  let v = x;
  for (const shift of [32n, 16n, 8n, 4n, 2n, 1n]) v ^= v >> shift;
  return v & 1n;
}

/** The bucket in [0, g) of key x under the affine hash of `seed` (g = 2^t): bit j is the parity
 * of row_j AND x, row_j = splitmix64(seed XOR splitmix64(j + salt)), XOR the t-bit offset
 * splitmix64(seed XOR offset salt) mod g. */
export function affineBucket(seed, x, g) {
  const s = BigInt.asUintN(64, seed);
  const t = Math.log2(g);
  let h = 0n;
  for (let j = 0; j < t; j++) {
    const row = splitmix64(s ^ splitmix64(BigInt.asUintN(64, BigInt(j) + AFFINE_ROW_SALT)));
    h |= parity(row & x) << BigInt(j);
  }
  const offset = splitmix64(s ^ AFFINE_OFFSET_SALT) & BigInt(g - 1);
  return Number(h ^ offset);
}
