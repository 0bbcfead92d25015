import dgram from 'node:dgram';
import { existsSync, readFileSync } from 'node:fs';
import { ask, childrenOf } from './helpers.js';
import { DAEMON_HEAP_OPTION } from '../../src/daemon/heap.js';

export { childrenOf };

/**
 * A datagram fuzzer for pidstatd, shared by test/attacks/fuzz.test.ts and
 * `npm run soak` (test/soak/run.ts). Not a test file itself.
 *
 * Three parts, all independent of src/:
 *
 * - `checkRequest`, a small checker of doc/protocol.md (with the man
 *   page's "What is refused" list, which defines "oversized" as over 1024
 *   bytes and refuses pids with leading zeros), read literally:
 *     - only the first line (up to the first \n) counts; fields are separated
 *       by runs of ASCII white space other than \n (space \t \r \v \f), with
 *       leading and trailing white space ignored;
 *     - the first field is exactly `PIDR`; the pid is [1-9][0-9]* and at most
 *       2147483647; a host is 1-255 bytes of printable ASCII (0x21-0x7e);
 *     - flags: a string of decimal digits is a number, and its bits count
 *       (1 exists, 2 dead, 4 unknown, 8 start token) whatever its size; a
 *       missing or non-decimal field, or the value 0, means 3;
 *     - start: a string of decimal digits is a start token, whatever its
 *       length, compared as a string with the live process's token (a
 *       different string means `dead`); anything else is ignored, as are all
 *       fields after the fifth.
 * - `Truth`: what is really alive, read from /proc by the test itself.
 * - `generate` and `fuzz`: random and mutated datagrams sent in closed-loop
 *   batches, each batch ending with a valid request whose reply is awaited,
 *   every reply matched against the replies the checker expects.
 */

// ---------------------------------------------------------------------------
// The checker

/** Datagrams over this many bytes are refused (pidstatd(8), "What is refused"). */
export const MAX_DATAGRAM = 1024;
const MAX_PID = 2147483647n;
/** ASCII white space except the newline, which ends the line. */
const BLANK = new Set([0x20, 0x09, 0x0d, 0x0b, 0x0c]);

export interface CheckedRequest {
  pid: string;
  host: string | undefined;
  /** The bit set in force (3 when the field is missing, not a number or 0). */
  flags: bigint;
  start: string | undefined;
}

export type Check = { valid: true; request: CheckedRequest } | { valid: false; why: string };

/** The fields of a datagram's first line, as latin1 strings. */
export function firstLineFields(buf: Uint8Array): string[] {
  const fields: string[] = [];
  let field = '';
  for (const byte of buf) {
    if (byte === 0x0a) break;
    if (BLANK.has(byte)) {
      if (field !== '') fields.push(field);
      field = '';
    } else {
      field += String.fromCharCode(byte);
    }
  }
  if (field !== '') fields.push(field);
  return fields;
}

/** Whether the daemon must answer this datagram (as a request), by the contract. */
export function checkRequest(buf: Uint8Array): Check {
  if (buf.length > MAX_DATAGRAM) return { valid: false, why: `oversized (${buf.length} bytes)` };
  const [word, pid, host, flags, start] = firstLineFields(buf);
  if (word !== 'PIDR') return { valid: false, why: 'first word is not PIDR' };
  if (pid === undefined) return { valid: false, why: 'no pid' };
  if (!/^[1-9][0-9]*$/.test(pid) || pid.length > 10 || BigInt(pid) > MAX_PID) return { valid: false, why: `bad pid ${JSON.stringify(pid.slice(0, 40))}` };
  if (host !== undefined) {
    if (host.length > 255) return { valid: false, why: `host of ${host.length} bytes` };
    for (let i = 0; i < host.length; i++) {
      const c = host.charCodeAt(i);
      if (c < 0x21 || c > 0x7e) return { valid: false, why: `host holds byte 0x${c.toString(16)}` };
    }
  }
  let bits = flags !== undefined && /^[0-9]+$/.test(flags) ? BigInt(flags) : 0n;
  if (bits === 0n) bits = 3n;
  return {
    valid: true,
    request: { pid, host, flags: bits, start: start !== undefined && /^[0-9]+$/.test(start) ? start : undefined },
  };
}

// ---------------------------------------------------------------------------
// The truth

export type Liveness = 'exists' | 'dead';

export interface Truth {
  /** The name the daemon echoes to a request without a host. */
  ownHost: string;
  pidMax: number;
  /** Pids that live for the whole run (a sleeper, pid 1, this process). */
  live: number[];
  /** Pids that were alive once and are reaped now. */
  reaped: number[];
  state(pid: number): Liveness;
  token(pid: number): string | undefined;
}

