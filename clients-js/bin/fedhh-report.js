#!/usr/bin/env node
// fedhh-report: a fedhh device client in JavaScript (docs/device-wire.md).
//
//   fedhh-report report --target HOST:PORT (--ca-cert ca.pem | --insecure) \
//       --credentials FILE --items FILE [--batch N] [--concurrency K] [--seed S] [--max-epsilon E]
//     Each user of the items file (lines `user<TAB>item`) fetches the open task, perturbs its item
//     and submits (K users at a time), or, with --batch, one relay fetches the task and submits
//     every user's report in calls of N. The credentials file is `fedhh party enroll --out`'s
//     (lines `user<TAB>credential`). Prints a JSON summary. --seed: the seeded test stream
//     instead of the cryptographic generator (tests only).
//     --save-tasks DIR: write each task fetched as DIR/task-<id>.bin (a ReportTask message).
//   fedhh-report submit --target ... --credential CRED --report JSON
//     Fetch the open task and submit the given Report message (proto3 JSON names, bytes as
//     base64) as is; prints {"count": n} or the typed refusal {"error", "code", "message"}.
//   fedhh-report perturb --task FILE --items FILE [--seed S]
//     Offline: the task as a binary ReportTask message, one item a line; writes a binary
//     ReportBatch message of their reports (no credentials) to stdout.
//   fedhh-report keys --task FILE --items FILE [--seeds S,S,...]
//     Offline: each item's oracle key, symbol among the candidates, bucket under each seed's hash
//     function and under the first pool seeds (JSON lines): the deterministic steps.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import {
  CryptoRandom,
  ReporterClient,
  SeededRandom,
  affineBucket,
  bucket,
  itemKey,
  loadService,
  makeReport,
  poolSeed,
  splitmix64,
  symbolOf,
  taskFromMessage,
} from "../src/index.js";

const OPTIONS = {
  target: { type: "string" },
  "ca-cert": { type: "string" },
  insecure: { type: "boolean", default: false },
  credentials: { type: "string" },
  items: { type: "string" },
  task: { type: "string" },
  batch: { type: "string" },
  concurrency: { type: "string", default: "16" },
  seed: { type: "string" },
  seeds: { type: "string", default: "" },
  "max-epsilon": { type: "string", default: "10" },
  wait: { type: "string", default: "60" },
  protos: { type: "string" },
  "save-tasks": { type: "string" },
  credential: { type: "string" },
  report: { type: "string" },
};

function table(path) {
  const out = new Map();
  for (const line of readFileSync(path, "utf8").split("\n")) {
    if (!line.trim() || line.startsWith("#")) continue;
    const tab = line.indexOf("\t");
    out.set(line.slice(0, tab), line.slice(tab + 1));
  }
  return out;
}

function lines(path) {
  return readFileSync(path, "utf8").split("\n").filter((l) => l !== "");
}

function rngFor(seed, user) {
  if (seed === undefined) return new CryptoRandom();
  return new SeededRandom(splitmix64(BigInt(seed)) ^ BigInt(user));
}

function readTask(path, protos) {
  const Service = loadService(protos);
  return taskFromMessage(Service.service.GetTask.responseDeserialize(readFileSync(path)));
}

