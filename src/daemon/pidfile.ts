import { closeSync, constants, fstatSync, openSync, readFileSync, readSync, renameSync, rmSync, unlinkSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { pidExists } from '../sys/probe.js';

/**
 * pidstatd's pidfile, which often lives in a directory other users can write
 * (/tmp, /var/tmp). It is never opened through a symbolic link: one planted
 * there would make a root daemon truncate the file it points to. It is
 * written as a new file beside the target and renamed over it (rename(2)
 * replaces a link, never what the link points to), and read with
 * O_NOFOLLOW. A pidfile is a running daemon's only when the file belongs to
 * this daemon's user (or root) and names a live pidstatd of this same user;
 * any other (a dead pid, a pid reused by another program, another user's
 * process or file, junk) is stale: in /tmp any local user can write a file
 * naming a process of their own, titled pidstatd (pidstatd(8), --pidfile).
 * @see https://man7.org/linux/man-pages/man2/open.2.html (O_NOFOLLOW, O_EXCL)
 */

/** More than a pid and its newline: whatever is longer is no pidfile of ours. */
const MAX_PIDFILE = 64;

/**
 * The pid a pidfile names, or undefined when it names none: missing, not a
 * regular file (a symbolic link, a FIFO: never followed or waited on), or
 * not one positive decimal number.
 */
export function readPidfile(file: string): number | undefined {
  return readPidfileEntry(file)?.pid;
}

/** readPidfile(), with the user id that owns the file. */
function readPidfileEntry(file: string): { pid: number; uid: number } | undefined {
  let fd: number;
  try {
    fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch {
    return undefined;
  }
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile()) return undefined;
    const buffer = Buffer.alloc(MAX_PIDFILE + 1);
    const length = readSync(fd, buffer, 0, buffer.length, 0);
    const match = /^\s*([1-9][0-9]{0,9})\s*$/.exec(buffer.toString('latin1', 0, length));
    return match ? { pid: Number(match[1]), uid: stat.uid } : undefined;
  } catch {
    return undefined;
  } finally {
    closeSync(fd);
  }
}

/**
 * Whether a live process is pidstatd, by its command line (this suite's
 * `node .../pidstatd.cjs`, the supervisor's title `pidstatd`, the original's
 * `perl .../pidstatd`). When the command line cannot be read (another
 * user's process under hidepid), the answer is yes: a daemon wrongly taken
 * for stale would lose its pidfile.
 */
function isPidstatd(pid: number): boolean {
  let words: string[];
  try {
    words = readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0').filter((word) => word !== '');
  } catch {
    return true;
  }
  const script = words.slice(1).find((word) => !word.startsWith('-'));
  return [words[0], script].some((word) => word !== undefined && /^pidstatd(\.[cm]?js)?$/.test(basename(word)));
}

/**
 * Whether process `pid` runs as user `uid`: its real and effective user ids,
 * the Uid line of /proc/<pid>/status (proc_pid_status(5)), not the owner of
 * files under /proc/<pid>, which is root for any process that made itself
 * non-dumpable (PR_SET_DUMPABLE, prctl(2)).
 * When the line cannot be read (hidepid), kill(2)'s EPERM says the process
 * is another user's; anything else counts as this user's, as an unreadable
 * command line counts as pidstatd.
 */
function runsAs(pid: number, uid: number): boolean {
  let status: string;
  try {
    status = readFileSync(`/proc/${pid}/status`, 'latin1');
  } catch {
    try {
      process.kill(pid, 0);
    } catch (err) {
      return (err as NodeJS.ErrnoException).code !== 'EPERM';
    }
    return true;
  }
  const ids = /^Uid:\s+([0-9]+)\s+([0-9]+)/m.exec(status);
  return ids === null || (Number(ids[1]) === uid && Number(ids[2]) === uid);
}

/**
 * The pid of the live pidstatd (other than this process) that `file` names,
 * if any: only a file of this daemon's user or root, naming a pidstatd that
 * runs as this daemon's user, holds the start back (pidstatd(8), --pidfile).
 */
export function pidfileOwner(file: string): number | undefined {
  const entry = readPidfileEntry(file);
  if (entry === undefined || entry.pid === process.pid) return undefined;
  const { pid, uid } = entry;
  const user = process.geteuid?.() ?? 0;
  // Another user's file in a shared directory proves nothing: anyone can write a pid there.
  if (uid !== user && uid !== 0) return undefined;
  // undefined (cannot tell) counts as alive, as an unreadable command line does.
  return pidExists(pid) !== false && runsAs(pid, user) && isPidstatd(pid) ? pid : undefined;
}

/**
 * Writes `pid` to `file`: into a new file beside it, created with O_EXCL and
 * O_NOFOLLOW, then renamed over it. Throws the file system's error.
 */
export function writePidfile(file: string, pid: number): void {
  const dir = dirname(file);
  let temporary = '';
  let fd = -1;
  // A name another user made first (O_EXCL refuses it) is only a reason to pick another.
  for (let attempt = 0; fd < 0; attempt++) {
    temporary = join(dir, `.${basename(file)}.${process.pid}.${Math.random().toString(36).slice(2, 10)}`);
    try {
      fd = openSync(temporary, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o644);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || attempt === 9) throw err;
    }
  }
  try {
    writeSync(fd, `${pid}\n`);
    closeSync(fd);
    fd = -1;
    renameSync(temporary, file);
  } catch (err) {
    if (fd >= 0) closeSync(fd);
    rmSync(temporary, { force: true });
    throw err;
  }
}

/** Removes `file` if it still names `pid`; a file another daemon has taken over is left alone. */
export function removePidfile(file: string, pid: number): void {
  if (readPidfile(file) !== pid) return;
  try {
    unlinkSync(file);
  } catch {
    // Removed meanwhile, or not ours to remove: nothing to do at stop.
  }
}