/** Field 22 of /proc/PID/stat (start time in clock ticks since boot), or undefined. */
export function readToken(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

/** The host name a daemon echoes to a request without one (what `PIDR 1` gets back). */
export async function ownHostOf(port: number, address = '127.0.0.1'): Promise<string> {
  for (let i = 0; i < 5; i++) {
    const reply = await ask(port, 'PIDR 1\n', { address, waitMs: 500 });
    const host = reply === undefined ? undefined : /^EXIS 1 1 ([\x21-\x7e]+)$/.exec(reply)?.[1];
    if (host !== undefined) return host;
  }
  throw new Error(`the daemon on port ${port} does not answer PIDR 1`);
}

export function makeTruth(ownHost: string, live: number[], reaped: number[]): Truth {
  const pidMax = Number(readFileSync('/proc/sys/kernel/pid_max', 'latin1').trim());
  const liveSet = new Set(live);
  const tokens = new Map(live.map((pid) => [pid, readToken(pid)]));
  return {
    ownHost,
    pidMax,
    live,
    reaped,
    state(pid) {
      if (liveSet.has(pid)) return 'exists';
      if (pid > pidMax) return 'dead';
      return existsSync(`/proc/${pid}`) ? 'exists' : 'dead';
    },
    token(pid) {
      return tokens.get(pid) ?? readToken(pid);
    },
  };
}

/** The one reply a valid request must get, or undefined when its flags ask for none. */
export function expectedReply(req: CheckedRequest, truth: Truth): string | undefined {
  const host = req.host ?? truth.ownHost;
  const pid = Number(req.pid);
  let state = truth.state(pid);
  let token: string | undefined;
  if (state === 'exists') {
    token = truth.token(pid);
    if (req.start !== undefined && token !== undefined && req.start !== token) state = 'dead';
  }
  if (state === 'exists') {
    if (!(req.flags & 1n)) return undefined;
    return `EXIS ${req.pid} 1 ${host}${req.flags & 8n && token !== undefined ? ` ${token}` : ''}`;
  }
  return req.flags & 2n ? `EXIS ${req.pid} 0 ${host}` : undefined;
}

// ---------------------------------------------------------------------------
// The generator

/** mulberry32: small, seeded, good enough to pick mutations. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface Datagram {
  buf: Buffer;
  /** How it was made (a generator category), for the report. */
  kind: string;
}

class Gen {
  private next = 0;
  constructor(
    private readonly random: () => number,
    private readonly truth: Truth,
    private readonly tag: string,
  ) {}

