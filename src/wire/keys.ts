import type { KeyObject } from 'node:crypto';
import { createRequire } from 'node:module';
import { canonicalAddress } from './address.js';
import { PrivateFileError, readPrivateFile } from '../sys/privatefile.js';
import { loadLinuxCalls, type LinuxCalls } from '../sys/native.js';

/**
 * Keys (pidstatd(8), Keys): requests and replies authenticated with
 * HMAC-SHA256, for networks where someone may read the traffic and so the
 * cookie alone is not enough.
 *
 * A key file holds one key per line, `<id> <secret>`: id a decimal from 1 to
 * 65535, secret at least 32 hexadecimal digits; blank lines and `#` comments
 * are ignored. Like an ssh private key, it must be a regular file of the
 * user (or root) that neither group nor others may read or write.
 *
 * The authenticator is one more field at the end of a message, `<id>:<mac>`:
 * <mac> is the first 32 lowercase hex digits (128 bits) of HMAC-SHA256 keyed
 * with the secret over every byte of the datagram before <mac>. A keyed
 * message always has all its fields, `-` standing for a missing start token:
 *
 *   PIDR <pid> <host> <flags> <start|-> <id>:<mac>\n
 *   EXIS <pid> 1 <host> <start|-> <id>:<mac>     (also EXIS ... 0, UNKN ... na)
 *
 * A reply echoes the request's <host>, cookie included, so its
 * authenticator binds it to that request. A reply's authenticator also
 * covers, before the datagram's bytes, the identity of the daemon as the
 * client asked it (daemonIdentity(): the address the request was sent to
 * and the port), which travels in no field: a daemon that shares the key
 * but was not the one asked (a request relayed to it) signs another
 * identity, and its reply never verifies.
 * @see man/pidstatd.8, AUTHENTICATION
 */

/** A key: the addon's HMAC context for its secret, or, where the addon has none, a node:crypto key object. */
export type Key = { id: number } & ({ context: unknown } | { secret: KeyObject });

/** The keys of a file: the first signs a client's requests; any one is accepted by a daemon. */
export interface KeyRing {
  readonly file: string;
  readonly first: Key;
  readonly byId: ReadonlyMap<number, Key>;
}

/** A key file that cannot be used; the message names the file and what is wrong. */
export class KeyFileError extends Error {
  override name = 'KeyFileError';
}

export const MAC_HEX_DIGITS = 32;
const MAX_KEY_ID = 65535;
const MIN_SECRET_HEX_DIGITS = 32;
const LINE_RE = /^([0-9]+)[ \t]+([0-9a-fA-F]+)$/;

type Crypto = typeof import('node:crypto');
let crypto: Crypto | undefined;
/** node:crypto, loaded only by a command that has keys. */
function cryptoModule(): Crypto {
  return (crypto ??= createRequire(import.meta.url)('node:crypto') as Crypto);
}

/** A key file's text, read only if nobody else may read or change it; a KeyFileError if not. */
function readKeyText(file: string): string {
  try {
    return readPrivateFile(file, 'key file');
  } catch (err) {
    if (err instanceof PrivateFileError) throw new KeyFileError(err.message);
    throw err;
  }
}

/** Reads and checks a key file; throws KeyFileError. */
export function readKeyFile(file: string): KeyRing {
  const byId = new Map<number, Key>();
  let first: Key | undefined;
  readKeyText(file).split('\n').forEach((raw, index) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const where = `key file ${file}, line ${index + 1}`;
    const match = LINE_RE.exec(line);
    if (!match) throw new KeyFileError(`${where}: not '<id> <secret>' (an id from 1 to ${MAX_KEY_ID}, a secret of hex digits)`);
    const id = Number(match[1]);
    const hex = match[2]!;
    if (!(id >= 1 && id <= MAX_KEY_ID) || match[1]!.startsWith('0')) throw new KeyFileError(`${where}: the id must be a decimal from 1 to ${MAX_KEY_ID}`);
    if (hex.length < MIN_SECRET_HEX_DIGITS || hex.length % 2 !== 0) {
      throw new KeyFileError(`${where}: the secret must be an even number of hex digits, at least ${MIN_SECRET_HEX_DIGITS} (openssl rand -hex 32 makes one)`);
    }
    if (byId.has(id)) throw new KeyFileError(`${where}: key id ${id} is given twice`);
    const bytes = Buffer.from(hex, 'hex');
    const key = keyFromSecret(id, bytes);
    bytes.fill(0);
    byId.set(id, key);
    first ??= key;
  });
  if (first === undefined) throw new KeyFileError(`key file ${file}: no key in it`);
  return { file, first, byId };
}

