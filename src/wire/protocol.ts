import { MAC_HEX_DIGITS, type Auth } from './keys.js';

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
 * @see man/pidstatd.8, PROTOCOL
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
  /** The authenticator field of a keyed request (keys.ts), unchecked. */
  auth?: Auth;
}

export interface Reply {
  pid: number;
  host: string;
  state: State;
  /** Start token of the live process, in `EXIS <pid> 1 <host> <start>`. */
  start?: string;
  /** The authenticator field of a keyed reply (keys.ts), unchecked. */
  auth?: Auth;
}

/** A datagram that is not a valid message. The message says why. */
export class ProtocolError extends Error {
  override name = 'ProtocolError';
}

const PID_RE = /^[1-9][0-9]{0,9}$/;
// Printable ASCII without the space: a host is one field.
const HOST_RE = /^[\x21-\x7e]{1,255}$/;

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

// The first line's fields, found by scanning bytes: no string is made of a
// datagram except for the fields kept. At most MAX_FIELDS are kept, as
// [start, end) pairs in `bounds`; a request or reply has no more (the
// sixth is a keyed message's authenticator).
const MAX_FIELDS = 6;
const AUTH_FIELD = 5;
const COLON = 0x3a;
const bounds = new Int32Array(MAX_FIELDS * 2);
const NEWLINE = 0x0a;
const ZERO = 0x30;
const NINE = 0x39;

function isBlank(byte: number): boolean {
  // space, \t, \v, \f, \r: the newline (0x0a) ends the line before this is asked.
  return byte === 0x20 || (byte >= 0x09 && byte <= 0x0d);
}

function keepField(count: number, start: number, end: number): number {
  if (count < MAX_FIELDS) {
    bounds[count * 2] = start;
    bounds[count * 2 + 1] = end;
  }
  return count + 1;
}

/** Throws for a datagram over MAX_DATAGRAM_BYTES, which is dropped unread. */
export function checkDatagramSize(length: number): void {
  if (length > MAX_DATAGRAM_BYTES) {
    throw new ProtocolError(`datagram of ${length} bytes is over ${MAX_DATAGRAM_BYTES}`);
  }
}

/** Splits the first line at blanks; returns the number of fields. */
function scanFirstLine(buf: Uint8Array): number {
  checkDatagramSize(buf.length);
  let count = 0;
  let start = -1;
  let i = 0;
  for (; i < buf.length; i++) {
    const byte = buf[i]!;
    if (byte === NEWLINE) break;
    if (!isBlank(byte)) {
      if (start < 0) start = i;
    } else if (start >= 0) {
      count = keepField(count, start, i);
      start = -1;
    }
  }
  if (start >= 0) count = keepField(count, start, i);
  return count;
}

/** Field k of the last scan as text; latin1 maps each byte to one char, so no byte can hide in a decoding. */
function fieldText(buf: Uint8Array, k: number): string {
  const view = Buffer.isBuffer(buf) ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.length);
  return view.toString('latin1', bounds[k * 2], bounds[k * 2 + 1]);
}

function fieldIsDecimal(buf: Uint8Array, k: number): boolean {
  for (let i = bounds[k * 2]!; i < bounds[k * 2 + 1]!; i++) {
    if (buf[i]! < ZERO || buf[i]! > NINE) return false;
  }
  return true;
}

/** Field k as a pid, by parsePid's rule, without making a string of it. */
function fieldPid(buf: Uint8Array, k: number): number | undefined {
  const start = bounds[k * 2]!;
  const end = bounds[k * 2 + 1]!;
  if (end - start > 10 || buf[start] === ZERO || !fieldIsDecimal(buf, k)) return undefined;
  let pid = 0;
  for (let i = start; i < end; i++) pid = pid * 10 + buf[i]! - ZERO;
  return pid <= MAX_PID ? pid : undefined;
}

/** Whether field k is a host by isValidHost's rule: 1-255 bytes of printable, non-blank ASCII. */
function fieldIsHost(buf: Uint8Array, k: number): boolean {
  const start = bounds[k * 2]!;
  const end = bounds[k * 2 + 1]!;
  if (end - start > MAX_HOST_BYTES) return false;
  for (let i = start; i < end; i++) {
    if (buf[i]! < 0x21 || buf[i]! > 0x7e) return false;
  }
  return true;
}

/**
 * The flags' low 8 bits, whatever the field's length: 10^8 is a multiple of
 * 2^8, so the last 8 digits hold them. Only a value of 0 means 3; 256 has
 * none of the answer bits, and asks for no answer.
 */
function fieldFlags(buf: Uint8Array, k: number): number {
  if (!fieldIsDecimal(buf, k)) return DEFAULT_FLAGS;
  const end = bounds[k * 2 + 1]!;
  let allZero = true;
  let low = 0;
  for (let i = bounds[k * 2]!; i < end; i++) {
    if (buf[i] !== ZERO) allZero = false;
    if (i >= end - 8) low = low * 10 + buf[i]! - ZERO;
  }
  return allZero ? DEFAULT_FLAGS : low % 256;
}

function fieldIs(buf: Uint8Array, k: number, word: string): boolean {
  const start = bounds[k * 2]!;
  if (bounds[k * 2 + 1]! - start !== word.length) return false;
  for (let i = 0; i < word.length; i++) {
    if (buf[start + i] !== word.charCodeAt(i)) return false;
  }
  return true;
}

