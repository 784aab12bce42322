// The report task as the device uses it, from the ReportTask message (wire version 2).
import { DeviceError } from "./errors.js";
import { NEEDS_CANDIDATES, ORACLES } from "./oracles.js";
import { parseCodec } from "./items.js";

const MAX_G = 2 ** 31;
const MAX_POOL = 2 ** 24;

function bad(why) {
  return new DeviceError("BAD_TASK", why);
}

/** A checked task from a decoded ReportTask message (proto-loader object, 64-bit integers as
 * decimal strings). Throws DeviceError("BAD_TASK") for a task this client cannot answer. */
export function taskFromMessage(msg) {
  const task = {
    runId: msg.run_id,
    taskId: String(msg.task_id),
    m: Number(msg.m),
    length: Number(msg.length),
    codec: msg.codec,
    oracle: msg.oracle,
    epsilon: Number(msg.epsilon),
    g: Number(msg.g),
    poolSize: Number(msg.pool_size),
    poolSeed: BigInt(msg.pool_seed ?? 0),
    candidateKeys: (msg.candidate_keys ?? []).map((k) => BigInt(k)),
  };
  task.symbols = new Map(task.candidateKeys.map((k, i) => [k, i]));
  if (ORACLES[task.oracle] === undefined) throw bad(`unknown oracle ${task.oracle}`);
  if (!(task.epsilon > 0 && Number.isFinite(task.epsilon))) throw bad(`ε = ${task.epsilon}`);
  if (parseCodec(task.codec).m !== task.m) throw bad(`codec ${task.codec} is not m = ${task.m}`);
  if (!(task.length >= 0 && task.length <= task.m)) throw bad(`prefix length ${task.length}`);
  if (NEEDS_CANDIDATES.has(task.oracle)) {
    if (task.candidateKeys.length === 0) throw bad(`a ${task.oracle} task needs candidates`);
    if (task.symbols.size !== task.candidateKeys.length) throw bad("repeated candidate keys");
  } else if (!(task.g >= 2 && task.g <= MAX_G)) {
    throw bad(`g = ${task.g}`);
  }
  if (task.oracle === "olh-affine" && !Number.isInteger(Math.log2(task.g))) {
    throw bad(`g = ${task.g} is not a power of two`);
  }
  if (task.oracle === "olh-pool" && !(task.poolSize >= 1 && task.poolSize <= MAX_POOL)) {
    throw bad(`pool_size = ${task.poolSize}`);
  }
  return task;
}
