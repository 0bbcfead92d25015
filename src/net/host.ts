import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { hostname } from 'node:os';

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