  int(n: number): number {
    return Math.floor(this.random() * n);
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }
  chance(p: number): boolean {
    return this.random() < p;
  }
  /**
   * A host no other datagram of this run carries, and that no mutation of
   * another's turns into: a 5-character id (so a byte deleted or inserted
   * changes its length) and two capital letters that check it (so a byte
   * flipped, or the flags field run into the host, does not make another).
   */
  uniqueHost(): string {
    const id = 36 ** 4 + this.next++;
    const h = Math.imul(id, 0x9e3779b1) >>> 0;
    return `${this.tag}${id.toString(36)}${String.fromCharCode(0x41 + (h % 26), 0x41 + ((h >>> 8) % 26))}`;
  }
  digits(n: number): string {
    let s = String(1 + this.int(9));
    while (s.length < n) s += String(this.int(10));
    return s;
  }
  /** n random bytes, from a stream of their own: the main stream's draws do not depend on n. */
  bytes(n: number): Buffer {
    const sub = rng(this.int(2 ** 32));
    const buf = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) buf[i] = Math.floor(sub() * 256);
    return buf;
  }
  printable(n: number): string {
    let s = '';
    for (let i = 0; i < n; i++) s += String.fromCharCode(0x21 + this.int(94));
    return s;
  }

  /** A pid whose state the truth knows: live, reaped, or above pid_max. */
  pid(): number {
    const r = this.random();
    if (r < 0.55) return this.pick(this.truth.live);
    if (r < 0.75 && this.truth.reaped.length > 0) return this.pick(this.truth.reaped);
    if (r < 0.8) return 2147483647;
    return this.truth.pidMax + 1 + this.int(2147483647 - this.truth.pidMax);
  }

  /** The fields of a well-formed request: PIDR pid host flags [start]. */
  requestFields(): string[] {
    const pid = this.pid();
    const fields = ['PIDR', String(pid), this.uniqueHost(), String(this.pick([1, 2, 3, 3, 3, 8, 9, 10, 11, 15, 15, 4, 5, 0]))];
    if (this.chance(0.3)) {
      const token = this.truth.token(pid) ?? '12345';
      fields.push(this.chance(0.6) ? token : String(BigInt(token) + BigInt(1 + this.int(1000))));
    }
    return fields;
  }

  /** A request the daemon must answer (flags 3, unique host): the end of a batch. */
  sentinel(): Datagram {
    return { buf: Buffer.from(`PIDR ${this.pick(this.truth.live)} ${this.uniqueHost()} 3\n`, 'latin1'), kind: 'sentinel' };
  }

  datagram(): Datagram {
    const r = this.random();
    if (r < 0.2) return this.canonical();
    if (r < 0.55) return this.fieldMutation();
    if (r < 0.67) return this.byteMutation();
    if (r < 0.75) return { buf: this.bytes(this.int(this.chance(0.8) ? 64 : 1500)), kind: 'random bytes' };
    if (r < 0.8) return this.randomTokens();
    if (r < 0.83) return this.huge();
    if (r < 0.85) return { buf: Buffer.alloc(0), kind: 'empty' };
    if (r < 0.92) return this.nulLaden();
    if (r < 0.95) return this.replyShaped();
    return this.odd();
  }

  private text(s: string, kind: string): Datagram {
    return { buf: Buffer.from(s, 'latin1'), kind };
  }

  canonical(): Datagram {
    if (this.chance(0.1)) return this.text(`PIDR ${this.pid()}${this.pick(['', '\n', '\r\n', ' '])}`, 'valid, no host');
    const fields = this.requestFields();
    if (this.chance(0.15)) fields.length = 3; // no flags: 3, as old clients send
    return this.text(fields.join(' ') + this.pick(['\n', '\n', '', '\r\n']), 'valid');
  }

  /** A well-formed request with one field (or separator, or end) changed. */
  fieldMutation(): Datagram {
    const fields = this.requestFields();
    let seps: string[] = fields.map((_, i) => (i === 0 ? '' : ' '));
    let end = '\n';
    const what = this.pick(['pid', 'pid', 'host', 'host', 'flags', 'flags', 'start', 'word', 'separator', 'end', 'extra']);
    switch (what) {
      case 'pid': {
        const pid = fields[1]!;
        fields[1] = this.pick([
          '0', '00', '-1', `-${pid}`, `+${pid}`, `0${pid}`, `00${pid}`, `0x${Number(pid).toString(16)}`, `${pid}x`, `${pid}.0`, '1e3',
          '2147483648', '4294967297', '9999999999', this.digits(11 + this.int(30)), 'abc', 'PIDR', `${pid}\u0000`, `\u00b9`, '１',
          String(1 + this.int(2147483647)), String(this.truth.pidMax + 1), '2147483647', String(this.pick(this.truth.live)),
        ]);
        if (this.chance(0.05)) {
          fields.splice(1);
          seps = seps.slice(0, 1);
        }
        break;
      }
      case 'host': {
        const host = fields[2]!;
        const bad = String.fromCharCode(this.pick([0x00, 0x01, 0x07, 0x1b, 0x1f, 0x7f, 0x80, 0xa0, 0xe9, 0xff]));
        fields[2] = this.pick([
          host + 'x'.repeat(255 - host.length), // 255 bytes: valid
          host + 'y'.repeat(256 - host.length), // 256: refused
          host + 'z'.repeat(256 + this.int(700)),
          host + bad,
          bad + host,
          host.slice(0, 2) + bad + host.slice(2),
          host + this.printable(1 + this.int(40)),
          `${host}.example.COM`,
          `[${host}]`,
          `${host}:1752`,
        ]);
        break;
      }
      case 'flags':
        fields[3] = this.pick([
          '0', '00', '16', '255', '256', '257', '258', '512', '4096', '65536', '65538', '-1', '-3', '+3', '3.0', '0x3', '0x1',
          'abc', '3abc', '03', '003', '0000000000003', '00000000001', '00000000002', String(2 ** 32 + 2), String(2 ** 32 + 1),
          this.digits(11 + this.int(20)), this.digits(1 + this.int(10)), `3${String.fromCharCode(0x80 + this.int(128))}`,
        ]);
        break;
      case 'start': {
        const token = this.truth.token(Number(fields[1])) ?? '1';
        const start = this.pick([
          token, String(BigInt(token) + 1n), `${token}x`, `x${token}`, '-1', `+${token}`, '0', this.digits(21 + this.int(20)),
          `${token}${'0'.repeat(25)}`, '18446744073709551616', '99999999999999999999', 'abc', '', `${token}\u0000`,
        ]);
        if (fields.length < 5) fields.push(start);
        else fields[4] = start;
        if (start === '') fields.pop();
        seps = fields.map((_, i) => (i === 0 ? '' : ' '));
        break;
      }
      case 'word':
        fields[0] = this.pick(['pidr', 'PID', 'PIDRR', 'EXIS', 'UNKN', 'PIDR\u0000', 'XPIDR', 'P1DR', '', 'PIDr']);
        break;
      case 'separator': {
        const i = 1 + this.int(fields.length - 1);
        seps[i] = this.pick(['\t', '\r', '\u000b', '\u000c', '  ', ' \t ', '\u0000', '\u00a0', ',', ':', '\u0085', '']);
        if (this.chance(0.3)) seps[0] = this.pick([' ', '\t', '\r', '\u0000', '\n']);
        break;
      }
      case 'end':
        end = this.pick(['', '\r\n', '\n\n', '\nPIDR 0 h 3\n', `\n${this.printable(50)}`, '\u0000', '\n\u0000\u0000', ' \n', '\r']);
        break;
      case 'extra':
        if (fields.length < 5) fields.push(this.pick(['abc', '123']));
        fields.push(this.pick(['more', '1', this.printable(1 + this.int(30)), 'z'.repeat(300)]));
        seps = fields.map((_, i) => (i === 0 ? '' : ' '));
        break;
    }
    let text = '';
    fields.forEach((field, i) => (text += seps[i] + field));
    return this.text(text + end, `mutated ${what}`);
  }

  /** Bytes of a well-formed request flipped, inserted, deleted, truncated or repeated. */
  byteMutation(): Datagram {
    const buf = Buffer.from(this.requestFields().join(' ') + '\n', 'latin1');
    const how = this.pick(['flip', 'insert', 'delete', 'truncate', 'repeat']);
    switch (how) {
      case 'flip': {
        const out = Buffer.from(buf);
        for (let n = 1 + this.int(3); n > 0; n--) out[this.int(out.length)] = this.int(256);
        return { buf: out, kind: 'bytes flipped' };
      }
      case 'insert': {
        const at = this.int(buf.length + 1);
        return { buf: Buffer.concat([buf.subarray(0, at), this.bytes(1 + this.int(4)), buf.subarray(at)]), kind: 'bytes inserted' };
      }
      case 'delete': {
        const at = this.int(buf.length);
        return { buf: Buffer.concat([buf.subarray(0, at), buf.subarray(at + 1 + this.int(3))]), kind: 'bytes deleted' };
      }
      case 'truncate':
        return { buf: buf.subarray(0, this.int(buf.length)), kind: 'truncated' };
      default:
        return { buf: Buffer.concat(Array.from({ length: 2 + this.int(4) }, () => buf)), kind: 'repeated' };
    }
  }

  randomTokens(): Datagram {
    const words = ['PIDR'];
    for (let n = this.int(6); n > 0; n--) {
      words.push(this.chance(0.5) ? this.digits(1 + this.int(12)) : this.printable(1 + this.int(12)));
    }
    return this.text(words.join(this.pick([' ', '\t', ' '])) + this.pick(['\n', '']), 'PIDR + random words');
  }

  /** Up to 65507 bytes, the most a UDP/IPv4 datagram holds; and the 1024-byte edge. */
  huge(): Datagram {
    const line = Buffer.from(this.requestFields().join(' ') + '\n', 'latin1');
    const r = this.random();
    if (r < 0.25) {
      // Exactly 1024 or 1025 bytes: a valid first line padded after its newline.
      const size = this.chance(0.5) ? MAX_DATAGRAM : MAX_DATAGRAM + 1;
      return { buf: Buffer.concat([line, Buffer.alloc(size - line.length, 0x41)]), kind: `padded to ${size}` };
    }
    const size = this.chance(0.3) ? 65507 : MAX_DATAGRAM + 1 + this.int(65507 - MAX_DATAGRAM);
    if (r < 0.6) return { buf: Buffer.concat([line, this.bytes(size - line.length)]), kind: 'huge, valid first line' };
    if (r < 0.8) return { buf: this.bytes(size), kind: 'huge random' };
    return { buf: Buffer.alloc(size, this.pick([0x00, 0x20, 0x0a, 0x41])), kind: 'huge repeated byte' };
  }

  nulLaden(): Datagram {
    const line = this.requestFields().join(' ');
    const r = this.random();
    if (r < 0.2) return { buf: Buffer.alloc(1 + this.int(200)), kind: 'all NUL' };
    if (r < 0.4) return this.text(line.replace(/ /g, '\u0000') + '\n', 'NUL separators');
    if (r < 0.6) return this.text(`${line}\n${'\u0000'.repeat(1 + this.int(100))}`, 'NULs after the newline');
    if (r < 0.8) return this.text(`${line}${'\u0000'.repeat(1 + this.int(10))}\n`, 'NULs at the end of the line');
    const at = this.int(line.length + 1);
    return this.text(`${line.slice(0, at)}\u0000${line.slice(at)}\n`, 'NUL inside');
  }

  replyShaped(): Datagram {
    const pid = this.pid();
    return this.text(this.pick([`EXIS ${pid} 1 ${this.uniqueHost()}`, `EXIS ${pid} 0 ${this.uniqueHost()}`, `UNKN ${pid} na ${this.uniqueHost()}`]), 'a reply as request');
  }

  odd(): Datagram {
    return this.text(
      this.pick([
        '\n', ' ', '\t\r\n', 'PIDR', 'PIDR\n', 'PIDR ', `PIDR ${' '.repeat(1000)}`, `${' '.repeat(900)}PIDR ${this.pid()} ${this.uniqueHost()} 3\n`,
        `PIDR ${this.pid()} ${'a '.repeat(400)}`, `\nPIDR ${this.pid()} ${this.uniqueHost()} 3\n`, `PIDR ${this.pid()} ${this.uniqueHost()} 3 1 2 3 4 5 6 7 8 9`,
        `PIDR 1 ${this.uniqueHost()} 3 ${'9'.repeat(1000)}`, 'GET / HTTP/1.0\r\n\r\n', '\u00ff\u00fe', `PIDR ${this.pid()} ${this.uniqueHost()} 7\n`,
      ]),
      'odd',
    );
  }
}

