/**
 * pidstat as a library: ask whether processes exist on other hosts, answer
 * such questions, and read or write the wire protocol of IPC::Locker's
 * pidstatd.
 */
export { PidStatClient, DEFAULT_TIMEOUT_MS, DEFAULT_TRIES } from './client/client.js';
export type { ClientOptions, Result, Target } from './client/client.js';
export { describeFailure } from './client/failures.js';
export type { Failure } from './client/failures.js';
export { localPidExists } from './sys/pidref.js';
export { readStartToken } from './sys/probe.js';
export { deaths, deathSignal, waitForExit, PidEndedError, DEFAULT_INTERVAL_MS } from './deaths/wait.js';
export type { PidEnd, WaitOptions, WaitTarget } from './deaths/wait.js';
export { KeyFileError, readKeyFile } from './wire/keys.js';
export type { KeyRing } from './wire/keys.js';
export { startServer, DEFAULT_RATE } from './daemon/server.js';
export type { Server, ServerOptions, ServerStats } from './daemon/server.js';
export type { SocketIo } from './sys/native.js';
export { defaultPort, isLocalHost } from './net/host.js';
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
} from './wire/protocol.js';
export type { Reply, Request, State } from './wire/protocol.js';
export { ExitCode, CommandError } from './cli/errors.js';
