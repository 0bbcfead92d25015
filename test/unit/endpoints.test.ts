import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import dgram from 'node:dgram';
import dns from 'node:dns';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { test, type TestContext } from 'node:test';
import { EndpointPool, type Endpoint } from '../../src/client/endpoints.js';
import type { Failure } from '../../src/client/failures.js';
import { monotonicMs } from '../../src/sys/time.js';
import { freePort, hasIPv6Loopback, ioSkip, TRANSPORTS, type Io } from '../support/helpers.js';

/**
 * The client's ways to its daemons (src/client/endpoints.ts), in-process
 * over real UDP sockets on loopback: a connected socket per daemon address
 * hears the address it asked, and its host's ICMP "port unreachable"; a
 * daemon that answers from another address is heard once useShared() moved
 * the address to the family's unconnected socket, and the connected socket
 * still hears a late reply; past the descriptor budget (the real
 * RLIMIT_NOFILE, lowered for the test with prlimit(1)) addresses share the
 * unconnected socket from the start; a host name is looked up once per
 * client, and a failed look-up (a fake resolver: none here fails on cue) is
 * tried again at the next question; each address has its own send pace.
 * Every wait is a liveness bound.
 */

/** How long anything that must come may take: a liveness bound, hundreds of times the loopback round trip. */
const BOUND_MS = 10_000;

interface Heard {
  text: string;
  address: string;
  port: number;
}

/** A pool at `port` whose events are kept: what was heard, and the endpoints refused; closed after the test. */
function pool(t: TestContext, port: number, io: Io | 'auto' = 'auto') {
  const heard: Heard[] = [];
  const refused: Endpoint<string>[] = [];
  const waiters = new Set<() => void>();
  const wake = () => {
    for (const waiter of waiters) waiter();
  };
  const endpoints = new EndpointPool<string>(port, io, {
    message: (msg, address, from) => {
      heard.push({ text: msg.toString('latin1'), address, port: from });
      wake();
    },
    refused: (endpoint) => {
      refused.push(endpoint);
      wake();
    },
    debug: undefined,
  });
  t.after(() => endpoints.close());
  /** Resolves once `check` holds, checked at each event; fails the test after BOUND_MS. */
  const until = (what: string, check: () => boolean) =>
    new Promise<void>((resolve, reject) => {
      if (check()) return resolve();
      const timer = setTimeout(() => {
        waiters.delete(waiter);
        reject(new Error(`${what}: not within ${BOUND_MS} ms (heard: ${JSON.stringify(heard)})`));
      }, BOUND_MS);
      const waiter = () => {
        if (!check()) return;
        clearTimeout(timer);
        waiters.delete(waiter);
        resolve();
      };
      waiters.add(waiter);
    });
  return { endpoints, heard, refused, until };
}

/** A UDP socket bound to address:port (0: any), closed after the test. */
async function bound(t: TestContext, address: string, port = 0): Promise<dgram.Socket> {
  const socket = dgram.createSocket(address.includes(':') ? 'udp6' : 'udp4');
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(port, address, () => {
      socket.off('error', reject);
      resolve();
    });
  });
  t.after(() => new Promise<void>((resolve) => socket.close(() => resolve())));
  return socket;
}

/** A daemon at address:port (0: any) that answers each datagram with `reply(text)` from the same socket. */
async function echo(t: TestContext, address: string, port = 0, reply = (text: string) => `re ${text}`): Promise<dgram.Socket> {
  const socket = await bound(t, address, port);
  socket.on('message', (msg, from) => socket.send(reply(msg.toString('latin1')), from.port, from.address));
  return socket;
}

/** The endpoints of `host`, which must be had. */
async function endpointsOf(endpoints: EndpointPool<string>, host: string): Promise<Endpoint<string>[]> {
  const got = await endpoints.endpointsFor(host);
  assert.ok(Array.isArray(got), `no endpoint for ${host}: ${JSON.stringify(got)}`);
  return got;
}

const send = (endpoints: EndpointPool<string>, endpoint: Endpoint<string>, text: string) => endpoints.send(endpoint, Buffer.from(text, 'latin1'));

