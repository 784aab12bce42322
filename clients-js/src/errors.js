// Typed errors of the device client: every refusal of the endpoint is a DeviceRefusal subclass
// (code: the gRPC status name, message: the endpoint's reason), the same classes as the Python
// SDK's (fedhh.clients.reporter); problems found on the device are a DeviceError with its code.

export class DeviceError extends Error {
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.name = new.target.name;
    this.code = code;
    this.reason = message;
  }
}

export class DeviceRefusal extends DeviceError {}
export class BadCredential extends DeviceRefusal {}
export class NoOpenTask extends DeviceRefusal {}
export class AlreadyReported extends DeviceRefusal {}
export class TaskClosed extends DeviceRefusal {}
export class ReportRefused extends DeviceRefusal {}
export class EndpointUnavailable extends DeviceRefusal {}
export class EpsilonTooHigh extends DeviceRefusal {}

const BY_STATUS = {
  UNAUTHENTICATED: BadCredential,
  PERMISSION_DENIED: BadCredential,
  NOT_FOUND: NoOpenTask,
  ALREADY_EXISTS: AlreadyReported,
  FAILED_PRECONDITION: TaskClosed,
  INVALID_ARGUMENT: ReportRefused,
  RESOURCE_EXHAUSTED: ReportRefused,
  UNAVAILABLE: EndpointUnavailable,
  DEADLINE_EXCEEDED: EndpointUnavailable,
  CANCELLED: EndpointUnavailable,
};

/** The typed refusal of a gRPC status name and message. */
export function refusal(code, message) {
  const Cls = BY_STATUS[code] ?? DeviceRefusal;
  return new Cls(code, message);
}
