import { spawn, type ChildProcess } from 'node:child_process';
import { constants } from 'node:os';
import { PidStatClient } from './client.js';
import { isLocalHost } from './host.js';
import { localPidExists, readStartToken } from './probe.js';
import { FLAG_DEAD, FLAG_EXISTS, FLAG_START } from './protocol.js';
import type { SocketIo } from './native.js';
import { monotonicMs } from './time.js';

/**
 * pidwatch's core: watch a pid, on this host or through a daemon, and report
 * its death; run a command as the leader of its own process group, stop that
 * group, and tell how the command ended.
 */

export interface WatchOptions {
  host: string;
  pid: number;
  /** Time between two questions, in ms. @default 1000 */
  intervalMs: number;
  port?: number;
  /** Probe a pid on this host locally, without a daemon. @default true */
  local?: boolean;
  onDebug?: (line: string) => void;
  /** How the client's sockets are read (ClientOptions.io). */
  io?: SocketIo;
  /** Authenticate questions and answers with this key file (ClientOptions.keyFile). */
  keyFile?: string;
}

/** Whether a signal name or number is one this host knows; the canonical name (SIGHUP) or undefined. */
export function parseSignal(text: string): NodeJS.Signals | undefined {
  const bare = text.replace(/^-/, '').toUpperCase();
  if (/^[0-9]+$/.test(bare)) {
    const number = Number(bare);
    return (Object.keys(constants.signals) as NodeJS.Signals[]).find((name) => constants.signals[name] === number);
  }
  const name = (bare.startsWith('SIG') ? bare : `SIG${bare}`) as NodeJS.Signals;
  return name in constants.signals ? name : undefined;
}

/**
 * Resolves once `pid` on `host` is known to be dead; never on silence, since
 * UDP may be lost and a daemon may be down. The first question asks for the
 * process's start token (flags 11); later ones send it and ask to hear only of
 * death (flags 2), so a live pid costs no reply and a pid reused by another
 * process between two questions still counts as dead.
 */
export async function waitForDeath(opts: WatchOptions, signal: AbortSignal): Promise<void> {
  const local = (opts.local ?? true) && (await isLocalHost(opts.host));
  if (local && localPidExists(opts.pid) !== undefined) return waitForLocalDeath(opts, signal);
  const client = new PidStatClient({
    // Each question waits for its answer at most one interval, then the next goes out.
    timeoutMs: opts.intervalMs,
    tries: 1,
    local: false,
    ...(opts.port !== undefined && { port: opts.port }),
    ...(opts.onDebug && { onDebug: opts.onDebug }),
    ...(opts.io && { io: opts.io }),
    ...(opts.keyFile !== undefined && { keyFile: opts.keyFile }),
  });
  const onAbort = () => void client.close();
  signal.addEventListener('abort', onAbort);
  try {
    let start: string | undefined;
    let knowsStart = false;
    while (!signal.aborted) {
      const began = monotonicMs();
      const flags = knowsStart ? FLAG_DEAD : FLAG_EXISTS | FLAG_DEAD | FLAG_START;
      const result = await client.query(start === undefined ? { host: opts.host, pid: opts.pid, flags } : { host: opts.host, pid: opts.pid, flags, start });
      if (result.state === 'dead') return;
      if (result.state === 'exists') {
        // An old daemon sends no token: then there is none to compare.
        start = result.start;
        knowsStart = true;
      }
      const rest = opts.intervalMs - (monotonicMs() - began);
      if (rest > 0) await delay(rest, signal);
    }
  } finally {
    signal.removeEventListener('abort', onAbort);
    await client.close();
  }
}

async function waitForLocalDeath(opts: WatchOptions, signal: AbortSignal): Promise<void> {
  const start = readStartToken(opts.pid);
  while (!signal.aborted) {
    if (localPidExists(opts.pid, start) === false) return;
    await delay(opts.intervalMs, signal);
  }
}

function delay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done);
  });
}

/** How a command ended: its exit code, or the signal that killed it. */
export type Ending = { code: number; signal?: undefined } | { code?: undefined; signal: NodeJS.Signals };

/**
 * Runs `command` with /bin/sh -c as the leader of a new process group (and
 * session: Node offers setsid, not setpgid), with pidwatch's own stdio.
 */
export function runCommand(command: string, cwd: string | undefined): { child: ChildProcess; ended: Promise<Ending> } {
  const child = spawn('/bin/sh', ['-c', command], { stdio: 'inherit', detached: true, ...(cwd !== undefined && { cwd }) });
  const ended = new Promise<Ending>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code, sig) => resolve(sig !== null ? { signal: sig } : { code: code ?? 0 }));
  });
  return { child, ended };
}

/** Sends `sig` to the whole process group led by `pid`; false if it is gone. */
export function signalGroup(pid: number, sig: NodeJS.Signals): boolean {
  try {
    process.kill(-pid, sig);
    return true;
  } catch {
    return false;
  }
}