// ---------------------------------------------------------------------------
// The driver

export interface FuzzOptions {
  port: number;
  address?: string;
  /** Datagrams to send (sentinels included); the run also ends after maxMs. */
  count: number;
  maxMs: number;
  /** Datagrams per closed-loop batch, the last a sentinel. @default 200 */
  batch?: number;
  seed: number;
  truth: Truth;
  /** Called after each batch with the datagrams sent so far; may throw to stop the run. */
  onBatch?: (sent: number) => void | Promise<void>;
}

export interface Failure {
  type: 'wrong answer' | 'answered an invalid datagram' | 'second reply' | 'unanswered' | 'reply to nothing sent';
  detail: string;
}

export interface FuzzReport {
  seed: number;
  ms: number;
  /** Datagrams generated (sentinels included), and datagrams sent (with resends). */
  datagrams: number;
  sent: number;
  bytes: number;
  valid: number;
  invalid: number;
  /** Invalid datagrams over the size limit (counted apart by the daemon). */
  oversized: number;
  /** Valid requests whose flags ask for no reply. */
  silent: number;
  expectedReplies: number;
  replies: number;
  resends: number;
  /** Valid requests answered only after a resend (a datagram lost by the kernel). */
  recovered: number;
  /** Mismatches explained by a pid that changed state during the run (pid reuse). */
  truthChanged: number;
  kinds: Map<string, { sent: number; valid: number }>;
  /** Up to a few examples of each failure type and datagram kind. */
  failures: Map<string, Failure[]>;
  /** Failures by type and datagram kind (all counted, even past the examples kept). */
  failureCounts: Map<string, number>;
}