for (const io of TRANSPORTS) {
  test(`${io}: each daemon address is asked from a connected socket of its own port, and its answers are heard`, { skip: ioSkip(io) }, async (t) => {
    const daemon = await echo(t, '127.0.0.1');
    const port = daemon.address().port;
    await echo(t, '127.0.0.2', port);
    const v6 = (await hasIPv6Loopback()) ? await echo(t, '::1', port) : undefined;
    if (v6 === undefined) t.diagnostic('no ::1 here: IPv6 not tried');
    const { endpoints, heard, until } = pool(t, port, io);
    assert.equal(endpoints.io, io);
    const [first] = await endpointsOf(endpoints, '127.0.0.1');
    const [second] = await endpointsOf(endpoints, '127.0.0.2');
    assert.ok(first!.connected && second!.connected, 'an address of a few got no connected socket');
    assert.notEqual(first!.socket, second!.socket, 'two addresses share a connected socket');
    assert.notEqual(first!.socket.port, second!.socket.port, 'two connected sockets share a port');
    assert.equal(first!.shared, second!.shared, 'one unconnected socket per family');
    assert.notEqual(first!.socket, first!.shared);
    send(endpoints, first!, 'one');
    send(endpoints, second!, 'two');
    await until('both answers', () => heard.length === 2);
    assert.deepEqual(
      heard.map((h) => `${h.address}:${h.port} ${h.text}`).sort(),
      [`127.0.0.1:${port} re one`, `127.0.0.2:${port} re two`],
    );
    if (v6 !== undefined) {
      const [six] = await endpointsOf(endpoints, '::1');
      assert.ok(six!.connected);
      assert.notEqual(six!.shared, first!.shared, 'IPv6 shares the IPv4 unconnected socket');
      send(endpoints, six!, 'six');
      await until('the answer of ::1', () => heard.some((h) => h.address === '::1' && h.text === 're six'));
    }
  });

  test(`${io}: a daemon that answers from another address is heard once useShared() moved its address, and the connected socket still hears a late reply`, { skip: ioSkip(io) }, async (t) => {
    // The daemon is asked at 127.0.0.2 and answers from 127.0.0.3, as one on
    // a wildcard address may; with each reply from 127.0.0.3 it sends a marker
    // from the address asked, so the reply's fate is known once the marker is in.
    const daemon = await bound(t, '127.0.0.2');
    const port = daemon.address().port;
    const elsewhere = await bound(t, '127.0.0.3');
    const asked: dgram.RemoteInfo[] = [];
    daemon.on('message', (msg, from) => {
      asked.push(from);
      const text = msg.toString('latin1');
      elsewhere.send(`elsewhere ${text}`, from.port, from.address, () => daemon.send(`marker ${text}`, from.port, from.address));
    });
    const { endpoints, heard, until } = pool(t, port, io);
    const [endpoint] = await endpointsOf(endpoints, '127.0.0.2');
    assert.ok(endpoint!.connected);
    const connectedPort = endpoint!.socket.port;
    send(endpoints, endpoint!, 'first');
    await until('the marker from the address asked', () => heard.some((h) => h.text === 'marker first'));
    assert.deepEqual(heard.map((h) => h.text), ['marker first'], 'the connected socket heard another address');

    endpoints.useShared(endpoint!);
    send(endpoints, endpoint!, 'second');
    await until('the answer from 127.0.0.3', () => heard.some((h) => h.text === 'elsewhere second'));
    assert.equal(heard.find((h) => h.text === 'elsewhere second')!.address, '127.0.0.3');
    assert.equal(asked[1]!.port, endpoint!.shared.port, 'the second try did not go from the unconnected socket');
    assert.notEqual(asked[1]!.port, connectedPort);
    assert.equal(endpoint!.connected, false);
    assert.equal(endpoint!.socket, endpoint!.shared);

    // A reply to the first try, late: the connected socket is still open.
    daemon.send('late first', asked[0]!.port, asked[0]!.address);
    await until('the late reply on the connected socket', () => heard.some((h) => h.text === 'late first'));
    endpoints.useShared(endpoint!);
    assert.equal(endpoint!.socket, endpoint!.shared, 'useShared() twice');
  });

  test(`${io}: a connected socket reports its host's ICMP port unreachable (a closed port on 127.0.0.1)`, { skip: ioSkip(io) }, async (t) => {
    const port = await freePort('127.0.0.1');
    const { endpoints, refused, until } = pool(t, port, io);
    const [endpoint] = await endpointsOf(endpoints, '127.0.0.1');
    assert.ok(endpoint!.connected);
    send(endpoints, endpoint!, 'anyone?');
    await until('the refusal', () => refused.length > 0);
    assert.equal(refused[0], endpoint, 'another endpoint was refused');
  });
}

