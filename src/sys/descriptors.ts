import { closeSync, constants, fstatSync, openSync, readdirSync, readFileSync, writeSync } from 'node:fs';

/**
 * Descriptors a caller left open without close-on-exec (a pipe on fd 40, a
 * make jobserver) pass to every process started from here: a daemon that
 * kept one would hold its caller's pipe open for as long as it runs. Node
 * opens its own descriptors with O_CLOEXEC, so those without it beyond
 * stdin, stdout and stderr are the caller's. The flags come from
 * /proc/self/fdinfo (octal; O_CLOEXEC is 02000000); without /proc nothing
 * is closed.
 * @see https://man7.org/linux/man-pages/man5/proc_pid_fdinfo.5.html
 */

const O_CLOEXEC = 0o2000000;

/** Closes every inherited descriptor above 2 that would pass to a child; returns them. */
export function closeInheritedDescriptors(): number[] {
  let entries: string[];
  try {
    entries = readdirSync('/proc/self/fdinfo');
  } catch {
    return [];
  }
  // Node's IPC channel with a parent that spawned this process through Node.
  const channel = Number(process.env['NODE_CHANNEL_FD'] ?? -1);
  const closed: number[] = [];
  for (const entry of entries) {
    const fd = Number(entry);
    if (!(fd > 2) || fd === channel) continue;
    let flags: RegExpExecArray | null;
    try {
      flags = /^flags:\s*([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'latin1'));
    } catch {
      continue; // closed meanwhile: the listing's own descriptor
    }
    if (flags === null || (parseInt(flags[1]!, 8) & O_CLOEXEC) !== 0) continue;
    try {
      closeSync(fd);
      closed.push(fd);
    } catch {
      // Already closed.
    }
  }
  return closed;
}

/** Lines written to a descriptor without ever waiting for its reader. */
export interface LineWriter {
  /** Writes `text` whole if there is room now; else drops it (or what was left of it). Whether it was written whole. */
  write(text: string): boolean;
}

/**
 * A writer for fd (a detached process's stderr, shared with the user's job)
 * that never blocks: a pipe nobody reads (`... 2>&1 | less` paused at a
 * page) or a terminal held by flow control must not stop the writer. The
 * descriptor's open file description is shared with every process that
 * inherited it, and O_NONBLOCK set on it would reach the command's own
 * writes; so a pipe or a terminal is opened anew through /proc/self/fd, a
 * description of this process alone, with O_NONBLOCK (and O_NOCTTY: it must
 * not become the writer's controlling terminal). A write that would block
 * is dropped. A regular file never blocks and is written as it
 * is; so is a socket, which cannot be reopened. Where a pipe or a terminal
 * cannot be reopened (its reader gone, another user's), every write is
 * dropped: a write that may block is never made.
 * @see https://man7.org/linux/man-pages/man2/open.2.html (O_NONBLOCK on a FIFO)
 * @see https://man7.org/linux/man-pages/man5/proc_pid_fd.5.html
 */
export function openLineWriter(fd: number): LineWriter {
  let target: number | undefined;
  try {
    const stat = fstatSync(fd);
    if (stat.isFIFO() || stat.isCharacterDevice()) {
      try {
        target = openSync(`/proc/self/fd/${fd}`, constants.O_WRONLY | constants.O_NONBLOCK | constants.O_NOCTTY | constants.O_APPEND);
      } catch {
        target = undefined;
      }
    } else {
      target = fd;
    }
  } catch {
    target = undefined;
  }
  return {
    write(text: string): boolean {
      if (target === undefined) return false;
      const bytes = Buffer.from(text);
      let done = 0;
      try {
        // A line up to PIPE_BUF (4096) bytes goes into a pipe whole or not at all (pipe(7)).
        while (done < bytes.length) done += writeSync(target, bytes, done);
        return true;
      } catch {
        // EAGAIN: no room now; EPIPE: no reader; ENOSPC...: dropped all the same.
        return false;
      }
    },
  };
}
