import { constants } from 'node:os';
import { loadLinuxCalls } from './native.js';

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