/** The inodes of this process's UDP sockets that are connected (state 01 in /proc/net/udp and udp6). */
function connectedUdpSockets(): number {
  const inodes = new Set<string>();
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      const inode = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/self/fd/${fd}`))?.[1];
      if (inode !== undefined) inodes.add(inode);
    } catch {
      // closed meanwhile (the directory's own fd)
    }
  }
  let connected = 0;
  for (const table of ['/proc/net/udp', '/proc/net/udp6']) {
    let text: string;
    try {
      text = readFileSync(table, 'latin1');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
      const fields = line.trim().split(/\s+/);
      if (fields.length > 9 && fields[3] === '01' && inodes.has(fields[9]!)) connected++;
    }
  }
  return connected;
}

/** This process's RLIMIT_NOFILE, as /proc/self/limits says it. */
function nofile(): { soft: string; hard: string } {
  const line = readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith('Max open files '))!;
  const [soft, hard] = line.slice('Max open files '.length).trim().split(/\s+/);
  return { soft: soft!, hard: hard! };
}

const prlimit = (soft: string, hard: string) => execFileSync('prlimit', ['--pid', String(process.pid), `--nofile=${soft}:${hard}`], { stdio: 'ignore' });

test('past the descriptor budget, addresses share the unconnected socket from the start: no more connected sockets than it allows, and their answers still heard', async (t) => {
  try {
    execFileSync('prlimit', ['--version'], { stdio: 'ignore' });
  } catch {
    t.skip('no prlimit(1) here: the soft limit on open files cannot be lowered in-process');
    return;
  }
  const MANY = 70;
  const addresses = Array.from({ length: MANY }, (_, i) => `127.0.1.${i + 1}`);
  // The daemon answers at the last address, which is past the budget.
  const daemon = await echo(t, addresses[MANY - 1]!);
  const port = daemon.address().port;
  const { endpoints, heard, until } = pool(t, port);
  const before = connectedUdpSockets();
  // The unconnected socket, open before the budget is counted.
  const [first] = await endpointsOf(endpoints, '127.0.0.1');
  assert.ok(first!.connected);

  // The budget is the soft limit less the descriptors open and a reserve of
  // 64: a soft limit of open + 64 + ALLOWED leaves ALLOWED for sockets.
  const ALLOWED = 3;
  const limit = nofile();
  // After the pool's sockets are closed (the after hooks run in order), where descriptors are to be had.
  t.after(() => prlimit(limit.soft, limit.hard));
  const open = readdirSync('/proc/self/fd').length;
  prlimit(String(open + 64 + ALLOWED), limit.hard);
  assert.equal(Number(nofile().soft), open + 64 + ALLOWED, 'prlimit did not lower the soft limit');

  // Asked all at once: more than 64 addresses, so the limit is read at once.
  const all = (await Promise.all(addresses.map((address) => endpointsOf(endpoints, address)))).flat();
  assert.equal(all.length, MANY);
  const connected = all.filter((e) => e.connected);
  // Before the limit is raised again, which takes descriptors that sockets past the budget would have taken.
  assert.ok(connected.length <= ALLOWED, `${connected.length} connected sockets past a budget of ${ALLOWED}`);
  prlimit(limit.soft, limit.hard);
  assert.ok(connected.length > 0, 'no connected socket at all within the budget');
  for (const endpoint of all.filter((e) => !e.connected)) assert.equal(endpoint.socket, endpoint.shared, `${endpoint.address} is asked from no socket`);
  assert.equal(connectedUdpSockets() - before, 1 + connected.length, 'the kernel counts other connected sockets');
  t.diagnostic(`${connected.length} of ${MANY} addresses connected past a budget of ${ALLOWED}`);

  const last = all.find((e) => e.address === addresses[MANY - 1])!;
  assert.equal(last.connected, false);
  send(endpoints, last, 'past the budget');
  await until('the answer on the unconnected socket', () => heard.some((h) => h.text === 're past the budget' && h.address === last.address));
});

test('a host name is looked up once per client; a failed look-up is not kept, and the next question looks again', async (t) => {
  const daemon = await echo(t, '127.0.0.1');
  const port = daemon.address().port;
  // A resolver that fails (as getaddrinfo does) until told otherwise, then
  // finds 127.0.0.1: no real name fails and then resolves on cue.
  let failing = true;
  const looked: string[] = [];
  t.mock.method(dns, 'lookup', (host: string, _options: unknown, callback: (err: NodeJS.ErrnoException | null, found: dns.LookupAddress[]) => void) => {
    looked.push(host);
    const err: NodeJS.ErrnoException = Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND', syscall: 'getaddrinfo' });
    setImmediate(() => (failing ? callback(err, []) : callback(null, [{ address: '127.0.0.1', family: 4 }])));
  });
  const { endpoints, heard, until } = pool(t, port);
  const name = 'daemon.example.invalid';

  // Two questions while the look-up fails share it, and its failure.
  const [one, two] = await Promise.all([endpoints.endpointsFor(name), endpoints.endpointsFor(name)]);
  const unresolvable: Failure = { kind: 'unresolvable', host: name, why: 'ENOTFOUND' };
  assert.deepEqual(one, unresolvable);
  assert.deepEqual(two, unresolvable);
  assert.deepEqual(looked, [name]);

  // The next question looks again, and fails again while the name does not resolve.
  assert.deepEqual(await endpoints.endpointsFor(name), unresolvable);
  assert.equal(looked.length, 2, 'a failed look-up was remembered');

  failing = false;
  const found = await endpointsOf(endpoints, name);
  assert.equal(looked.length, 3, 'a failed look-up was remembered');
  assert.deepEqual(found.map((e) => e.address), ['127.0.0.1']);
  // Found: kept for the client's life, the same endpoints.
  assert.equal(await endpoints.endpointsFor(name), found);
  failing = true;
  assert.equal(await endpoints.endpointsFor(name), found);
  assert.equal(looked.length, 3, 'a name found was looked up again');
  send(endpoints, found[0]!, 'by name');
  await until('the answer to the name', () => heard.some((h) => h.text === 're by name'));

  // Once per client: another client looks for itself.
  failing = false;
  const { endpoints: another } = pool(t, port);
  await endpointsOf(another, name);
  assert.equal(looked.length, 4);
});

test('each daemon address has its own send pace, whatever name it was asked by', async (t) => {
  const port = await freePort('127.0.0.1');
  const { endpoints } = pool(t, port);
  const [plain] = await endpointsOf(endpoints, '127.0.0.1');
  // An IPv4-mapped address is asked over IPv4, as the address it is: one endpoint.
  const [mapped] = await endpointsOf(endpoints, '::ffff:127.0.0.1');
  const [other] = await endpointsOf(endpoints, '127.0.0.2');
  assert.equal(mapped, plain, 'one address, two endpoints');
  assert.notEqual(other!.pace, plain!.pace, 'two addresses share a pace');
  const now = monotonicMs();
  assert.equal(plain!.pace.waitMs(now), 0);
  // A burst spent at one address...
  plain!.pace.take(256);
  assert.ok(plain!.pace.waitMs(now) > 0, 'a spent burst needs no wait');
  // ... holds back neither another address nor its own next turn for long.
  assert.equal(other!.pace.waitMs(now), 0, 'another address waits for the one that spent its burst');
  assert.ok(plain!.pace.waitMs(now) < 1000, 'one token takes a second or more');
});
