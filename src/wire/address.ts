/**
 * Addresses as text, written one way, whoever wrote them: what a message
 * names (a daemon's identity in a keyed reply, a target's host), with no
 * socket and no look-up. Names, ports and what is this host are host.ts's.
 */

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

/**
 * `host:port` (or `host:pid`), with an IPv6 address in brackets: `[::1]:1752`.
 * A colon marks the address, as no host name has one.
 */
export function joinHostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}
