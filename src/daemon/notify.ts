import { loadLinuxCalls } from '../sys/native.js';
import type { Problem } from '../sys/problems.js';

/**
 * The service manager's notification protocol (sd_notify(3)): newline-
 * separated `KEY=value` states in one datagram to the Unix datagram socket
 * that NOTIFY_SOCKET names (a path, or `@name` for an abstract socket).
 * systemd's `Type=notify` waits for READY=1, shows STATUS= in `systemctl
 * status`, and with `WatchdogSec=` restarts a service whose WATCHDOG=1 pings
 * stop. Node has no Unix datagram sockets: the addon sends (unixSend in
 * native/linux.c), and what is sent, and when, is decided here. A state
 * the socket does not take is dropped, as sd_notify does: notifying never
 * blocks or stops the daemon.
 * @see https://www.freedesktop.org/software/systemd/man/latest/sd_notify.html
 */

export const NOTIFY_ENV = 'NOTIFY_SOCKET';

/** How often STATUS= tells the counters: `systemctl status` shows the last. */
export const STATUS_INTERVAL_MS = 5000;

/** Sends states to the service manager. */
export interface Notifier {
  /** `READY=1`, with the other states given (`MAINPID=`, `STATUS=`). */
  ready(...states: string[]): void;
  status(text: string): void;
  stopping(): void;
  /** Sends states as given, one `KEY=value` each. */
  send(...states: string[]): void;
}

/**
 * The notifier NOTIFY_SOCKET names; undefined when it is unset (no service
 * manager waits), or the problem that keeps it from being notified (no
 * addon to send with).
 */
export function openNotifier(env: NodeJS.ProcessEnv = process.env): Notifier | { problem: Problem } | undefined {
  const path = env[NOTIFY_ENV];
  if (path === undefined || path === '') return undefined;
  // sd_notify(3) takes an absolute path or an abstract name; anything else is no socket of a service manager.
  if (!path.startsWith('/') && !path.startsWith('@')) return { problem: { kind: 'not-a-socket-name', variable: NOTIFY_ENV, value: path } };
  const { addon, why } = loadLinuxCalls();
  if (addon === undefined) return { problem: { kind: 'no-addon', why: why! } };
  const unixSend = addon.unixSend;
  if (unixSend === undefined) return { problem: { kind: 'old-addon' } };
  // One state per line: a newline inside a value would start a state of its own.
  return notifierFrom((states) => unixSend(path, Buffer.from(states.map((state) => state.replace(/[\r\n]+/g, ' ')).join('\n'))));
}

/** A Notifier whose states go to `send`: the socket, or a process that sends them on. */
export function notifierFrom(send: (states: string[]) => void): Notifier {
  return {
    send: (...states) => send(states),
    ready: (...states) => send(['READY=1', ...states]),
    status: (text) => send([`STATUS=${text}`]),
    stopping: () => send(['STOPPING=1']),
  };
}

/**
 * How often to send WATCHDOG=1: half of WATCHDOG_USEC, as sd_watchdog_enabled(3)
 * advises, when it is set for this process (WATCHDOG_PID unset or ours: a
 * variable inherited from a parent is not meant for us); else undefined.
 * @see https://www.freedesktop.org/software/systemd/man/latest/sd_watchdog_enabled.html
 */
export function watchdogIntervalMs(env: NodeJS.ProcessEnv = process.env, pid = process.pid): number | undefined {
  const usec = env['WATCHDOG_USEC'];
  if (usec === undefined || !/^[0-9]{1,15}$/.test(usec) || Number(usec) === 0) return undefined;
  const owner = env['WATCHDOG_PID'];
  if (owner !== undefined && owner !== '' && owner !== String(pid)) return undefined;
  return Math.max(1, Math.floor(Number(usec) / 2000));
}

export interface Heartbeat {
  /** Stops the pings and the status lines; safe to call more than once. */
  stop(): void;
}

/**
 * WATCHDOG=1 at `watchdogMs` (when given) and STATUS= from `status()` every
 * `statusMs`, until stop(). The timers run on the event loop the daemon
 * answers on: a loop that hangs stops the pings, and systemd restarts it.
 * They keep no process alive.
 */
export function startHeartbeat(notifier: Notifier, status: () => string, watchdogMs: number | undefined, statusMs = STATUS_INTERVAL_MS): Heartbeat {
  const timers = [setInterval(() => notifier.status(status()), statusMs).unref()];
  if (watchdogMs !== undefined) timers.push(setInterval(() => notifier.send('WATCHDOG=1'), watchdogMs).unref());
  return {
    stop() {
      for (const timer of timers) clearInterval(timer);
      timers.length = 0;
    },
  };
}