interface Sent {
  dgram: Datagram;
  fields: string[];
  check: Check;
  expect: string | undefined;
  batch: number;
  sends: number;
  replies: number;
  wrong: boolean;
  /** Unanswered at the end of its batch, waiting to be sent again. */
  missing?: boolean;
}

const MAX_EXAMPLES = 4;

/** Sends `count` datagrams in closed-loop batches and checks every reply. */
export async function fuzz(opts: FuzzOptions): Promise<FuzzReport> {
  const address = opts.address ?? '127.0.0.1';
  const batchSize = opts.batch ?? 200;
  const gen = new Gen(rng(opts.seed), opts.truth, `f${opts.seed.toString(36)}.`);
  const started = performance.now();
  const report: FuzzReport = {
    seed: opts.seed, ms: 0, datagrams: 0, sent: 0, bytes: 0, valid: 0, invalid: 0, oversized: 0, silent: 0, expectedReplies: 0, replies: 0,
    resends: 0, recovered: 0, truthChanged: 0, kinds: new Map(), failures: new Map(), failureCounts: new Map(),
  };
  const fail = (type: Failure['type'], kind: string, detail: string) => {
    const key = `${type} (${kind})`;
    report.failureCounts.set(key, (report.failureCounts.get(key) ?? 0) + 1);
    const examples = report.failures.get(key) ?? [];
    if (examples.length < MAX_EXAMPLES) examples.push({ type, detail });
    report.failures.set(key, examples);
  };
  const show = (buf: Buffer) => JSON.stringify(buf.length > 120 ? `${buf.subarray(0, 100).toString('latin1')}...(${buf.length} bytes)` : buf.toString('latin1'));

  // Replies awaited, by their exact text; records of the last batches, to explain a surprise.
  const pending = new Map<string, Sent[]>();
  let recent: Sent[] = [];
  let waiting: { record: Sent; resolve: () => void } | undefined;
  let missing: Sent[] = [];
  let currentBatch = 0;

  const socket = dgram.createSocket(address.includes(':') ? 'udp6' : 'udp4');
  socket.on('error', (err) => fail('reply to nothing sent', 'socket', `client socket error: ${err.message}`));
  await new Promise<void>((resolve) => socket.bind(0, address, resolve));
  try {
    socket.setRecvBufferSize(4 * 1024 * 1024);
  } catch {
    // The default queue: resends cover the rare loss.
  }

  function onReply(msg: Buffer): void {
    report.replies++;
    const text = msg.toString('latin1');
    const candidates = pending.get(text);
    const record = candidates?.find((r) => r.replies < r.sends && !r.wrong);
    if (record) {
      record.replies++;
      if (waiting?.record === record) waiting.resolve();
      return;
    }
    if (candidates?.some((r) => r.replies > 0)) {
      const r = candidates.find((c) => c.replies > 0)!;
      const all = candidates.map((c) => `${show(c.dgram.buf)} (${c.dgram.kind}, batch ${c.batch}, ${c.sends} sends, ${c.replies} replies${c.wrong ? ', answered wrong' : ''})`);
      fail('second reply', r.dgram.kind, `reply ${JSON.stringify(text)} in batch ${currentBatch} came once more than sent to: ${all.join('; ')}`);
      return;
    }
    // Which datagram does it answer? The one with the same pid and host text.
    const [, pid, , host] = firstLineFields(msg);
    let matches = recent.filter((r) => r.fields[1] === pid && (r.fields[2] ?? opts.truth.ownHost) === host);
    // A pid the daemon rewrote (0123 answered as 123): the host alone says which.
    if (matches.length === 0 && host !== opts.truth.ownHost) matches = recent.filter((r) => r.fields[2] === host);
    const r = matches.find((m) => !m.check.valid) ?? matches.find((m) => !m.wrong) ?? matches[0];
    if (r === undefined) {
      fail('reply to nothing sent', 'unknown', `reply ${JSON.stringify(text.slice(0, 300))} in batch ${currentBatch} matches no datagram sent lately`);
      return;
    }
    if (!r.check.valid) {
      fail('answered an invalid datagram', r.dgram.kind, `${show(r.dgram.buf)} (${r.check.why}) was answered ${JSON.stringify(text.slice(0, 300))}`);
      return;
    }
    if (text === r.expect) {
      fail('second reply', r.dgram.kind, `${show(r.dgram.buf)} got ${r.replies + 1} replies to ${r.sends} sends: ${JSON.stringify(text)}`);
      return;
    }
    r.replies++;
    r.wrong = true;
    // A pid whose state changed since the datagram was made (reused, or a process of
    // another test that ended) explains a different answer: ask the truth again.
    const now = expectedReply(r.check.request, opts.truth);
    if (now !== r.expect && now === text) {
      report.truthChanged++;
      return;
    }
    const want = r.expect === undefined ? 'no reply (its flags ask for none)' : JSON.stringify(r.expect);
    fail('wrong answer', r.dgram.kind, `${show(r.dgram.buf)} was answered ${JSON.stringify(text.slice(0, 300))}, the contract says ${want}`);
  }
  socket.on('message', onReply);

  const send = (record: Sent) =>
    new Promise<void>((resolve) => {
      record.sends++;
      report.sent++;
      report.bytes += record.dgram.buf.length;
      socket.send(record.dgram.buf, opts.port, address, (err) => {
        if (err) fail('unanswered', record.dgram.kind, `sending ${show(record.dgram.buf)} failed: ${err.message}`);
        resolve();
      });
    });

  /** Sends a record until its reply comes (or tries run out); returns whether it came. */
  async function sendAndWait(record: Sent, tries: number, waitMs: number): Promise<boolean> {
    for (let i = 0; i < tries && record.replies === 0; i++) {
      if (i > 0 || record.sends > 0) report.resends++;
      const replied = new Promise<void>((resolve) => (waiting = { record, resolve }));
      await send(record);
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([replied, new Promise<void>((resolve) => (timer = setTimeout(resolve, waitMs)))]);
      clearTimeout(timer);
      waiting = undefined;
    }
    return record.replies > 0;
  }

  function record(d: Datagram, batch: number): Sent {
    const check = checkRequest(d.buf);
    const expect = check.valid ? expectedReply(check.request, opts.truth) : undefined;
    const r: Sent = { dgram: d, fields: firstLineFields(d.buf), check, expect, batch, sends: 0, replies: 0, wrong: false };
    report.datagrams++;
    const kind = report.kinds.get(d.kind) ?? { sent: 0, valid: 0 };
    kind.sent++;
    if (check.valid) {
      kind.valid++;
      report.valid++;
      if (expect === undefined) report.silent++;
      else {
        report.expectedReplies++;
        const list = pending.get(expect);
        if (list) list.push(r);
        else pending.set(expect, [r]);
      }
    } else {
      report.invalid++;
      if (d.buf.length > MAX_DATAGRAM) report.oversized++;
    }
    report.kinds.set(d.kind, kind);
    return r;
  }

  function forget(r: Sent): void {
    if (r.expect === undefined) return;
    const list = pending.get(r.expect);
    if (!list) return;
    const rest = list.filter((x) => x !== r);
    if (rest.length > 0) pending.set(r.expect, rest);
    else pending.delete(r.expect);
  }

  try {
    for (let batch = 0; report.datagrams < opts.count && performance.now() - started < opts.maxMs; batch++) {
      currentBatch = batch;
      const n = Math.min(batchSize, opts.count - report.datagrams);
      const records: Sent[] = [];
      for (let i = 0; i < n - 1; i++) records.push(record(gen.datagram(), batch));
      const sentinel = record(gen.sentinel(), batch);
      records.push(sentinel);
      recent = recent.filter((r) => r.batch >= batch - 2).concat(records);
      const replied = new Promise<void>((resolve) => (waiting = { record: sentinel, resolve }));
      const sends = records.slice(0, -1).map(send);
      await Promise.all(sends);
      if (!(await sendAndWaitFirst(sentinel, replied))) {
        fail('unanswered', 'sentinel', `sentinel ${show(sentinel.dgram.buf)} got no reply in 5 tries`);
      }
      // Everything before the sentinel was answered before it (one socket, one queue, in
      // order); a reply still missing was lost, or is not coming: asked again later, all
      // together, so that a run with many of them still keeps its pace.
      for (const r of records) {
        if (r.expect !== undefined && r.replies === 0) {
          r.missing = true;
          missing.push(r);
        }
      }
      if (missing.length >= 200) await retryMissing();
      // Records two batches old are done with: a late reply to them is a failure anyway.
      for (const r of recent) if (r.batch < batch - 1 && !r.missing) forget(r);
      await opts.onBatch?.(report.datagrams);
    }
    await retryMissing();
    // Stragglers: a second reply to the last batches.
    await new Promise((resolve) => setTimeout(resolve, 300));
  } finally {
    waiting = undefined;
    socket.close();
  }
  report.ms = performance.now() - started;
  return report;

  /** Sends the unanswered valid requests again, twice at most, and judges them. */
  async function retryMissing(): Promise<void> {
    for (let round = 0; round < 2; round++) {
      const todo = missing.filter((r) => r.replies === 0);
      if (todo.length === 0) break;
      report.resends += todo.length;
      await Promise.all(todo.map(send));
      const deadline = performance.now() + 300;
      while (performance.now() < deadline && todo.some((r) => r.replies === 0)) await new Promise((resolve) => setTimeout(resolve, 5));
    }
    for (const r of missing) {
      if (r.replies > 0) {
        if (!r.wrong) report.recovered++;
      } else if (r.check.valid && expectedReply(r.check.request, opts.truth) === undefined) {
        // Its pid changed state meanwhile (a reaped pid reused), and now no reply is due.
        report.truthChanged++;
      } else {
        fail('unanswered', r.dgram.kind, `${show(r.dgram.buf)} got no reply to ${r.sends} sends; the contract says ${JSON.stringify(r.expect)}`);
      }
      r.missing = false;
      forget(r);
    }
    missing = [];
  }

  async function sendAndWaitFirst(sentinel: Sent, replied: Promise<void>): Promise<boolean> {
    await send(sentinel);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([replied, new Promise<void>((resolve) => (timer = setTimeout(resolve, 1000)))]);
    clearTimeout(timer);
    waiting = undefined;
    return sentinel.replies > 0 || sendAndWait(sentinel, 4, 1000);
  }
}

