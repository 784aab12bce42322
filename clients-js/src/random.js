// Randomness of the device's perturbation (docs/device-wire.md §4). A real device draws from the
// platform's cryptographic generator; a seeded stream (SplitMix64) exists for tests only, so a
// run of the client can be repeated exactly. Both give uniform 64-bit words, from which:
//   u32()      = the word's top 32 bits;
//   double()   = (word >> 11) · 2^-53, uniform in [0, 1);
//   below(n)   = for 1 ≤ n ≤ 2^32: u32() drawn until it is < 2^32 − (2^32 mod n), mod n;
//   bit()      = the word's top bit.
import { randomFillSync } from "node:crypto";
import { splitmix64 } from "./hashing.js";

const TWO32 = 2 ** 32;

class Words {
  u32() {
    return Number(this.u64() >> 32n);
  }

  double() {
    return Number(this.u64() >> 11n) * 2 ** -53;
  }

  below(n) {
    if (!(n >= 1 && n <= TWO32)) throw new RangeError(`below(${n})`);
    const limit = TWO32 - (TWO32 % n);
    for (;;) {
      const x = this.u32();
      if (x < limit) return x % n;
    }
  }

  bit() {
    return Number(this.u64() >> 63n);
  }
}

/** Words of the platform's cryptographic generator (what a device uses). */
export class CryptoRandom extends Words {
  constructor() {
    super();
    this.buf = new BigUint64Array(256);
    this.pos = this.buf.length;
  }

  u64() {
    if (this.pos === this.buf.length) {
      randomFillSync(this.buf);
      this.pos = 0;
    }
    return this.buf[this.pos++];
  }
}

/** The SplitMix64 stream of a seed: word i (from 1) is splitmix64(seed + (i − 1)·golden);
 * for tests only (anyone who knows the seed knows the noise). */
export class SeededRandom extends Words {
  constructor(seed) {
    super();
    this.state = BigInt.asUintN(64, BigInt(seed));
  }

  u64() {
    const out = splitmix64(this.state);
    this.state = BigInt.asUintN(64, this.state + 0x9e3779b97f4a7c15n);
    return out;
  }
}