async function report(opts) {
  const creds = table(opts.credentials);
  const items = table(opts.items);
  const common = {
    caCert: opts["ca-cert"],
    insecure: opts.insecure,
    maxEpsilon: Number(opts["max-epsilon"]),
    protos: opts.protos,
  };
  const users = [...items.keys()];
  const first = new ReporterClient(opts.target, { ...common, credential: creds.get(users[0]) });
  const counts = {};
  const refused = [];
  try {
    const saved = new Set();
    const save = (task) => {
      if (opts["save-tasks"] === undefined || saved.has(task.taskId)) return;
      saved.add(task.taskId);
      mkdirSync(opts["save-tasks"], { recursive: true });
      const bytes = loadService(opts.protos).service.GetTask.responseSerialize(task.message);
      writeFileSync(`${opts["save-tasks"]}/task-${task.taskId}.bin`, bytes);
    };
    if (opts.batch !== undefined) {
      // A relay: fetch the open task as a user still to report, submit the pending users'
      // reports for it in calls of --batch; those refused because the task filled up or closed
      // (FAILED_PRECONDITION) wait for the next task.
      const size = Number(opts.batch);
      const end = Date.now() + Number(opts.wait) * 1000;
      let pending = users;
      counts.accepted = 0;
      while (pending.length && Date.now() < end) {
        const relay = new ReporterClient(opts.target, { ...common, credential: creds.get(pending[0]), share: first });
        let task;
        try {
          task = await waitTask(relay, (end - Date.now()) / 1000);
        } catch (err) {
          if (err.name === "NoOpenTask") break;
          throw err;
        }
        save(task);
        const later = [];
        for (let lo = 0; lo < pending.length; lo += size) {
          const chunk = pending.slice(lo, lo + size);
          const entries = chunk.map((u) => [creds.get(u), makeReport(task, items.get(u), rngFor(opts.seed, u))]);
          let got;
          try {
            got = await relay.submitBatch(task, entries);
          } catch (err) {
            if (err.name !== "TaskClosed") throw err;
            later.push(...pending.slice(lo));
            break;
          }
          counts.accepted += got.accepted;
          for (const r of got.refused) {
            if (r.code === "FAILED_PRECONDITION") later.push(chunk[r.index]);
            else refused.push({ user: chunk[r.index], code: r.code, message: r.message });
          }
        }
        pending = later;
      }
      if (pending.length) counts["no-task"] = pending.length;
    } else {
      const todo = users[Symbol.iterator]();
      const device = async () => {
        for (const u of todo) {
          const client = new ReporterClient(opts.target, { ...common, credential: creds.get(u), share: first });
          const fetch = client.fetchTask.bind(client);
          client.fetchTask = async () => {
            const task = await fetch();
            save(task);
            return task;
          };
          try {
            const out = await client.report(items.get(u), rngFor(opts.seed, u), { wait: Number(opts.wait) });
            counts[out.status] = (counts[out.status] ?? 0) + 1;
          } catch (err) {
            counts[err.code] = (counts[err.code] ?? 0) + 1;
            refused.push({ user: u, code: err.code, message: err.reason ?? String(err) });
          }
        }
      };
      await Promise.all(Array.from({ length: Number(opts.concurrency) }, device));
    }
  } finally {
    first.close();
  }
  process.stdout.write(JSON.stringify({ users: users.length, outcomes: counts, refused }) + "\n");
}

async function waitTask(client, wait) {
  const end = Date.now() + wait * 1000;
  for (;;) {
    try {
      return await client.fetchTask();
    } catch (err) {
      if (err.name !== "NoOpenTask" || Date.now() > end) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

async function submitGiven(opts) {
  const client = new ReporterClient(opts.target, {
    credential: opts.credential,
    caCert: opts["ca-cert"],
    insecure: opts.insecure,
    protos: opts.protos,
  });
  let out;
  try {
    const task = await waitTask(client, Number(opts.wait));
    out = { count: await client.submit(task, JSON.parse(opts.report)) };
  } catch (err) {
    out = { error: err.name, code: err.code, message: err.reason ?? err.message };
  } finally {
    client.close();
  }
  process.stdout.write(JSON.stringify(out) + "\n");
}

function perturbOffline(opts) {
  const Service = loadService(opts.protos);
  const task = readTask(opts.task, opts.protos);
  const rng = opts.seed === undefined ? new CryptoRandom() : new SeededRandom(BigInt(opts.seed));
  const reports = lines(opts.items).map((item) => ({ credential: "", ldp_report: makeReport(task, item, rng) }));
  const msg = { run_id: task.runId, task_id: task.taskId, reports };
  process.stdout.write(Service.service.SubmitReportBatch.requestSerialize(msg));
}

function keysOffline(opts) {
  const task = readTask(opts.task, opts.protos);
  const seeds = opts.seeds ? opts.seeds.split(",").map((s) => BigInt(s)) : [];
  const g = task.g >= 2 ? task.g : 0;
  const pool = task.oracle === "olh-pool" ? Math.min(task.poolSize, 16) : 0;
  const hashOf = task.oracle === "olh-affine" ? affineBucket : bucket;
  for (const item of lines(opts.items)) {
    const key = itemKey(task, item);
    const row = {
      key: key.toString(),
      symbol: symbolOf(key, task),
      buckets: g ? seeds.map((s) => hashOf(s, key, g)) : [],
      pool_buckets: Array.from({ length: pool }, (_, i) => bucket(poolSeed(task.poolSeed, i), key, g)),
    };
    process.stdout.write(JSON.stringify(row) + "\n");
  }
}

async function main() {
  const { values, positionals } = parseArgs({ options: OPTIONS, allowPositionals: true });
  const command = positionals[0];
  if (command === "report") await report(values);
  else if (command === "submit") await submitGiven(values);
  else if (command === "perturb") perturbOffline(values);
  else if (command === "keys") keysOffline(values);
  else throw new Error(`usage: fedhh-report report|submit|perturb|keys ... (got ${command})`);
}

main().catch((err) => {
  process.stderr.write(`fedhh-report: ${err.name ?? "Error"}: ${err.message}\n`);
  process.exit(err.code === "BAD_ITEM" || err.code === "BAD_TASK" ? 2 : 1);
});
