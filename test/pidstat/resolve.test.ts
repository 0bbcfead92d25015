import assert from 'node:assert/strict';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { spawn } from 'node:child_process';
import { binCommand, binEnv, sleep, startDaemon, startSleeper, waitFor } from '../support/helpers.js';
import { createHostPair, inNetns, netnsUnavailable, runBinIn, type HostPair } from '../support/netns.js';

/**
 * A host name that cannot be resolved gives no_reply, and stderr says so.
 * Run in a network namespace whose resolver is its own loopback, where
 * nothing answers: the look-up fails at once and no query leaves the machine.
 */

const why = netnsUnavailable();
let pair: HostPair;
let etc: string;
let etcB: string;

before(async () => {
  if (why) return;
  pair = await createHostPair();
  // `ip netns exec NAME` puts /etc/netns/NAME/resolv.conf over /etc/resolv.conf.
  etc = `/etc/netns/${pair.a.name}`;
  mkdirSync(etc, { recursive: true });
  writeFileSync(`${etc}/resolv.conf`, 'nameserver 127.0.0.1\noptions timeout:1 attempts:1\n');
  etcB = `/etc/netns/${pair.b.name}`;
  mkdirSync(etcB, { recursive: true });
  writeFileSync(`${etcB}/resolv.conf`, 'nameserver 127.0.0.1\noptions timeout:1 attempts:1\n');
});
after(async () => {
  if (etc) rmSync(etc, { recursive: true, force: true });
  if (etcB) rmSync(etcB, { recursive: true, force: true });
  await pair?.destroy();
});

test('an unresolvable host is no_reply, exit 2, and stderr names the look-up failure', { skip: why ?? false }, async () => {
  const r = await runBinIn(pair.a, 'pidstat', ['--no-local', '--port', '40000', '--try-timeout', '200ms', '--tries', '2', 'no-such-host.invalid:12', `${pair.b.ipv4}:1`]);
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

/**
 * A DNS server of the test's own, on B's loopback: it answers every A
 * question with 127.0.0.1, AAAA questions with no address, and prints each
 * question it gets, so the test can count the look-ups.
 */
const DNS_SERVER = `
const dgram = require('node:dgram');
const s = dgram.createSocket('udp4');
s.on('message', (q, from) => {
  let at = 12;
  const labels = [];
  while (q[at] !== 0) { labels.push(q.subarray(at + 1, at + 1 + q[at]).toString()); at += q[at] + 1; }
  const type = q.readUInt16BE(at + 1);
  const question = q.subarray(12, at + 5);
  console.log(type + ' ' + labels.join('.'));
  const header = Buffer.alloc(12);
  q.copy(header, 0, 0, 2);
  header.writeUInt16BE(0x8180, 2);
  header.writeUInt16BE(1, 4);
  header.writeUInt16BE(type === 1 ? 1 : 0, 6);
  const answer = type === 1 ? Buffer.from([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1]) : Buffer.alloc(0);
  s.send(Buffer.concat([header, question, answer]), from.port, from.address);
});
s.bind(53, '127.0.0.1', () => console.log('ready'));
`;

test('each host name is looked up once per run, however many targets name it', { skip: why ?? false }, async () => {
  const [command, args] = inNetns(pair.b, process.execPath, ['-e', DNS_SERVER]);
  const dns = spawn(command, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  let questions = '';
  dns.stdout!.setEncoding('utf8').on('data', (chunk: string) => (questions += chunk));
  const daemon = await startDaemon(['--bind', '127.0.0.1'], binEnv(), (cmd, rest) => inNetns(pair.b, cmd, rest));
  try {
    const deadline = Date.now() + 20_000;
    while (!questions.includes('ready') && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    const targets = Array.from({ length: 50 }, (_, i) => `counted.test:${i + 1}`);
    const r = await runBinIn(pair.b, 'pidstat', ['--no-local', '--port', String(daemon.port), ...targets, 'other.test:1']);
    const lines = r.stdout.split('\n').filter(Boolean);
    assert.equal(lines.length, 51, r.stderr);
    assert.ok(lines.every((line) => / (exists|dead)$/.test(line)), r.stdout + r.stderr);
    const asked = questions.split('\n').filter((q) => / (counted|other)\.test$/.test(q));
    // One getaddrinfo() per name: an A and an AAAA question each, at most.
    const counted = asked.filter((q) => q.endsWith(' counted.test'));
    assert.ok(counted.length >= 1 && counted.length <= 2, asked.join(', '));
    assert.ok(asked.filter((q) => q.endsWith(' other.test')).length <= 2, asked.join(', '));
  } finally {
    await daemon.stop();
    dns.kill('SIGTERM');
  }
});

test('a name that did not resolve is looked up again: pidstat wait learns the death once it resolves', { skip: why ?? false }, async (t) => {
  const sleeper = startSleeper();
  t.after(() => sleeper.stop());
  const daemon = await startDaemon(['--bind', '127.0.0.1'], binEnv(), (cmd, rest) => inNetns(pair.a, cmd, rest));
  t.after(() => daemon.stop());
  // -t 30: a liveness bound, the wait ends well before it once the name resolves.
  const [command, args] = inNetns(pair.a, ...binCommand('pidstat', ['wait', '-t', '30', '--interval', '200ms', '--no-local', '--port', String(daemon.port), `later.test:${sleeper.pid}`]));
  const child = spawn(command, args, { env: binEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  const out = { stdout: '', stderr: '' };
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (out.stdout += chunk));
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (out.stderr += chunk));
  const waiting = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => child.on('close', (code) => resolve({ code, ...out })));
  t.after(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await waiting;
  });
  // Nothing answers A's resolver yet: the first look-ups fail, and say so.
  assert.ok(await waitFor(() => /cannot resolve later\.test/.test(out.stderr) || child.exitCode !== null, 20_000), `no failed look-up said: ${JSON.stringify(out)}`);
  const [dnsCommand, dnsArgs] = inNetns(pair.a, process.execPath, ['-e', DNS_SERVER]);
  const dns = spawn(dnsCommand, dnsArgs, { stdio: ['ignore', 'pipe', 'inherit'] });
  const dnsExited = new Promise((resolve) => dns.on('exit', resolve));
  t.after(async () => {
    dns.kill('SIGTERM');
    await dnsExited;
  });
  let questions = '';
  dns.stdout!.setEncoding('utf8').on('data', (chunk: string) => (questions += chunk));
  assert.ok(await waitFor(() => questions.includes('later.test'), 20_000), `later.test was not looked up again: ${questions}`);
  await sleep(500);
  await sleeper.stop();
  const r = await waiting;
  assert.equal(r.code, 0, `exit ${r.code}; stdout: ${r.stdout}; stderr: ${r.stderr}`);
  assert.equal(r.stdout, `later.test:${sleeper.pid} dead\n`);
  assert.match(r.stderr, /cannot resolve later\.test/);
});
