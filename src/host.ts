import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { hostname } from 'node:os';

const IPV6_CHARS_RE = /^[0-9A-Fa-f:.]+$/;

/**
 * A dotted quad as net.isIPv4() takes it: four decimals of 0-255, no
 * leading zero. By hand: a regular expression for it is compiled on first
 * use, a third of a millisecond of every pidstat run.
 */
function isIPv4(text: string): boolean {
  const parts = text.split('.');
  return parts.length === 4 && parts.every(isOctet);
}

function isOctet(part: string): boolean {
  if (part.length === 0 || part.length > 3 || (part.length > 1 && part[0] === '0')) return false;
  for (let i = 0; i < part.length; i++) {
    const c = part.charCodeAt(i);
    if (c < 0x30 || c > 0x39) return false;
  }
  return Number(part) <= 255;
}

/**
 * 4 or 6 for an IP address literal, else 0: net.isIP()'s answer but for
 * IPv6 zone ids (fe80::1%eth0 is 0 here: a name for getaddrinfo, which
 * reads it). Here rather than node:net, which would load Node's streams at
 * start-up, and with no first-use compile of net's large IPv6 pattern.
 */
export function ipFamily(text: string): 0 | 4 | 6 {
  if (isIPv4(text)) return 4;
  if (!text.includes(':') || !IPV6_CHARS_RE.test(text)) return 0;
  // The WHATWG URL parser, already loaded, reads IPv6 as RFC 4291 writes it.
  return URL.canParse(`http://[${text}]/`) ? 6 : 0;
}

/** The IPv4 address of an IPv4-mapped IPv6 one (::ffff:a.b.c.d in any spelling), else undefined. */
export function mappedIPv4(address: string): string | undefined {
  let host: string;
  try {
    // The WHATWG URL parser writes IPv6 one way: ::ffff:a00:1 for ::ffff:10.0.0.1.
    host = new URL(`http://[${address}]/`).hostname;
  } catch {
    return undefined;
  }
  const match = /^\[::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})\]$/.exec(host);
  if (!match) return undefined;
  const [high, low] = [parseInt(match[1]!, 16), parseInt(match[2]!, 16)];
  return `${high >> 8}.${high & 0xff}.${low >> 8}.${low & 0xff}`;
}

/**
 * An address written one way, whoever wrote it: IPv4 dotted, an IPv4-mapped
 * address as the IPv4 address it is, IPv6 as the WHATWG URL parser writes it
 * (RFC 5952: lowercase, zeros compressed), without a zone id. Used where two
 * sides must name the same address byte for byte: the daemon's identity in a
 * keyed reply (keys.ts).
 */
export function canonicalAddress(address: string): string {
  const bare = address.replace(/%.*$/, '');
  if (!bare.includes(':')) return bare;
  const mapped = mappedIPv4(bare);
  if (mapped !== undefined) return mapped;
  try {
    return new URL(`http://[${bare}]/`).hostname.slice(1, -1);
  } catch {
    return bare;
  }
}

/** The port of IPC::Locker's pidstatd, where /etc/services has no entry. */
export const FALLBACK_PORT = 1752;

let servicesPort: number | undefined;

/**
 * The `pidstatd` udp entry of /etc/services, else 1752. Node has no
 * getservbyname(3), so the file is read here, once.
 */
export function defaultPort(): number {
  if (servicesPort !== undefined) return servicesPort;
  servicesPort = FALLBACK_PORT;
  let text = '';
  try {
    text = readFileSync('/etc/services', 'utf8');
  } catch {
    return servicesPort;
  }
  if (!text.includes('pidstatd')) return servicesPort;
  for (const line of text.split('\n')) {
    const fields = line.replace(/#.*/, '').trim().split(/\s+/);
    const match = /^([0-9]+)\/udp$/.exec(fields[1] ?? '');
    if (match && (fields[0] === 'pidstatd' || fields.slice(2).includes('pidstatd'))) {
      servicesPort = Number(match[1]);
      break;
    }
  }
  return servicesPort;
}

let fqdn: Promise<string> | undefined;

/**
 * This host's fully qualified name, as the resolver gives it (the way
 * Net::Domain's hostfqdn asks gethostbyname), else the plain host name.
 */
export function localFqdn(): Promise<string> {
  fqdn ??= findFqdn();
  return fqdn;
}

/**
 * node:dns, loaded at its first use: a command that asks only about IP
 * addresses never needs it (dgram does not either, given literalLookup).
 */
export function dnsModule(): typeof import('node:dns') {
  return createRequire(import.meta.url)('node:dns') as typeof import('node:dns');
}

/**
 * The `lookup` option of a dgram socket that only sends to and binds
 * literal addresses: it hands the address back, where dgram's default
 * would load node:dns and take a dns.lookup() round on every send.
 */
export function literalLookup(address: string, options: unknown, callback?: (err: null, address: string, family: number) => void): void {
  const done = typeof options === 'function' ? (options as typeof callback)! : callback!;
  done(null, address, address.includes(':') ? 6 : 4);
}

async function findFqdn(): Promise<string> {
  const name = hostname();
  if (name.includes('.')) return name;
  const dns = dnsModule().promises;
  try {
    const { address } = await dns.lookup(name);
    const { hostname: canonical } = await dns.lookupService(address, 0);
    if (canonical.toLowerCase().startsWith(name.toLowerCase() + '.')) return canonical;
  } catch {
    // No resolver entry for this host: the plain name is all there is.
  }
  return name;
}

/**
 * `host:port` (or `host:pid`), with an IPv6 address in brackets: `[::1]:1752`.
 * A colon marks the address, as no host name has one.
 */
export function joinHostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

const LOOPBACK_NAMES = new Set(['localhost', 'localhost.localdomain', '127.0.0.1', '::1']);

/**
 * Whether `host` names this host: localhost, the host name, the fully
 * qualified name, 127.0.0.1 or ::1 (pidstat(1), Asking).
 */
export async function isLocalHost(host: string): Promise<boolean> {
  const name = host.toLowerCase();
  if (LOOPBACK_NAMES.has(name)) return true;
  const short = hostname().toLowerCase();
  if (name === short) return true;
  // Only a name that could be ours costs a look-up of the fully qualified name.
  if (!name.startsWith(short.split('.')[0] + '.')) return false;
  return name === (await localFqdn()).toLowerCase();
}
