export * from "./errors.js";
export * from "./hashing.js";
export * from "./items.js";
export * from "./oracles.js";
export * from "./random.js";
export * from "./task.js";
export { ReporterClient, loadService, makeReport, userOf, WIRE_VERSION } from "./client.js";
