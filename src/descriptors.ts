import { closeSync, readdirSync, readFileSync } from 'node:fs';

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
