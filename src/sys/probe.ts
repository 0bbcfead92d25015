import { readFileSync } from 'node:fs';
import { constants } from 'node:os';

/**
 * The only code that asks this host's kernel about a process.
 *
 * kill(pid, 0): success means the process exists (a zombie too, as with
 * `kill -0`); ESRCH means it does not; EPERM means it exists too: the kernel
 * looks the pid up before it checks the permission, so EPERM proves a live
 * process. No /proc look-up may turn it into "dead": `hidepid` hides another
 * user's /proc/<pid>, and a false "dead" kills a job.
 * @see https://man7.org/linux/man-pages/man2/kill.2.html
 */

const ESRCH = -constants.errno.ESRCH;
const EPERM = -constants.errno.EPERM;

/**
 * kill(2) returning the negative errno instead of throwing. process.kill()
 * builds an exception with a stack for every dead pid, which costs ten times
 * the system call; process._kill is the binding it wraps (Node's
 * lib/internal/process/per_thread.js), used where it exists.
 */
const rawKill: (pid: number, signal: number) => number =
  typeof (process as unknown as { _kill?: unknown })._kill === 'function'
    ? (process as unknown as { _kill: (pid: number, signal: number) => number })._kill.bind(process)
    : (pid, signal) => {
        try {
          process.kill(pid, signal);
          return 0;
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          return code === 'ESRCH' ? ESRCH : code === 'EPERM' ? EPERM : -Infinity;
        }
      };

/** What kill(pid, 0) tells: true exists, false does not, undefined cannot tell. */
export function pidExists(pid: number): boolean | undefined {
  const err = rawKill(pid, 0);
  if (err === 0) return true;
  if (err === ESRCH) return false;
  if (err === EPERM) return true;
  return undefined;
}

/**
 * The fields of /proc/<pid>/task/<pid>/stat from field 3 on (the state), or
 * undefined where it cannot be read. Field 2, the command name, is in
 * parentheses and may hold spaces and parentheses itself: fields are counted
 * from the last ')', which ends it, so field N is at index N - 3.
 *
 * The task file, not /proc/<pid>/stat: the kernel sums every thread of the
 * process on each read of the latter (its CPU times), so its cost is the
 * thread count's, which whoever names the pid chooses (a process with 16 000
 * threads reads 40 times slower than pid 1). The task file of the pid's own
 * thread is read at one cost whatever the thread count, and holds the same
 * state, parents, group and start time (doc/protocol.md, Bounded work).
 * @see https://man7.org/linux/man-pages/man5/proc_pid_stat.5.html
 */
export function statFields(pid: number): string[] | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/task/${pid}/stat`, 'latin1');
  } catch {
    return undefined;
  }
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

/**
 * Whether `pid` leads its thread group (is a process, not another thread of
 * one): kill() and /proc answer for a thread id too, but a pidfd cannot be
 * opened for one, so a watch of it could only poll. true, false, or
 * undefined where /proc/<pid>/status cannot be read (gone, or hidden by
 * `hidepid`). Read at one cost whatever the thread count.
 * @see https://man7.org/linux/man-pages/man5/proc_pid_status.5.html
 */
export function isThreadGroupLeader(pid: number): boolean | undefined {
  let status: string;
  try {
    status = readFileSync(`/proc/${pid}/status`, 'latin1');
  } catch {
    return undefined;
  }
  const tgid = /^Tgid:\s*([0-9]+)$/m.exec(status)?.[1];
  return tgid === undefined ? undefined : Number(tgid) === pid;
}

/** The index in statFields() of field 22, the start time. */
export const START_FIELD = 19;

/**
 * The start token of a process: its start time in clock ticks since boot,
 * field 22 of /proc/<pid>/stat. undefined where it cannot be read.
 */
export function readStartToken(pid: number): string | undefined {
  const token = statFields(pid)?.[START_FIELD];
  return token !== undefined && /^[0-9]+$/.test(token) ? token : undefined;
}
