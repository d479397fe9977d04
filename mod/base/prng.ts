// Seeded pseudo-random numbers for tests, simulations and benchmarks. Pure code takes a
// Prng instead of calling Math.random(), so a seed reproduces a run.

import { assert } from "./assert.ts";

/** xoshiro128** seeded through splitmix32; fast, 32-bit state words, period 2^128-1. */
export class Prng {
  #s0: number;
  #s1: number;
  #s2: number;
  #s3: number;

  constructor(seed: number) {
    assert(Number.isSafeInteger(seed), "Prng seed must be a safe integer");
    let x = (seed ^ Math.floor(seed / 0x1_0000_0000)) >>> 0;
    const next = (): number => {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.#s0 = next();
    this.#s1 = next();
    this.#s2 = next();
    this.#s3 = next();
  }

  /** Next unsigned 32-bit integer. */
  nextU32(): number {
    const result = Math.imul(rotl(Math.imul(this.#s1, 5) >>> 0, 7), 9) >>> 0;
    const t = (this.#s1 << 9) >>> 0;
    this.#s2 = (this.#s2 ^ this.#s0) >>> 0;
    this.#s3 = (this.#s3 ^ this.#s1) >>> 0;
    this.#s1 = (this.#s1 ^ this.#s2) >>> 0;
    this.#s0 = (this.#s0 ^ this.#s3) >>> 0;
    this.#s2 = (this.#s2 ^ t) >>> 0;
    this.#s3 = rotl(this.#s3, 11);
    return result;
  }

  /** Uniform integer in [0, bound). */
  nextInt(bound: number): number {
    assert(Number.isInteger(bound) && bound > 0 && bound <= 0x1_0000_0000, "nextInt bound");
    return Math.floor((this.nextU32() / 0x1_0000_0000) * bound);
  }

  /** Uniform float in [0, 1). */
  nextFloat(): number {
    return this.nextU32() / 0x1_0000_0000;
  }

  /** Fills `target` with random bytes and returns it. */
  fill(target: Uint8Array): Uint8Array {
    let i = 0;
    for (; i + 4 <= target.length; i += 4) {
      const v = this.nextU32();
      target[i] = v;
      target[i + 1] = v >>> 8;
      target[i + 2] = v >>> 16;
      target[i + 3] = v >>> 24;
    }
    if (i < target.length) {
      let v = this.nextU32();
      for (; i < target.length; i++, v >>>= 8) target[i] = v;
    }
    return target;
  }

  /** A fresh array of `length` random bytes. */
  bytes(length: number): Uint8Array {
    return this.fill(new Uint8Array(length));
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}