/** The report's counts on a few lines, and the failures (examples first, then counts). */
export function summarize(report: FuzzReport): string {
  const lines = [
    `seed ${report.seed}: ${report.datagrams} datagrams (${report.sent} sends, ${(report.bytes / 1e6).toFixed(1)} MB) in ${(report.ms / 1000).toFixed(1)} s, ` +
      `${Math.round(report.sent / (report.ms / 1000))}/s`,
    `valid ${report.valid} (of which ${report.silent} ask for no reply), invalid ${report.invalid}; replies expected ${report.expectedReplies}, ` +
      `received ${report.replies}; resends ${report.resends}, recovered after a loss ${report.recovered}, truth changed ${report.truthChanged}`,
    `kinds: ${[...report.kinds].sort((a, b) => b[1].sent - a[1].sent).map(([k, v]) => `${k} ${v.sent}/${v.valid} valid`).join(', ')}`,
  ];
  if (report.failureCounts.size > 0) {
    lines.push(`FAILURES: ${[...report.failureCounts].map(([k, v]) => `${v} x ${k}`).join('; ')}`);
    for (const [key, examples] of report.failures) {
      lines.push(`  ${key}:`);
      for (const f of examples) lines.push(`    ${f.detail}`);
    }
  }
  return lines.join('\n');
}

