/**
 * The wire format of IPC::Locker's pidstatd (versions 1.4xx-1.5xx), with this
 * suite's start-token extension. One UDP datagram per message, ASCII, fields
 * separated by white space; only the first line of a datagram counts.
 *
 *   request:  PIDR <pid> [<host> [<flags> [<start>]]]\n
 *   replies:  EXIS <pid> 1 <host> [<start>]     the process exists
 *             EXIS <pid> 0 <host>               no such process
 *             UNKN <pid> na <host>              the daemon cannot tell
 *
 * <pid>   decimal, 1 to 2147483647, no sign. Anything else is refused: the
 *         original passes `PIDR 0` to kill(), which signals its process group.
 * <host>  the name the client used, echoed back; 1-255 bytes of printable,
 *         non-blank ASCII.
 * <flags> bit set (FLAG_*); missing, not a number or 0 means 3.
 *         Its low 8 bits count: 256 asks for no answer at all.
 * <start> the process start time (field 22 of /proc/<pid>/stat), decimal;
 *         a request field that is not decimal is ignored with all after it.
 *
 * @see ../shared/CONTRACT.md section 1
 */

/** Reply if the pid exists. */
export const FLAG_EXISTS = 1;
/** Reply if the pid does not exist. */
export const FLAG_DEAD = 2;
/** Reply if the daemon cannot tell. */
export const FLAG_UNKNOWN = 4;
/** Add the start token to an `EXIS <pid> 1` reply (this suite's extension). */
export const FLAG_START = 8;
/** What the original daemon assumes when a request carries no flags. */
export const DEFAULT_FLAGS = FLAG_EXISTS | FLAG_DEAD;
/** Every answer, with the start token: what pidstat asks. */
export const ALL_FLAGS = FLAG_EXISTS | FLAG_DEAD | FLAG_UNKNOWN | FLAG_START;

export const MAX_PID = 2147483647;
export const MAX_HOST_BYTES = 255;
/** Longer datagrams are dropped unread; a valid request is far shorter. */
export const MAX_DATAGRAM_BYTES = 1024;

export type State = 'exists' | 'dead' | 'unknown';

export interface Request {
  pid: number;
  /** The name the client used for the daemon's host; absent: the daemon's own name. */
  host?: string;
  flags: number;
  /** Start token of the process the client means. */
  start?: string;
}

export interface Reply {
  pid: number;
  host: string;
  state: State;
  /** Start token of the live process, in `EXIS <pid> 1 <host> <start>`. */
  start?: string;
}

/** A datagram that is not a valid message. The message says why. */
export class ProtocolError extends Error {
  override name = 'ProtocolError';
}

const PID_RE = /^[1-9][0-9]{0,9}$/;
const DECIMAL_RE = /^[0-9]+$/;
// Printable ASCII without the space: a host is one field.
const HOST_RE = /^[\x21-\x7e]{1,255}$/;
const FIELD_SEP = /[ \t\r\v\f]+/;

/** A pid as the protocol allows it, or undefined. */
export function parsePid(text: string): number | undefined {
  if (!PID_RE.test(text)) return undefined;
  const pid = Number(text);
  return pid <= MAX_PID ? pid : undefined;
}

/** Whether a host name can travel in a datagram. */
export function isValidHost(host: string): boolean {
  return HOST_RE.test(host);
}

/**
 * Whether text is a start token: any decimal, compared as text, so one too
 * long for any live process simply matches none.
 */
export function isStartToken(text: string): boolean {
  return DECIMAL_RE.test(text);
}

function firstLineFields(buf: Uint8Array): string[] {
  if (buf.length > MAX_DATAGRAM_BYTES) {
    throw new ProtocolError(`datagram of ${buf.length} bytes is over ${MAX_DATAGRAM_BYTES}`);
  }
  // latin1 maps each byte to one char, so no byte can hide in a decoding.
  let text = Buffer.from(buf.buffer, buf.byteOffset, buf.length).toString('latin1');
  const newline = text.indexOf('\n');
  if (newline >= 0) text = text.slice(0, newline);
  const fields = text.split(FIELD_SEP);
  if (fields[0] === '') fields.shift();
  if (fields.length > 0 && fields[fields.length - 1] === '') fields.pop();
  return fields;
}

function decodePidField(field: string | undefined): number {
  if (field === undefined) throw new ProtocolError('no pid');
  const pid = parsePid(field);
  if (pid === undefined) throw new ProtocolError('pid is not a decimal from 1 to 2147483647');
  return pid;
}

function decodeHostField(field: string): string {
  if (!isValidHost(field)) {
    throw new ProtocolError('host is over 255 bytes or not printable ASCII');
  }
  return field;
}

/**
 * The flags' low 8 bits, whatever the field's length: 10^8 is a multiple of
 * 2^8, so the last 8 digits hold them. Only a value of 0 means 3; 256 has
 * none of the answer bits, and asks for no answer.
 */
function decodeFlags(field: string | undefined): number {
  if (field === undefined || !DECIMAL_RE.test(field) || /^0+$/.test(field)) return DEFAULT_FLAGS;
  return Number(field.slice(-8)) % 256;
}

export function encodeRequest(req: Request): Buffer {
  let line = `PIDR ${req.pid}`;
  if (req.host !== undefined) {
    line += ` ${req.host} ${req.flags}`;
    if (req.start !== undefined) line += ` ${req.start}`;
  }
  return Buffer.from(line + '\n', 'latin1');
}

/** Reads a request; throws ProtocolError for anything the daemon must not answer. */
export function decodeRequest(buf: Uint8Array): Request {
  const fields = firstLineFields(buf);
  if (fields[0] !== 'PIDR') throw new ProtocolError('not a PIDR request');
  const req: Request = { pid: decodePidField(fields[1]), flags: decodeFlags(fields[3]) };
  if (fields[2] !== undefined) req.host = decodeHostField(fields[2]);
  if (fields[4] !== undefined && isStartToken(fields[4])) req.start = fields[4];
  return req;
}

export function encodeReply(reply: Reply): Buffer {
  let line: string;
  switch (reply.state) {
    case 'exists':
      line = `EXIS ${reply.pid} 1 ${reply.host}`;
      if (reply.start !== undefined) line += ` ${reply.start}`;
      break;
    case 'dead':
      line = `EXIS ${reply.pid} 0 ${reply.host}`;
      break;
    case 'unknown':
      line = `UNKN ${reply.pid} na ${reply.host}`;
      break;
  }
  return Buffer.from(line, 'latin1');
}

/** Reads a reply, with or without a trailing newline; throws ProtocolError. */
export function decodeReply(buf: Uint8Array): Reply {
  const [kind, pidField, value, hostField, startField] = firstLineFields(buf);
  const pid = decodePidField(pidField);
  if (hostField === undefined) throw new ProtocolError('no host');
  const host = decodeHostField(hostField);
  if (kind === 'UNKN' && value === 'na') return { pid, host, state: 'unknown' };
  if (kind === 'EXIS' && value === '0') return { pid, host, state: 'dead' };
  if (kind === 'EXIS' && value === '1') {
    const reply: Reply = { pid, host, state: 'exists' };
    if (startField !== undefined && isStartToken(startField)) reply.start = startField;
    return reply;
  }
  throw new ProtocolError('not an EXIS or UNKN reply');
}
