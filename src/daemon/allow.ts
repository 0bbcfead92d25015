import { BlockList, isIPv4, isIPv6 } from 'node:net';
import { mappedIPv4 } from '../wire/address.js';

/**
 * `--allow` (pidstatd(8), OPTIONS): the client ranges a daemon answers, each
 * matched against clients of its own family only.
 */

/** Who may be answered: a client address (IPv4 as such, never ::ffff:a.b.c.d) is matched against the ranges of its own family. */
export interface AllowList {
  admits(address: string): boolean;
}

/**
 * Parses `--allow` ranges; throws a RangeError for an empty list or naming a
 * bad range. An IPv4-mapped range (::ffff:10.0.0.0/104) is the IPv4 range it
 * maps.
 */
export function parseAllow(ranges: readonly string[]): AllowList {
  if (ranges.length === 0) {
    throw new RangeError('the list of ranges is empty: name at least one (like 10.0.0.0/8 or fd00::/8), or none at all to answer everyone');
  }
  const ipv4 = new BlockList();
  const ipv6 = new BlockList();
  for (const range of ranges) {
    const [, address = '', prefixText] = /^([^/]*)(?:\/([0-9]{1,3}))?$/.exec(range.trim()) ?? [];
    const family = isIPv4(address) ? 'ipv4' : isIPv6(address) ? 'ipv6' : undefined;
    const max = family === 'ipv4' ? 32 : 128;
    const prefix = prefixText === undefined ? max : Number(prefixText);
    if (family === undefined || prefix > max) {
      throw new RangeError(`'${range}' is not an address or CIDR range (like 10.0.0.0/8 or fd00::/8)`);
    }
    const mapped = family === 'ipv6' && prefix >= 96 ? mappedIPv4(address) : undefined;
    if (mapped !== undefined) ipv4.addSubnet(mapped, prefix - 96, 'ipv4');
    else (family === 'ipv4' ? ipv4 : ipv6).addSubnet(address, prefix, family);
  }
  // Separate lists: a BlockList matches an IPv4 address against its IPv6
  // rules too (as ::ffff:a.b.c.d), so ::/0 would admit every IPv4 client.
  return { admits: (address) => (address.includes(':') ? ipv6.check(address, 'ipv6') : ipv4.check(address, 'ipv4')) };
}

/**
 * An IPv4 client of a dual-stack socket, which the kernel writes
 * ::ffff:a.b.c.d, as the IPv4 address it is, for --allow and --rate.
 */
export function unmapped(address: string): string {
  return address.startsWith('::ffff:') && address.includes('.', 7) ? address.slice(7) : address;
}