/** The failures of one type, or of all. */
export function failuresOf(report: FuzzReport, ...types: Failure['type'][]): number {
  let n = 0;
  for (const [key, count] of report.failureCounts) if (types.some((t) => key.startsWith(`${t} (`))) n += count;
  return n;
}

// ---------------------------------------------------------------------------
// Processes, through /proc

/**
 * V8's heap sizing, pinned for a daemon under the fuzzer: its young
 * generation grows in steps under load (to 3 x 16 MB as Node ships it, VmRSS
 * ~55 MB to ~113 MB over the first ~550 000 datagrams, then flat: see
 * test/soak/run.ts; to 3 x 4 MB with the daemon's own cap, src/daemon/heap.ts),
 * which would hide a leak or fake one. With a small young generation and a
 * capped old one, VmRSS shows what the daemon keeps, and a leak that outgrows
 * the cap crashes it, which the restart checks see. Its logic is unchanged.
 */
export const HEAP_FLAGS = '--max-semi-space-size=1 --max-old-space-size=20';

/**
 * NODE_OPTIONS with HEAP_FLAGS, for a daemon whose command line a test does
 * not write (a detached one): its old space is capped, but its semi-space is
 * the daemon's own, as its command line wins over NODE_OPTIONS.
 */
export function pinnedHeapEnv(): NodeJS.ProcessEnv {
  return { NODE_OPTIONS: `${process.env['NODE_OPTIONS'] ?? ''} ${HEAP_FLAGS}`.trim() };
}

