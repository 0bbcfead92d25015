import { isValidHost, parsePid } from './protocol.js';
import { MAC_HEX_DIGITS, type Auth } from './keys.js';

/**
 * The messages of push death notices (doc/protocol.md, Death notices), this
 * suite's addition to the protocol. An IPC::Locker daemon does not know
 * them and answers nothing, and the client then polls with PIDR as before.
 *
 *   SUBS <pid> <host> <start> <ticket>\n   subscribe, or renew (client)
 *   SUBC <pid> <host> <ticket>              prove your address (daemon)
 *   SUBR <pid> <host> <state> <lease>       the outcome (daemon)
 *   NOTE <pid> <host> <start> <seq>         the pid died (daemon)
 *   ACKN <pid> <host> <seq>\n               the notice arrived (client)
 *
 * <host> is the subscriber's <host> field, cookie included, as in PIDR: only
 * who reads the subscription can match or forge its answers. <start> is the
 * start token of the process meant. <ticket> is the daemon's stateless
 * cookie for the subscriber's address, port, pid and host, echoed back
 * (TICKET_DIGITS hex digits; on first contact, as many zeros, so the
 * challenge is never longer than the request). <state> is 1 (it lives: the
 * subscription holds for <lease> seconds), 0 (it is dead) or - (it lives,
 * but the daemon keeps no subscription for it: ask again by polling).
 * With keys, each message has one more field, `<id>:<mac>`, as PIDR and EXIS
 * have (keys.ts); SUBC has none: it carries nothing to trust.
 */

export const TICKET_DIGITS = 24;
export const NO_TICKET = '0'.repeat(TICKET_DIGITS);

export type PushMessage =
  | { kind: 'SUBS'; pid: number; host: string; start: string; ticket: string; auth?: Auth }
  | { kind: 'SUBC'; pid: number; host: string; ticket: string }
  | { kind: 'SUBR'; pid: number; host: string; state: '1' | '0' | '-'; lease: number; auth?: Auth }
  | { kind: 'NOTE'; pid: number; host: string; start: string; seq: number; auth?: Auth }
  | { kind: 'ACKN'; pid: number; host: string; seq: number; auth?: Auth };

const KINDS = new Set(['SUBS', 'SUBC', 'SUBR', 'NOTE', 'ACKN']);
const DECIMAL_RE = /^[0-9]{1,20}$/;
const TICKET_RE = new RegExp(`^[0-9a-f]{${TICKET_DIGITS}}$`);
const AUTH_RE = new RegExp(`^([1-9][0-9]{0,4}):([0-9a-f]{${MAC_HEX_DIGITS}})$`);
/** Fields of each kind, before an authenticator. */
const FIELDS: Record<PushMessage['kind'], number> = { SUBS: 5, SUBC: 4, SUBR: 5, NOTE: 5, ACKN: 4 };

/** Whether a datagram is one of these messages at all (its first four bytes). */
export function isPushMessage(buf: Uint8Array): boolean {
  return buf.length >= 4 && KINDS.has(Buffer.from(buf.buffer, buf.byteOffset, 4).toString('latin1'));
}

/** Reads a push message; undefined for anything that is not a well-formed one. */
export function decodePush(buf: Uint8Array): PushMessage | undefined {
  if (buf.length > 1024) return undefined;
  const view = Buffer.from(buf.buffer, buf.byteOffset, buf.length);
  const text = view.toString('latin1');
  const line = text.endsWith('\n') ? text.slice(0, -1) : text;
  if (line.includes('\n')) return undefined;
  const fields = line.split(' ');
  const kind = fields[0] as PushMessage['kind'];
  if (!KINDS.has(kind)) return undefined;
  const count = FIELDS[kind];
  if (fields.length !== count && !(fields.length === count + 1 && kind !== 'SUBC')) return undefined;
  const pid = parsePid(fields[1] ?? '');
  const host = fields[2] ?? '';
  if (pid === undefined || !isValidHost(host)) return undefined;
  let auth: Auth | undefined;
  if (fields.length === count + 1) {
    const match = AUTH_RE.exec(fields[count]!);
    if (!match) return undefined;
    const signedLength = line.length - MAC_HEX_DIGITS;
    auth = { id: Number(match[1]), signed: view.subarray(0, signedLength), mac: match[2]! };
  }
  const withAuth = <T extends object>(message: T): T => (auth === undefined ? message : { ...message, auth });
  switch (kind) {
    case 'SUBS': {
      const [, , , start, ticket] = fields as [string, string, string, string, string];
      if (!DECIMAL_RE.test(start) || !TICKET_RE.test(ticket)) return undefined;
      return withAuth({ kind, pid, host, start, ticket });
    }
    case 'SUBC': {
      const ticket = fields[3]!;
      return TICKET_RE.test(ticket) ? { kind, pid, host, ticket } : undefined;
    }
    case 'SUBR': {
      const [, , , state, lease] = fields as [string, string, string, string, string];
      if ((state !== '1' && state !== '0' && state !== '-') || !DECIMAL_RE.test(lease)) return undefined;
      return withAuth({ kind, pid, host, state: state as '1' | '0' | '-', lease: Number(lease) });
    }
    case 'NOTE': {
      const [, , , start, seq] = fields as [string, string, string, string, string];
      if (!DECIMAL_RE.test(start) || !DECIMAL_RE.test(seq)) return undefined;
      return withAuth({ kind, pid, host, start, seq: Number(seq) });
    }
    case 'ACKN': {
      const seq = fields[3]!;
      return DECIMAL_RE.test(seq) ? withAuth({ kind, pid, host, seq: Number(seq) }) : undefined;
    }
  }
}

/** A message's text before its authenticator (and before the newline of a client's message). */
export function pushLine(message: PushMessage): string {
  switch (message.kind) {
    case 'SUBS':
      return `SUBS ${message.pid} ${message.host} ${message.start} ${message.ticket}`;
    case 'SUBC':
      return `SUBC ${message.pid} ${message.host} ${message.ticket}`;
    case 'SUBR':
      return `SUBR ${message.pid} ${message.host} ${message.state} ${message.lease}`;
    case 'NOTE':
      return `NOTE ${message.pid} ${message.host} ${message.start} ${message.seq}`;
    case 'ACKN':
      return `ACKN ${message.pid} ${message.host} ${message.seq}`;
  }
}
