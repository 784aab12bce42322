// Known values of the device wire's deterministic steps (docs/device-wire.md §2-3), and the
// perturbations' frequencies. tests/clients/test_js_client.py checks the same steps against the
// Python implementation on many inputs.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  SeededRandom,
  bucket,
  encodeItem,
  fingerprint,
  hash32,
  hashKeys,
  parseCodec,
  perturb,
  prefixKey,
  splitmix64,
  taskFromMessage,
} from "../src/index.js";

test("splitmix64 and the fingerprint of a 70-bit prefix", () => {
  assert.equal(splitmix64(0n), 16294208416658607535n);
  assert.equal(splitmix64((1n << 64n) - 1n), 16490336266968443936n);
  const code = (1n << 69n) + 12345n;
  assert.equal(fingerprint([code >> 64n, code & ((1n << 64n) - 1n)], 70), 11953852722247313941n);
  assert.equal(prefixKey(code, 70, 70), 11953852722247313941n);
});

test("the OLH hash family", () => {
  const x = (1n << 40n) + 7n;
  assert.equal(hash32(hashKeys(42n), x), 1490504885n);
  assert.equal(bucket(42n, x, 55), 19);
});

test("item codes: integers and zero-padded UTF-8", () => {
  assert.equal(encodeItem(parseCodec("int:8"), "255"), 255n);
  assert.throws(() => encodeItem(parseCodec("int:8"), "256"), { code: "BAD_ITEM" });
  assert.throws(() => encodeItem(parseCodec("int:8"), "0x10"), { code: "BAD_ITEM" });
  assert.equal(encodeItem(parseCodec("str:3"), "é"), 0xc3a900n);
  assert.throws(() => encodeItem(parseCodec("str:3"), "abcd"), { code: "BAD_ITEM" });
  assert.equal(prefixKey(0xc3a900n, 24, 8), 0xc3n);
});

test("GRR keeps its symbol with probability e^ε/(e^ε+d−1) (5 sigma)", () => {
  const task = taskFromMessage({
    run_id: "r", task_id: "1", m: 8, length: 8, codec: "int:8", oracle: "grr", epsilon: 1.0,
    g: 0, pool_size: 0, pool_seed: "0", candidate_keys: ["1", "2", "3"],
  });
  const rng = new SeededRandom(7n);
  const n = 20000;
  const counts = [0, 0, 0, 0];
  for (let i = 0; i < n; i++) counts[perturb(task, 2n, rng).grr.symbol] += 1;
  const p = Math.E / (Math.E + 3);
  const q = (1 - p) / 3;
  for (const [s, prob] of [[0, q], [1, p], [2, q], [3, q]]) {
    assert.ok(Math.abs(counts[s] - n * prob) < 5 * Math.sqrt(n * prob * (1 - prob)), `${s}: ${counts}`);
  }
});

test("a task the client cannot answer is refused", () => {
  const base = {
    run_id: "r", task_id: "1", m: 8, length: 8, codec: "int:8", oracle: "olh", epsilon: 1.0,
    g: 4, pool_size: 0, pool_seed: "0", candidate_keys: [],
  };
  assert.equal(taskFromMessage(base).g, 4);
  for (const bad of [{ oracle: "nope" }, { g: 1 }, { epsilon: -1 }, { codec: "int:9" }, { length: 9 }]) {
    assert.throws(() => taskFromMessage({ ...base, ...bad }), { code: "BAD_TASK" });
  }
  assert.throws(() => taskFromMessage({ ...base, oracle: "grr" }), { code: "BAD_TASK" });
});

test("credentials and CA files the client cannot use are typed errors", async () => {
  const { ReporterClient } = await import("../src/index.js");
  const cred = "fhc2:party-0:3:0:0:tag";
  for (const bad of ["token", `${cred}\n`, `${cred}é`]) {
    assert.throws(() => new ReporterClient("127.0.0.1:1", { credential: bad, insecure: true }), {
      code: "BAD_CREDENTIAL_FORMAT",
    });
  }
  assert.throws(() => new ReporterClient("127.0.0.1:1", { credential: cred, caCert: "/nonexistent.pem" }), {
    code: "BAD_CA_CERT",
  });
  const client = new ReporterClient("127.0.0.1:1", { credential: cred, insecure: true, timeout: 5 });
  await assert.rejects(client.fetchTask(), { name: "EndpointUnavailable", code: "UNAVAILABLE" });
  client.close();
});
