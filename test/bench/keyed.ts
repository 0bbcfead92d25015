import { createHmac, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ask } from '../support/helpers.js';

/**
 * Keyed messages for the bench, computed here from the layout of src/wire/keys.ts
 * (not with its code, so the bench also checks the daemon against the
 * layout): `<line> <id>:<mac>`, mac the first 32 lowercase hex digits of
 * HMAC-SHA256(secret, every byte before it), a reply's with the daemon's
 * identity line before those bytes (doc/protocol.md, "Keys: authenticated messages").
 */

export interface BenchKey {
  id: number;
  secret: Buffer;
  /** A 0600 key file holding this one key. */
  file: string;
  /** Removes the key file and its temp dir. */
  remove(): void;
}

/** A fresh key `1 <64 hex digits>` in a 0600 file of a 0700 temp dir. */
export function writeKeyFile(): BenchKey {
  const dir = mkdtempSync(join(tmpdir(), 'pidstat-bench-key-'));
  const secret = randomBytes(32);
  const file = join(dir, 'keys');
  writeFileSync(file, `1 ${secret.toString('hex')}\n`, { mode: 0o600 });
  return { id: 1, secret, file, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

const mac = (key: BenchKey, signed: string): string => createHmac('sha256', key.secret).update(Buffer.from(signed, 'latin1')).digest('hex').slice(0, 32);

/** `line` with its authenticator appended. */
export function signLine(key: BenchKey, line: string): string {
  const signed = `${line} ${key.id}:`;
  return signed + mac(key, signed);
}

/** `host` with a cookie, as a client's request carries it: `HOST/<16 hex digits>`. */
export const withCookie = (host: string): string => `${host}/${randomBytes(8).toString('hex')}`;

/** `PIDR <pid> <host> <flags> - <id>:<mac>\n`. */
export const keyedRequest = (key: BenchKey, pid: string, host: string, flags = 3): string => `${signLine(key, `PIDR ${pid} ${host} ${flags} -`)}\n`;

/**
 * Sends `request` once and checks the daemon answers `expected` (the reply's
 * text before its authenticator, e.g. `EXIS 1 1 HOST -`) with a MAC that
 * verifies under `key`; and that the same request with a wrong MAC gets no
 * answer (an AUTH refusal at most), so the daemon does check what the load
 * will send.
 */
export async function checkKeyedAnswer(port: number, key: BenchKey, request: string, expected: string): Promise<void> {
  const reply = await ask(port, request);
  const match = /^(.* [0-9]+:)([0-9a-f]{32})\n?$/s.exec(reply ?? '');
  if (reply === undefined || !match) throw new Error(`daemon answered ${JSON.stringify(reply)} to ${JSON.stringify(request)}, not a keyed reply`);
  if (match[1] !== `${expected} ${key.id}:`) throw new Error(`daemon answered ${JSON.stringify(reply)}, not "${expected} ${key.id}:<mac>"`);
  // The daemon as asked: ask() sends to 127.0.0.1.
  if (match[2] !== mac(key, `pidstatd 127.0.0.1 ${port}\n${match[1]!}`)) throw new Error(`the MAC of the daemon's reply ${JSON.stringify(reply)} does not verify`);
  const lastDigit = request.at(-2)!;
  const forged = `${request.slice(0, -2)}${lastDigit === '0' ? '1' : '0'}\n`;
  // At most its refusal (doc/protocol.md, AUTH), never an answer.
  const forgedReply = await ask(port, forged, { waitMs: 300 });
  if (forgedReply !== undefined && !forgedReply.startsWith('AUTH ')) throw new Error(`daemon answered ${JSON.stringify(forgedReply)} to a request with a wrong MAC`);
}
