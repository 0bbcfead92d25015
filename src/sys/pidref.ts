import { constants } from 'node:os';
import { loadLinuxCalls } from './native.js';
import { pidExists, readStartToken } from './probe.js';

/**
 * A process as the suite names it: its pid and its start token (probe.ts,
 * readStartToken), which no later process given the same pid shares
 * (doc/protocol.md, start tokens). Plain data: it travels in a request, in
 * pidwatch's watcher configuration and in the daemon's tables alike. What
 * follows in this file is what may be asked of one: is it still the same
 * process, does it exist, tell me when it ends, signal it.
 */
export interface ProcessRef {
  pid: number;
  /** Its start token; absent where it was not known when the process was named. */
  start?: string | undefined;
}

/** The process that has `pid` now. */
export function processRef(pid: number): ProcessRef {
  return { pid, start: readStartToken(pid) };
}

/**
 * The pid-reuse check, the suite's only one: whether the process that has
 * the pid now is the one `ref` names. true; false (another process has the
 * pid, or none does); undefined where that cannot be told: `ref` has no
 * start token, or /proc cannot be read (gone meanwhile, or hidden by
 * `hidepid`). Read at one cost whatever the thread count (probe.ts).
 */
export function isSameProcess(ref: ProcessRef): boolean | undefined {
  return ref.start === undefined ? undefined : isSameStart(ref, readStartToken(ref.pid));
}

/**
 * isSameProcess for a start token of the pid read already (`token`, as a
 * table of /proc holds it): undefined where either token is unknown.
 */
export function isSameStart(ref: ProcessRef, token: string | undefined): boolean | undefined {
  return ref.start === undefined || token === undefined ? undefined : token === ref.start;
}

/**
 * Whether the process exists, as kill(pid, 0) tells (a zombie too, as
 * `kill -0`): true, false, or undefined where that cannot be told. A live
 * pid that is another process's now (isSameProcess false) counts as dead; a
 * start token that cannot be read says nothing, never a death on that alone.
 */
export function processExists(ref: ProcessRef): boolean | undefined {
  const exists = pidExists(ref.pid);
  return exists === true ? isSameProcess(ref) !== false : exists;
}

/**
 * processExists, as the library offers it (README, Library): whether
 * process `pid` exists on this host; with `start`, the start token it had
 * when named, a pid that is another process's now counts as dead.
 */
export function localPidExists(pid: number, start?: string): boolean | undefined {
  return processExists({ pid, start });
}

/**
 * Calls `onEnd` once when the process ends (its zombie included), told by
 * the kernel through a pidfd the event loop polls (the addon's watchExit),
 * at no cost while it runs. Returns what stops the watch (after which
 * onEnd is never called); a negative errno where pidfd_open(2) refused
 * the pid (-EINVAL or -ENOENT for a thread that leads no process, -ESRCH
 * for one gone, -ENOSYS before Linux 5.3, -EMFILE); undefined where the
 * addon has no exit watches. The pidfd is of whatever process has the pid
 * when it is opened: where that is not the one `ref` names (isSameProcess
 * false), the one named has ended already, and onEnd is called at once,
 * from a microtask.
 */
export function watchEnd(ref: ProcessRef, onEnd: () => void): (() => void) | number | undefined {
  const { watchExit, unwatchExit } = loadLinuxCalls().addon ?? {};
  if (watchExit === undefined || unwatchExit === undefined) return undefined;
  let watching = true;
  const handle = watchExit(ref.pid, () => {
    if (!watching) return;
    watching = false;
    onEnd();
  });
  if (handle === undefined) return undefined;
  if (typeof handle === 'number') return handle;
  const stop = (): void => {
    if (!watching) return;
    watching = false;
    unwatchExit(handle);
  };
  if (isSameProcess(ref) === false) {
    queueMicrotask(() => {
      if (!watching) return;
      stop();
      onEnd();
    });
  }
  return stop;
}

/**
 * A handle on one process for signalling it: a pidfd where the addon and
 * the kernel give one (native/linux.c, pidfd signals), which names the
 * process that had the pid when it was opened and never a later one, as
 * systemd's PidRef does. Opened before the caller checks that the pid is
 * still the process it means (its start token), a signal through it reaches
 * that process or, once that one has ended, nothing: never a process that
 * got the pid between the check and the signal. Where no pidfd can be had
 * (no addon, a kernel before Linux 5.3, no descriptor left), the signal goes
 * by pid, as kill(2), and that window stays open.
 */
export interface PidRef {
  readonly pid: number;
  /** Whether it holds a pidfd (false: signals go by pid). */
  readonly pinned: boolean;
  /** Sends `signal`; whether it was sent (false once the process has ended). */
  signal(signal: NodeJS.Signals): boolean;
  /** Closes the pidfd; safe to call more than once. */
  close(): void;
}

const ESRCH = -constants.errno.ESRCH;

/** A reference to process `pid`, pinned by a pidfd where one can be opened. */
export function openPidRef(pid: number): PidRef {
  const { pidfdOpen, pidfdSignal, pidfdClose } = loadLinuxCalls().addon ?? {};
  const fd = pidfdOpen === undefined || pidfdSignal === undefined || pidfdClose === undefined ? -constants.errno.ENOSYS : pidfdOpen(pid);
  if (fd >= 0) {
    let open = true;
    return {
      pid,
      pinned: true,
      signal: (signal) => open && pidfdSignal!(fd, constants.signals[signal]) === 0,
      close() {
        if (open) pidfdClose!(fd);
        open = false;
      },
    };
  }
  // No such process: there is nothing to signal, and a process that gets the pid later is not this one.
  if (fd === ESRCH) return { pid, pinned: false, signal: () => false, close() {} };
  return {
    pid,
    pinned: false,
    signal(signal) {
      try {
        process.kill(pid, signal);
        return true;
      } catch {
        return false;
      }
    },
    close() {},
  };
}