/** startDaemon()'s wrap for a daemon with HEAP_FLAGS in place of the bin's own heap option (src/daemon/heap.ts). */
export function pinnedHeap(command: string, args: string[]): [string, string[]] {
  return [command, args.flatMap((word) => (word === DAEMON_HEAP_OPTION ? HEAP_FLAGS.split(' ') : [word]))];
}

/** VmRSS of a live process, in kB. */
export function rssKb(pid: number): number {
  const match = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'latin1'));
  if (!match) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(match[1]);
}


/**
 * Datagrams the kernel dropped on the UDP socket bound to `port` (the last
 * column of /proc/net/udp{,6}), or undefined if no such socket is found.
 */
export function kernelDrops(port: number): number | undefined {
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  let total: number | undefined;
  for (const table of ['/proc/net/udp', '/proc/net/udp6']) {
    let text = '';
    try {
      text = readFileSync(table, 'latin1');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length > 10 && cols[1]!.endsWith(`:${hex}`)) total = (total ?? 0) + Number(cols[cols.length - 1]);
    }
  }
  return total;
}

/** "stopped: received R, answered A, ..., malformed M, ..., denied D, limited L, ..." (every counter, as SIGUSR1 names them) from the daemon's log. */
export function stopCounters(log: string): Record<'received' | 'answered' | 'malformed' | 'denied' | 'limited', number> | undefined {
  const line = /stopped: (.*)$/m.exec(log)?.[1];
  if (line === undefined) return undefined;
  const counters = new Map(line.split(', ').map((pair) => pair.split(' ') as [string, string]));
  const [received, answered, malformed, denied, limited] = ['received', 'answered', 'malformed', 'denied', 'limited'].map((name) => Number(counters.get(name)));
  if (![received, answered, malformed, denied, limited].every(Number.isSafeInteger)) return undefined;
  return { received: received!, answered: answered!, malformed: malformed!, denied: denied!, limited: limited! };
}

/**
 * The datagrams a run with this seed sends, batch by batch, sentinels included,
 * without sending them: to replay or inspect a failure.
 */
export function* datagrams(seed: number, truth: Truth, batch = 200): Generator<Datagram> {
  const gen = new Gen(rng(seed), truth, `f${seed.toString(36)}.`);
  for (;;) {
    for (let i = 0; i < batch - 1; i++) yield gen.datagram();
    yield gen.sentinel();
  }
}