/** A key of id `id` for the secret `bytes` (which the caller may then wipe). */
export function keyFromSecret(id: number, bytes: Uint8Array): Key {
  // node:crypto (some 5 ms of a start) only where the addon cannot do it.
  const addon = hmacOfAddon();
  return addon !== null ? { id, context: addon.hmacKey(bytes) } : { id, secret: cryptoModule().createSecretKey(Buffer.from(bytes)) };
}

type AddonHmac = Required<Pick<LinuxCalls, 'hmacKey' | 'hmacSha256'>>;
let addonHmac: AddonHmac | null | undefined;
/**
 * The addon's HMAC-SHA256: OpenSSL's, as node:crypto's, with a context
 * prepared once per key instead of an Hmac object per call (a keyed daemon
 * computes two MACs per request: a fifth of the cost). Null where the addon
 * cannot load or finds no HMAC in the process.
 */
function hmacOfAddon(): AddonHmac | null {
  if (addonHmac === undefined) {
    const addon = loadLinuxCalls().addon;
    addonHmac = addon?.hmacKey !== undefined && addon.hmacSha256 !== undefined ? { hmacKey: addon.hmacKey, hmacSha256: addon.hmacSha256 } : null;
  }
  return addonHmac;
}
const digest = Buffer.alloc(32);
let scratch = Buffer.alloc(1100);

/** The 32 hex digits of the authenticator of `signed` (bytes, or text of one char per byte). */
function mac(key: Key, signed: Uint8Array | string): string {
  if ('context' in key) {
    const { hmacSha256 } = hmacOfAddon()!;
    if (typeof signed === 'string') {
      if (signed.length > scratch.length) scratch = Buffer.alloc(signed.length);
      hmacSha256(key.context, scratch, scratch.write(signed, 0, 'latin1'), digest);
    } else {
      hmacSha256(key.context, signed, signed.length, digest);
    }
    return digest.toString('hex', 0, MAC_HEX_DIGITS / 2);
  }
  const hmac = cryptoModule().createHmac('sha256', key.secret);
  (typeof signed === 'string' ? hmac.update(signed, 'latin1') : hmac.update(signed));
  return hmac.digest('hex').slice(0, MAC_HEX_DIGITS);
}

/**
 * The daemon as a client asked it, which a reply's authenticator covers:
 * the address the request was sent to and the daemon's port.
 */
export function daemonIdentity(address: string, port: number): string {
  return `pidstatd ${canonicalAddress(address)} ${port}\n`;
}

/**
 * `line` with its authenticator field appended; `identity` (a reply's
 * daemonIdentity()) is covered by it but not sent.
 */
export function signLine(key: Key, line: string, identity = ''): string {
  const signed = `${line} ${key.id}:`;
  return signed + mac(key, identity + signed);
}

/** Whether two texts of MAC_HEX_DIGITS chars are equal, in a time that does not tell where they differ. */
function sameDigits(a: string, b: string): boolean {
  if (a.length !== MAC_HEX_DIGITS || b.length !== MAC_HEX_DIGITS) return false;
  let diff = 0;
  for (let i = 0; i < MAC_HEX_DIGITS; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

/** An authenticator as a message carries it: its key id, the bytes it covers and the digits given. */
export interface Auth {
  id: number;
  /** Every byte of the datagram before the mac. */
  signed: Uint8Array;
  mac: string;
}

/**
 * The key that made `auth`, when it is one of `accepted` and it covers
 * `identity` (signLine()) before the datagram's bytes; undefined for any other.
 */
export function verify(auth: Auth | undefined, accepted: ReadonlyMap<number, Key>, identity = ''): Key | undefined {
  if (auth === undefined) return undefined;
  const key = accepted.get(auth.id);
  if (key === undefined) return undefined;
  const signed = identity === '' ? auth.signed : Buffer.concat([Buffer.from(identity, 'latin1'), auth.signed]);
  return sameDigits(mac(key, signed), auth.mac) ? key : undefined;
}
