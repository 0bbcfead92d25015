/**
 * pidstat as a library: ask whether processes exist on other hosts, answer
 * such questions, and read or write the wire protocol of IPC::Locker's
 * pidstatd.
 */
export { PidStatClient, DEFAULT_TIMEOUT_MS, DEFAULT_TRIES } from './client.js';
export type { ClientOptions, Result, Target } from './client.js';
export { describeFailure } from './failures.js';
export type { Failure } from './failures.js';
export { localPidExists, readStartToken } from './probe.js';
export { deaths, deathSignal, waitForExit, PidEndedError, DEFAULT_INTERVAL_MS } from './wait.js';
export type { PidEnd, WaitOptions, WaitTarget } from './wait.js';
export { KeyFileError } from './keys.js';
export { startServer, DEFAULT_RATE } from './server.js';
export type { Server, ServerOptions, ServerStats } from './server.js';
export type { SocketIo } from './native.js';
export { defaultPort, isLocalHost } from './host.js';
export {
  decodeReply,
  decodeRequest,
  encodeReply,
  encodeRequest,
  parsePid,
  ProtocolError,
  ALL_FLAGS,
  DEFAULT_FLAGS,
  FLAG_DEAD,
  FLAG_EXISTS,
  FLAG_START,
  FLAG_UNKNOWN,
  MAX_PID,
} from './protocol.js';
export type { Reply, Request, State } from './protocol.js';
export { ExitCode, CommandError } from './errors.js';
