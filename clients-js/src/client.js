// A device's client of a party agent's report endpoint (fedhh.v1.ReportService), loading
// protos/fedhh/v1/report.proto at run time. One user a client: its credential is the bearer
// token of every call.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";
import { DeviceError, EpsilonTooHigh, refusal } from "./errors.js";
import { itemKey } from "./items.js";
import { perturb } from "./oracles.js";
import { CryptoRandom } from "./random.js";
import { taskFromMessage } from "./task.js";

export const WIRE_VERSION = 2;
export const DEFAULT_PROTOS = fileURLToPath(new URL("../../protos", import.meta.url));
const LOADER_OPTIONS = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };

/** The ReportService definition (and its messages' codecs) from the .proto files. */
export function loadService(protos = DEFAULT_PROTOS) {
  const def = protoLoader.loadSync("fedhh/v1/report.proto", { ...LOADER_OPTIONS, includeDirs: [protos] });
  return grpc.loadPackageDefinition(def).fedhh.v1.ReportService;
}

/** The user id a credential is bound to (its third `:`-separated part). */
export function userOf(credential) {
  const parts = String(credential).split(":");
  const printable = /^[\x21-\x7e]+$/.test(String(credential)); // it travels as a header value
  if (![4, 6].includes(parts.length) || !/^\d+$/.test(parts[2]) || !printable) {
    throw new DeviceError("BAD_CREDENTIAL_FORMAT", "not a fedhh user credential");
  }
  return parts[2];
}

/** The ε-LDP report (a Report message object) of a user holding `item`. */
export function makeReport(task, item, rng = new CryptoRandom()) {
  return perturb(task, itemKey(task, item), rng);
}

export class ReporterClient {
  /** `target` host:port; `caCert` a PEM file (TLS, the default; without it the system roots)
   * or `insecure: true`; `share` another client whose connection this one uses (closing either
   * closes it). */
  constructor(target, { credential, caCert, insecure = false, maxEpsilon = 10.0, timeout = 10, share, protos } = {}) {
    this.userId = userOf(credential);
    this.credential = credential;
    this.maxEpsilon = maxEpsilon;
    this.timeout = timeout;
    if (share !== undefined) {
      this.stub = share.stub;
    } else {
      const Service = loadService(protos);
      let root = null;
      try {
        root = caCert ? readFileSync(caCert) : null;
      } catch (err) {
        throw new DeviceError("BAD_CA_CERT", `cannot read the CA certificate: ${err.message}`);
      }
      const creds = insecure ? grpc.credentials.createInsecure() : grpc.credentials.createSsl(root);
      this.stub = new Service(target, creds);
    }
  }

  _call(method, request, credential = this.credential) {
    const md = new grpc.Metadata();
    md.set("authorization", `Bearer ${credential}`);
    const deadline = new Date(Date.now() + this.timeout * 1000);
    return new Promise((resolve, reject) => {
      this.stub[method](request, md, { deadline }, (err, resp) => {
        if (err) reject(refusal(grpc.status[err.code] ?? String(err.code), err.details ?? ""));
        else resolve(resp);
      });
    });
  }

  /** The open task (EpsilonTooHigh if it asks more ε than this device allows). */
  async fetchTask() {
    const msg = await this._call("GetTask", { user_id: this.userId, wire_version: WIRE_VERSION });
    const task = taskFromMessage(msg);
    task.message = msg;
    if (task.epsilon > this.maxEpsilon) {
      throw new EpsilonTooHigh("EPSILON_TOO_HIGH", `task asks ε = ${task.epsilon}, over ${this.maxEpsilon}`);
    }
    return task;
  }

  /** Submit this user's report for `task`; resolves to the task's report count. */
  async submit(task, report) {
    const resp = await this._call("SubmitReport", {
      user_id: this.userId,
      run_id: task.runId,
      task_id: task.taskId,
      ldp_report: report,
    });
    return Number(resp.reports_in_task);
  }

  /** Many users' reports [[credential, report], ...] in one call (a relay); resolves to
   * {accepted, refused: [{index, code, message}]}. */
  async submitBatch(task, entries) {
    const resp = await this._call("SubmitReportBatch", {
      run_id: task.runId,
      task_id: task.taskId,
      reports: entries.map(([credential, report]) => ({ credential, ldp_report: report })),
    });
    return {
      accepted: Number(resp.accepted),
      refused: resp.refused.map((r) => ({ index: Number(r.index), code: r.code, message: r.message })),
    };
  }

  /** Fetch, perturb here, submit once; outcome status as the Python SDK's report(). */
  async report(item, rng = new CryptoRandom(), { wait = 30 } = {}) {
    const end = Date.now() + wait * 1000;
    let delay = 50;
    for (;;) {
      try {
        const task = await this.fetchTask();
        await this.submit(task, makeReport(task, item, rng));
        return { accepted: true, status: "accepted", runId: task.runId, taskId: task.taskId };
      } catch (err) {
        if (err.name === "EpsilonTooHigh") return { accepted: false, status: "epsilon-too-high" };
        if (err.name === "AlreadyReported") return { accepted: false, status: "already-reported" };
        if (err.name === "BadCredential") return { accepted: false, status: "bad-credential" };
        if (err.name !== "NoOpenTask" && err.name !== "TaskClosed") throw err;
      }
      if (Date.now() + delay > end) return { accepted: false, status: "no-task" };
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 1.5, 500);
    }
  }

  close() {
    this.stub.close();
  }
}
