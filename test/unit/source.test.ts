import assert from 'node:assert/strict';
import { test } from 'node:test';
import { sourceOf } from '../../src/daemon/source.js';

/**
 * Which network an address counts as for the per-source subscription cap
 * (src/daemon/source.ts, pidstatd(8) --source-prefix-v4 and -v6).
 */

const cases: [address: string, v4: number | undefined, v6: number | undefined, source: string][] = [
  ['127.0.0.1', undefined, undefined, '127.0.0.0/8'],
  ['127.0.0.11', undefined, undefined, '127.0.0.0/8'],
  ['127.255.3.4', 32, undefined, '127.0.0.0/8'],
  ['127.1.2.3', 24, undefined, '127.0.0.0/8'],
  ['127.1.2.3', 4, undefined, '112.0.0.0/4'],
  ['127.1.2.3', 0, undefined, '0.0.0.0/0'],
  ['::ffff:127.0.0.2', undefined, undefined, '127.0.0.0/8'],
  ['::FFFF:127.0.0.2', undefined, undefined, '127.0.0.0/8'],
  ['192.0.2.7', undefined, undefined, '192.0.2.7/32'],
  ['192.0.2.7', 24, undefined, '192.0.2.0/24'],
  ['192.0.2.7', 0, undefined, '0.0.0.0/0'],
  ['::ffff:192.0.2.7', 24, 128, '192.0.2.0/24'],
  ['255.255.255.255', 31, undefined, '255.255.255.254/31'],
  ['2001:db8:1:2:3:4:5:6', undefined, undefined, '2001:db8:1:2::/64'],
  ['2001:db8:1:2::9', undefined, undefined, '2001:db8:1:2::/64'],
  ['2001:DB8:1:2:ffff::1', undefined, 48, '2001:db8:1::/48'],
  ['2001:db8:1:2:3:4:5:6', undefined, 128, '2001:db8:1:2:3:4:5:6/128'],
  ['2001:db8:1:2:3:4:5:6', undefined, 60, '2001:db8:1::/60'],
  ['2001:db8:1:1f:3:4:5:6', undefined, 60, '2001:db8:1:10::/60'],
  ['fe80::1%eth0', undefined, undefined, 'fe80::/64'],
  ['::1', undefined, undefined, '::/64'],
  ['::1', undefined, 128, '::1/128'],
  ['1:0:0:2:0:0:0:3', undefined, 128, '1:0:0:2::3/128'],
  ['2001:db8::', undefined, 0, '::/0'],
  ['::c000:207', undefined, 128, '::c000:207/128'],
  ['not an address', undefined, undefined, 'not an address'],
];

for (const [address, v4, v6, source] of cases) {
  test(`${address}${v4 === undefined ? '' : ` /${v4} (IPv4)`}${v6 === undefined ? '' : ` /${v6} (IPv6)`} counts as ${source}`, () => {
    assert.equal(sourceOf(address, v4, v6), source);
  });
}
