import { existsSync } from 'node:fs';
import { loadLinuxCalls } from '../sys/native.js';
import type { Problem } from '../sys/problems.js';

/**
 * Log lines to the local syslog daemon, as syslog(3) sends them: one
 * datagram per line, `<PRI>TAG[PID]: message`, to the Unix datagram socket
 * /dev/log (RFC 3164's form; the daemon adds the time and host). Node has no
 * Unix datagram sockets: the addon sends (native/linux.c, unixSend), and
 * everything else is decided here. A line the socket does not take (no
 * daemon listening, its queue full) is dropped: logging never blocks or
 * stops the caller.
 * @see https://www.rfc-editor.org/rfc/rfc3164#section-4.1
 */

export const SYSLOG_SOCKET = '/dev/log';

/** syslog(3)'s LOG_DAEMON: facility 3, shifted as PRI wants it. */
const FACILITY_DAEMON = 3 << 3;

export const SEVERITY = { err: 3, warning: 4, notice: 5, info: 6, debug: 7 } as const;
export type Severity = keyof typeof SEVERITY;

/** A line longer than this is cut: syslog daemons keep 1024 to 8192 bytes of a line. */
const MAX_LINE = 2048;

export interface Syslog {
  log(text: string, severity: Severity): void;
}

/**
 * A logger to the syslog socket under `tag` (facility daemon), or the
 * problem that keeps it from being one: no socket at `path`, or no addon
 * to send with.
 */
export function openSyslog(tag: string, path = SYSLOG_SOCKET): { syslog: Syslog } | { problem: Problem } {
  if (!existsSync(path)) return { problem: { kind: 'no-socket', path } };
  const { addon, why } = loadLinuxCalls();
  if (addon === undefined) return { problem: { kind: 'no-addon', why: why! } };
  if (addon.unixSend === undefined) return { problem: { kind: 'old-addon' } };
  return {
    syslog: {
      log(text, severity) {
        // One event, one line: a newline would start a line of its own, unprefixed.
        const line = `<${FACILITY_DAEMON | SEVERITY[severity]}>${tag}[${process.pid}]: ${text.replace(/[\r\n]+/g, ' ')}`;
        addon.unixSend!(path, Buffer.from(line).subarray(0, MAX_LINE));
      },
    },
  };
}