function isLowerHex(byte: number): boolean {
  return (byte >= ZERO && byte <= NINE) || (byte >= 0x61 && byte <= 0x66);
}

/**
 * The sixth field as an authenticator, `<id>:<32 lowercase hex digits>`, when
 * it is the last field; undefined otherwise (a keyless message).
 */
function decodeAuthField(buf: Uint8Array, count: number): Auth | undefined {
  if (count !== AUTH_FIELD + 1) return undefined;
  const start = bounds[AUTH_FIELD * 2]!;
  const end = bounds[AUTH_FIELD * 2 + 1]!;
  let colon = start;
  let id = 0;
  while (colon < end && colon - start < 5 && buf[colon]! >= ZERO && buf[colon]! <= NINE) id = id * 10 + buf[colon++]! - ZERO;
  if (colon === start || buf[start] === ZERO || buf[colon] !== COLON || end - colon - 1 !== MAC_HEX_DIGITS) return undefined;
  for (let i = colon + 1; i < end; i++) if (!isLowerHex(buf[i]!)) return undefined;
  const view = Buffer.isBuffer(buf) ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.length);
  return { id, signed: view.subarray(0, colon + 1), mac: view.toString('latin1', colon + 1, end) };
}

function decodePidField(buf: Uint8Array, count: number): number {
  if (count < 2) throw new ProtocolError('no pid');
  const pid = fieldPid(buf, 1);
  if (pid === undefined) throw new ProtocolError('pid is not a decimal from 1 to 2147483647');
  return pid;
}

function decodeHostField(buf: Uint8Array, k: number): string {
  if (!fieldIsHost(buf, k)) {
    throw new ProtocolError('host is over 255 bytes or not printable ASCII');
  }
  return fieldText(buf, k);
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
  const count = scanFirstLine(buf);
  if (count === 0 || !fieldIs(buf, 0, 'PIDR')) throw new ProtocolError('not a PIDR request');
  const req: Request = { pid: decodePidField(buf, count), flags: count > 3 ? fieldFlags(buf, 3) : DEFAULT_FLAGS };
  if (count > 2) req.host = decodeHostField(buf, 2);
  // A start token is any decimal, compared as text: one too long for any
  // live process simply matches none.
  if (count > 4 && fieldIsDecimal(buf, 4)) req.start = fieldText(buf, 4);
  const auth = decodeAuthField(buf, count);
  if (auth !== undefined) req.auth = auth;
  return req;
}

/** A keyed request's text before its authenticator: every field, `-` for no start token. */
export function keyedRequestLine(req: Request & { host: string }): string {
  return `PIDR ${req.pid} ${req.host} ${req.flags} ${req.start ?? '-'}`;
}

/** A keyed reply's text before its authenticator: every field, `-` for no start token. */
export function keyedReplyLine(reply: Reply): string {
  const line = replyLine(reply);
  return reply.start === undefined || reply.state !== 'exists' ? `${line} -` : line;
}

/** A reply as the text of its datagram. */
export function replyLine(reply: Reply): string {
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
  return line;
}

/**
 * A keyed daemon's refusal of a request it cannot authenticate (no key, or
 * not one of its keys), this suite's addition: `AUTH <pid> key <host>`, the
 * request's pid and <host> echoed, so only the client that asked can match
 * it; it says nothing of the process. Fields as a reply's, so an
 * IPC::Locker client simply ignores it (not EXIS or UNKN).
 * @see man/pidstatd.8, AUTHENTICATION
 */
export function refusalLine(pid: number, host: string): string {
  return `AUTH ${pid} key ${host}`;
}

/** Reads a refusal (refusalLine()); undefined for any other datagram. */
export function decodeRefusal(buf: Uint8Array): { pid: number; host: string } | undefined {
  try {
    const count = scanFirstLine(buf);
    if (count !== 4 || !fieldIs(buf, 0, 'AUTH') || !fieldIs(buf, 2, 'key')) return undefined;
    return { pid: decodePidField(buf, count), host: decodeHostField(buf, 3) };
  } catch {
    return undefined;
  }
}

export function encodeReply(reply: Reply): Buffer {
  return Buffer.from(replyLine(reply), 'latin1');
}

/** Reads a reply, with or without a trailing newline; throws ProtocolError. */
export function decodeReply(buf: Uint8Array): Reply {
  const count = scanFirstLine(buf);
  const pid = decodePidField(buf, count);
  if (count < 4) throw new ProtocolError('no host');
  const host = decodeHostField(buf, 3);
  let reply: Reply;
  if (fieldIs(buf, 0, 'UNKN') && fieldIs(buf, 2, 'na')) reply = { pid, host, state: 'unknown' };
  else if (fieldIs(buf, 0, 'EXIS') && fieldIs(buf, 2, '0')) reply = { pid, host, state: 'dead' };
  else if (fieldIs(buf, 0, 'EXIS') && fieldIs(buf, 2, '1')) {
    reply = { pid, host, state: 'exists' };
    if (count > 4 && fieldIsDecimal(buf, 4)) reply.start = fieldText(buf, 4);
  } else {
    throw new ProtocolError('not an EXIS or UNKN reply');
  }
  const auth = decodeAuthField(buf, count);
  if (auth !== undefined) reply.auth = auth;
  return reply;
}
