import assert from 'node:assert/strict';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { createHostPair, netnsUnavailable, runBinIn, type HostPair } from './netns.js';

/**
 * A host name that cannot be resolved gives no_reply, and stderr says so.
 * Run in a network namespace whose resolver is its own loopback, where
 * nothing answers: the look-up fails at once and no query leaves the machine.
 */

const why = netnsUnavailable();
let pair: HostPair;
let etc: string;

before(async () => {
  if (why) return;
  pair = await createHostPair();
  // `ip netns exec NAME` puts /etc/netns/NAME/resolv.conf over /etc/resolv.conf.
  etc = `/etc/netns/${pair.a.name}`;
  mkdirSync(etc, { recursive: true });
  writeFileSync(`${etc}/resolv.conf`, 'nameserver 127.0.0.1\noptions timeout:1 attempts:1\n');
});
after(async () => {
  if (etc) rmSync(etc, { recursive: true, force: true });
  await pair?.destroy();
});

test('an unresolvable host is no_reply, exit 2, and stderr names the look-up failure', { skip: why ?? false }, async () => {
  const r = await runBinIn(pair.a, 'pidstat', ['--no-local', '--port', '40000', '--timeout', '200', '--tries', '2', 'no-such-host.invalid:12', `${pair.b.ipv4}:1`]);
  assert.equal(r.code, 2, r.stderr);
  assert.deepEqual(r.stdout.split('\n').filter(Boolean), ['no-such-host.invalid:12 no_reply', `${pair.b.ipv4}:1 no_reply`]);
  assert.match(r.stderr, /^pidstat: no-such-host\.invalid:12: cannot resolve no-such-host\.invalid: (ENOTFOUND|EAI_AGAIN)$/m);
  assert.ok(r.ms < 5000, `${r.ms} ms`);
});

test('--json carries the reason in error, with tries 0 (nothing was sent)', { skip: why ?? false }, async () => {
  const r = await runBinIn(pair.a, 'pidstat', ['--no-local', '--json', '--port', '40000', 'no-such-host.invalid:12']);
  const [result] = JSON.parse(r.stdout) as { state: string; tries: number; error: string }[];
  assert.equal(result!.state, 'no_reply');
  assert.equal(result!.tries, 0);
  assert.match(result!.error, /^cannot resolve/);
});
