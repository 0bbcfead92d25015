import { isIPv4, isIPv6 } from 'node:net';

/**
 * Which source an address counts as, for the daemon's per-source limits
 * (doc/protocol.md, Bounded work): a network, since whoever has one address
 * of a network usually has them all. Every address of 127.0.0.0/8 is this
 * host, and any local user may send from any of them: one source. Another
 * IPv4 address is its /32 by default (hosts behind one NAT share a /32,
 * and a larger prefix would join unrelated neighbours). An IPv6 host is
 * handed a /64 at least (RFC 4291's interface identifiers), and picks any
 * address in it: one /64, one source. An IPv4-mapped address
 * (::ffff:a.b.c.d, as a dual-stack socket writes an IPv4 client) is the
 * IPv4 address it maps.
 * @see https://www.rfc-editor.org/rfc/rfc4291#section-2.5.1
 */

export const DEFAULT_SOURCE_PREFIX_V4 = 32;
export const DEFAULT_SOURCE_PREFIX_V6 = 64;

/** The network of `address` under these prefix lengths, as `network/prefix`; an address that is none is its own source. */
export function sourceOf(address: string, prefixV4 = DEFAULT_SOURCE_PREFIX_V4, prefixV6 = DEFAULT_SOURCE_PREFIX_V6): string {
  const mapped = /^::ffff:([0-9.]+)$/i.exec(address)?.[1];
  const ipv4 = mapped ?? address;
  if (isIPv4(ipv4)) {
    const value = ipv4.split('.').reduce((sum, octet) => sum * 256 + Number(octet), 0);
    // Loopback is one host, whatever the prefix, unless the prefix is wider still.
    const prefix = value >>> 24 === 127 ? Math.min(prefixV4, 8) : prefixV4;
    const network = prefix === 0 ? 0 : (value & (~0 << (32 - prefix))) >>> 0;
    return `${network >>> 24}.${(network >>> 16) & 0xff}.${(network >>> 8) & 0xff}.${network & 0xff}/${prefix}`;
  }
  const groups = isIPv6(address) ? ipv6Groups(address) : undefined;
  if (groups === undefined) return address;
  for (let i = 0; i < 8; i++) {
    const kept = Math.max(0, Math.min(16, prefixV6 - i * 16));
    groups[i] = kept === 0 ? 0 : groups[i]! & ((0xffff << (16 - kept)) & 0xffff);
  }
  return `${formatIPv6(groups)}/${prefixV6}`;
}

/** The eight 16-bit groups of a valid IPv6 address (a zone and an IPv4 tail allowed). */
function ipv6Groups(address: string): number[] {
  let text = address.replace(/%.*$/, '');
  const tail = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (tail !== null) {
    const [, a, b, c, d] = tail.map(Number) as [number, number, number, number, number];
    text = `${text.slice(0, tail.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [left = '', right] = text.split('::');
  const parse = (part: string) => (part === '' ? [] : part.split(':').map((group) => parseInt(group, 16)));
  const head = parse(left);
  const rest = right === undefined ? [] : parse(right);
  return [...head, ...Array<number>(8 - head.length - rest.length).fill(0), ...rest];
}

/** The groups as RFC 5952 writes them: lowercase, the longest run of two or more zero groups as `::`. */
function formatIPv6(groups: readonly number[]): string {
  let best = -1;
  let bestLength = 1;
  for (let i = 0; i < 8; ) {
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) [best, bestLength] = [i, j - i];
    i = j === i ? i + 1 : j;
  }
  const hex = groups.map((group) => group.toString(16));
  if (best === -1) return hex.join(':');
  return `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLength).join(':')}`;
}
