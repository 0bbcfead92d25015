import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import dgram from 'node:dgram';
import { after, before, describe, test } from 'node:test';
import { startServer, type Server } from '../../src/daemon/server.js';
import { ask, binCommand, binEnv, type Daemon, exchange, hasIPv6Loopback, type Io, ioSkip, IS_ROOT, run, sleep, startDaemon, TRANSPORTS, waitFor } from '../support/helpers.js';
import { HAND_OVER_AS_LISTEN_FD } from '../support/detached.js';
import { createHostPair, inNetns, netnsUnavailable, runIn, type HostPair } from '../support/netns.js';

/**
 * The daemon's datagram path against misuse (doc/protocol.md, pidstatd(8)): no
 * reply aimed at a service port, nor to a request sent to a broadcast or
 * multicast address; `--bind ::` dual-stack; replies the kernel refuses
 * counted and logged once per interval with a count; oversized datagrams
 * counted apart; an inherited descriptor that is no bound UDP socket
 * refused. Each runs on both transports, the addon's batches and Node's
 * dgram, which answer alike except where dgram cannot tell (a datagram's
 * destination address).
 */

/** A UDP socket bound to address:port, or the bind's error. */
async function bound(address: string, port: number): Promise<dgram.Socket> {
  const socket = dgram.createSocket(address.includes(':') ? 'udp6' : 'udp4');
  socket.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(port, address, () => {
      socket.off('error', reject);
      resolve();
    });
  });
  return socket;
}

/** Sends `text` from socket to address:port; the replies it hears within waitMs. */
async function exchangeFrom(socket: dgram.Socket, text: string, port: number, address: string, waitMs: number): Promise<string[]> {
  const replies: string[] = [];
  const listener = (msg: Buffer, from: dgram.RemoteInfo) => from.port === port && replies.push(msg.toString('latin1'));
  socket.on('message', listener);
  socket.send(text, port, address);
  await sleep(waitMs);
  socket.off('message', listener);
  return replies;
}

// ---------------------------------------------------------------------------

describe('reflection: no reply to a source port below 1024', () => {
  const SERVICE_PORTS = [7, 19, 53, 123, 161, 1023];
  for (const io of TRANSPORTS) {
    test(`${io}: requests from ports ${SERVICE_PORTS.join(', ')} get nothing and are counted as reflected; from 1024 one is answered`, async (t) => {
      if (ioSkip(io)) return t.skip(ioSkip(io) as string);
      if (!IS_ROOT) return t.skip(`binding ports below 1024 needs root (uid ${process.getuid?.()})`);
      const server = await startServer({ port: 0, hostname: 'me', io });
      const sockets: dgram.Socket[] = [];
      t.after(async () => {
        for (const socket of sockets) socket.close();
        await server.close();
      });
      const { port } = server.address();
      const sources: { address: string; port: number }[] = SERVICE_PORTS.map((p) => ({ address: '127.0.0.1', port: p }));
      if (await hasIPv6Loopback()) sources.push({ address: '::1', port: 53 });
      const busy: string[] = [];
      const outcomes = await Promise.all(
        sources.map(async (source) => {
          let socket: dgram.Socket;
          try {
            socket = await bound(source.address, source.port);
          } catch (err) {
            busy.push(`${source.address} port ${source.port}: ${(err as Error).message}`);
            return undefined;
          }
          sockets.push(socket);
          return exchangeFrom(socket, `PIDR 1 from${source.port} 3\n`, port, source.address, 200);
        }),
      );
      if (busy.length > 0) t.diagnostic(`not tested, the port is taken here: ${busy.join('; ')}`);
      const tried = outcomes.filter((o) => o !== undefined);
      assert.ok(tried.length >= 4, `at least 4 service ports could be bound: ${busy.join('; ')}`);
      outcomes.forEach((replies, i) => replies && assert.deepEqual(replies, [], `no reply to ${sources[i]!.address} port ${sources[i]!.port}`));

      // The edge: 1024 is no service's port (else any client's will do).
      let client: dgram.Socket;
      try {
        client = await bound('127.0.0.1', 1024);
      } catch {
        client = await bound('127.0.0.1', 0);
      }
      sockets.push(client);
      const clientPort = client.address().port;
      assert.deepEqual(await exchangeFrom(client, 'PIDR 1 edge 3\n', port, '127.0.0.1', 200), ['EXIS 1 1 edge'], `port ${clientPort} is answered`);
      assert.equal(server.stats.reflected, tried.length, JSON.stringify(server.stats));
      assert.equal(server.stats.received, tried.length + 1);
      assert.equal(server.stats.answered, 1);
    });
  }
});

// ---------------------------------------------------------------------------

/**
 * A client for a network namespace: `node -e SENDER SPEC` sends each request
 * (`#` in its text becomes its number), `burst` at a time with `pauseMs`
 * between, then prints the replies it heard within `waitMs` as JSON; with
 * `awaitHosts`, `waitMs` counts from the replies whose host fields those are
 * (waited for up to `awaitMs`): a reply that must come is waited for as
 * long as a busy machine needs, a window for others stays short. With
 * `window`, it is a polite client instead: at most `window` requests
 * unanswered at a time, each sent again (counted in `resends`) every
 * `retryMs` until answered, ending once all are or after `waitMs`; so its
 * own receive buffer never holds more than a window, however late a busy
 * machine lets it read.
 */
const SENDER = `
const dgram = require('node:dgram');
const spec = JSON.parse(process.argv[1]);
const socket = dgram.createSocket(spec.bind.includes(':') ? 'udp6' : 'udp4');
const replies = [];
let failed = 0;
let resends = 0;
const done = () => {
  console.log(JSON.stringify({ replies, failed, resends }));
  socket.close();
  process.exit(0);
};
const send = (text, to) => socket.send(text, spec.port, to, (err) => err && failed++);
const texts = spec.requests.flatMap((request) => Array.from({ length: request.repeat || 1 }, (_, i) => [request.text.replace('#', String(i)), request.to]));
socket.on('error', () => failed++);
socket.bind(0, spec.bind, async () => {
  socket.setBroadcast(true);
  if (spec.multicastInterface) socket.setMulticastInterface(spec.multicastInterface);
  if (spec.window) {
    const waiting = new Map();
    let next = 0;
    const fill = () => {
      while (waiting.size < spec.window && next < texts.length) {
        const [text, to] = texts[next++];
        waiting.set(text.split(' ')[2], [text, to]);
        send(text, to);
      }
      if (waiting.size === 0) done();
    };
    socket.on('message', (msg) => {
      const reply = msg.toString('latin1');
      if (!waiting.delete(reply.split(' ')[3])) return;
      replies.push(reply);
      fill();
    });
    setInterval(() => {
      for (const [text, to] of waiting.values()) {
        resends++;
        send(text, to);
      }
    }, spec.retryMs).unref();
    setTimeout(done, spec.waitMs);
    fill();
    return;
  }
  const awaited = new Set(spec.awaitHosts || []);
  socket.on('message', (msg) => {
    const reply = msg.toString('latin1');
    replies.push(reply);
    awaited.delete(reply.split(' ')[3]);
  });
  let n = 0;
  for (const [text, to] of texts) {
    send(text, to);
    if (++n % (spec.burst || 1000000) === 0) await new Promise((resolve) => setTimeout(resolve, spec.pauseMs));
  }
  const deadline = Date.now() + (spec.awaitMs || 0);
  while (awaited.size > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
  setTimeout(done, spec.waitMs);
});
`;

interface SenderSpec {
  bind: string;
  port: number;
  requests: { to: string; text: string; repeat?: number }[];
  multicastInterface?: string;
  burst?: number;
  pauseMs?: number;
  /** A polite client: this many unanswered at most, each sent again every `retryMs`. */
  window?: number;
  retryMs?: number;
  waitMs: number;
  /** Host fields of replies waited for, up to `awaitMs`, before the `waitMs` of the others begins. */
  awaitHosts?: string[];
  awaitMs?: number;
}

/** Runs SENDER inside a namespace; resolves with what it heard. */
async function sendFrom(namespace: string, spec: SenderSpec): Promise<{ replies: string[]; failed: number; resends: number }> {
  const result = await runIn(namespace, process.execPath, ['-e', SENDER, JSON.stringify(spec)], { timeoutMs: 60_000 });
  assert.equal(result.code, 0, `the sender in ${namespace}: ${result.stderr}`);
  return JSON.parse(result.stdout) as { replies: string[]; failed: number; resends: number };
}

/** The host fields of replies. */
const hostsOf = (replies: string[]) => replies.map((reply) => reply.split(' ')[3]!).sort();

/** Starts the daemon inside a namespace (default bind unless args say). */
function daemonIn(namespace: string, io: Io, args: string[]): Promise<Daemon> {
  return startDaemon(args, { PIDSTAT_IO: io }, (command, rest) => inNetns(namespace, command, rest));
}

describe('reflection: no reply to a request sent to a broadcast or multicast address', { concurrency: true }, () => {
  const why = netnsUnavailable();
  let pair: HostPair;
  let subnet: string;
  before(async () => {
    if (why) return;
    pair = await createHostPair();
    subnet = pair.b.ipv4.replace(/\.[0-9]+$/, '');
  });
  after(() => pair?.destroy());

  for (const io of TRANSPORTS) {
    // On the default dual-stack socket, the kernel hands over IPv4 broadcasts
    // and IPv6 multicasts, but not IPv4 multicasts (an IPv6 socket takes no
    // IPv4 group it has not joined): those are asked of an IPv4 socket.
    for (const bind of ['::', '0.0.0.0'] as const) {
      test(`${io}, bound to ${bind}: a unicast request is answered, a ${bind === '::' ? 'directed broadcast and an ff02::1' : 'directed broadcast, a 255.255.255.255 and a 224.0.0.1'} one ${io === 'batch' ? 'is not' : 'cannot be told apart'}`, { timeout: 30_000 }, async (t) => {
        if (why) return t.skip(why);
        if (ioSkip(io)) return t.skip(ioSkip(io) as string);
        const daemon = await daemonIn(pair.b.name, io, bind === '::' ? ['--debug'] : ['--bind', bind, '--debug']);
        t.after(() => daemon.stop());
        const v4 = sendFrom(pair.a.name, {
          bind: pair.a.ipv4,
          port: daemon.port,
          multicastInterface: pair.a.ipv4,
          requests: [
            { to: pair.b.ipv4, text: 'PIDR 1 unicast 3\n' },
            { to: `${subnet}.255`, text: 'PIDR 1 broadcast 3\n' },
            ...(bind === '0.0.0.0' ? [{ to: '255.255.255.255', text: 'PIDR 1 all-ones 3\n' }, { to: '224.0.0.1', text: 'PIDR 1 all-hosts 3\n' }] : []),
          ],
          awaitHosts: ['unicast'],
          awaitMs: 10_000,
          waitMs: 400,
        });
        const withV6 = bind === '::' && pair.b.ipv6 !== undefined;
        const v6 = withV6
          ? sendFrom(pair.a.name, {
              bind: '::',
              port: daemon.port,
              requests: [
                { to: pair.b.ipv6!, text: 'PIDR 1 unicast6 3\n' },
                { to: `ff02::1%${pair.a.ifname}`, text: 'PIDR 1 all-nodes6 3\n' },
              ],
              awaitHosts: ['unicast6'],
              awaitMs: 10_000,
              waitMs: 500,
            })
          : { replies: [], failed: 0 };
        if (bind === '::' && !withV6) t.diagnostic(`IPv6 not tested: ${pair.ipv6Missing}`);
        const [four, six] = await Promise.all([v4, v6]);
        assert.equal(four.failed + six.failed, 0, 'every request could be sent');
        const unicast = withV6 ? ['unicast', 'unicast6'] : ['unicast'];
        const group = bind === '::' ? ['broadcast', ...(withV6 ? ['all-nodes6'] : [])] : ['broadcast', 'all-ones', 'all-hosts'];
        await waitFor(() => [...unicast, ...group].every((tag) => daemon.log().includes(` ${tag} `)), 10_000);
        const heard = hostsOf([...four.replies, ...six.replies]);
        const fate = (tag: string) => daemon.log().split('\n').find((line) => line.includes(`"PIDR 1 ${tag} 3\\n"`)) ?? `(no line for ${tag})`;
        for (const tag of group) t.diagnostic(fate(tag));
        if (io === 'batch') {
          assert.deepEqual(heard, [...unicast].sort(), 'only the unicast requests are answered');
          for (const tag of group) assert.match(fate(tag), /dropped: sent to a broadcast or multicast address/);
        } else {
          for (const tag of unicast) assert.ok(heard.includes(tag), `${tag} is answered: ${heard.join(' ')}`);
          t.diagnostic(`Node's dgram cannot see a datagram's destination: answered ${heard.join(', ')}`);
        }
      });
    }
  }
});

// ---------------------------------------------------------------------------

describe('--bind :: is dual-stack, as the default', { concurrency: true }, () => {
  for (const io of TRANSPORTS) {
    for (const bind of ['::', '::0']) {
      test(`${io}: --bind ${bind} answers an IPv4 client and an IPv6 one`, { timeout: 20_000 }, async (t) => {
        if (ioSkip(io)) return t.skip(ioSkip(io) as string);
        if (!(await hasIPv6Loopback())) return t.skip('this host has no ::1');
        const daemon = await startDaemon(['--bind', bind], { PIDSTAT_IO: io });
        t.after(() => daemon.stop());
        assert.match(daemon.log(), /listening on \[::\]:/);
        assert.equal(await ask(daemon.port, 'PIDR 1 four 3', { address: '127.0.0.1' }), 'EXIS 1 1 four');
        assert.equal(await ask(daemon.port, 'PIDR 1 six 3', { address: '::1' }), 'EXIS 1 1 six');
      });
    }
  }
});

// ---------------------------------------------------------------------------

/** Kernel drops on a UDP port's sockets inside a namespace (the last column of /proc/net/udp{,6}). */
function dropsIn(namespace: string, port: number): number {
  const hex = `:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  const out = spawnSync('ip', ['netns', 'exec', namespace, 'cat', '/proc/net/udp', '/proc/net/udp6'], { encoding: 'utf8' }).stdout ?? '';
  let drops = 0;
  for (const line of out.split('\n')) {
    const cols = line.trim().split(/\s+/);
    if (cols.length > 10 && cols[1]!.endsWith(hex)) drops += Number(cols.at(-1));
  }
  return drops;
}

describe('replies the kernel refuses to send', { concurrency: true }, () => {
  const why = netnsUnavailable();
  let pair: HostPair;
  before(async () => {
    if (why) return;
    pair = await createHostPair();
    // B can hear A but has no route back: each reply to A fails with EHOSTUNREACH.
    const route = spawnSync('ip', ['-n', pair.b.name, 'route', 'add', 'unreachable', `${pair.a.ipv4}/32`], { encoding: 'utf8' });
    assert.equal(route.status, 0, route.stderr);
  });
  after(() => pair?.destroy());

  const FAILING = 3000;
  const LOCAL = 300;
  for (const io of TRANSPORTS) {
    test(`${io}: ${FAILING} refused replies are counted and logged twice (at once, and at stop), with the count; others' replies still go`, { timeout: 60_000 }, async (t) => {
      if (why) return t.skip(why);
      if (ioSkip(io)) return t.skip(ioSkip(io) as string);
      const daemon = await daemonIn(pair.b.name, io, ['--rate', '0']);
      t.after(() => daemon.stop());
      const reports = () => [...daemon.log().matchAll(/replies refused by the kernel: ([0-9]+) since the last report, the last with send EHOSTUNREACH/g)];
      // The first failure is told at once.
      assert.deepEqual((await sendFrom(pair.a.name, { bind: pair.a.ipv4, port: daemon.port, requests: [{ to: pair.b.ipv4, text: 'PIDR 1 first 3\n' }], waitMs: 200 })).replies, []);
      assert.ok(await waitFor(() => reports().length === 1, 10_000), `one report at the first failure: ${daemon.log()}`);
      assert.equal(reports()[0]![1], '1');
      // Then a flood of them, among replies that go (within one batch, for the addon).
      const [failing, local] = await Promise.all([
        sendFrom(pair.a.name, {
          bind: pair.a.ipv4, port: daemon.port, requests: [{ to: pair.b.ipv4, text: 'PIDR 1 fail# 3\n', repeat: FAILING }], burst: 100, pauseMs: 5, waitMs: 300,
        }),
        sendFrom(pair.b.name, {
          bind: '127.0.0.1', port: daemon.port, requests: [{ to: '127.0.0.1', text: 'PIDR 1 local# 3\n', repeat: LOCAL }], window: 10, retryMs: 1000, waitMs: 30_000,
        }),
      ]);
      assert.deepEqual(failing.replies, [], 'A hears nothing');
      assert.equal(new Set(local.replies).size, LOCAL, `every local request is answered: ${local.replies.length} replies`);
      const drops = dropsIn(pair.b.name, daemon.port);
      assert.equal(reports().length, 1, `no more reports within the interval: ${daemon.log()}`);
      assert.equal(await daemon.stop(), 0);
      const told = reports().map((match) => Number(match[1]));
      t.diagnostic(`reports: ${told.join(', ')}; kernel drops ${drops}`);
      assert.equal(told.length, 2, `a second report at stop: ${daemon.log()}`);
      // A local request the kernel dropped at the daemon's socket was sent again, and is in the drops too:
      // exact when the polite client never had to send again.
      const counted = told[0]! + told[1]! + drops;
      assert.ok(counted >= 1 + FAILING && counted <= 1 + FAILING + local.resends, `every refused reply is counted: ${counted} of ${1 + FAILING} (+ up to ${local.resends} local drops)`);
      const socketLines = daemon.log().split('\n').filter((line) => /socket error/.test(line));
      assert.equal(socketLines.length, 2, `stderr has two such lines: ${socketLines.join('\n')}`);
    });
  }
});

// ---------------------------------------------------------------------------

describe('oversized datagrams are counted apart from malformed ones', { concurrency: true }, () => {
  for (const io of TRANSPORTS) {
    test(`${io}: 1025 and 9000 bytes are oversized; junk within 1024 bytes is malformed`, async (t) => {
      if (ioSkip(io)) return t.skip(ioSkip(io) as string);
      const server: Server = await startServer({ port: 0, bind: '127.0.0.1', hostname: 'me', io });
      t.after(() => server.close());
      const { port } = server.address();
      for (const payload of [Buffer.alloc(1025, 0x41), Buffer.alloc(9000, 0x41), Buffer.from('hello'), Buffer.from(`PIDR 1 ${'h'.repeat(1015)}`)]) {
        assert.deepEqual(await exchange(port, payload, { waitMs: 20 }), []);
      }
      assert.equal(await ask(port, 'PIDR 1 after 3'), 'EXIS 1 1 after');
      assert.ok(await waitFor(() => server.stats.received === 5, 1000));
      assert.deepEqual(
        { oversized: server.stats.oversized, malformed: server.stats.malformed, answered: server.stats.answered },
        { oversized: 2, malformed: 2, answered: 1 },
      );
    });
  }
});

// ---------------------------------------------------------------------------

describe('an inherited descriptor that is no bound UDP socket is refused', { concurrency: true }, () => {
  // Puts a socket of the given kind on fd 3, says so in LISTEN_FDS/LISTEN_PID
  // and execs the daemon, which keeps the pid.
  const WRAPPER = [
    'import os, socket, sys',
    'kind = sys.argv[1]',
    's = socket.socket(socket.AF_INET, socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM)',
    'if kind == "tcp":',
    '    s.bind(("127.0.0.1", 0))',
    '    s.listen()',
    ...HAND_OVER_AS_LISTEN_FD,
  ].join('\n');
  const python = spawnSync('python3', ['-c', 'import socket'], { encoding: 'utf8' });

  for (const io of TRANSPORTS) {
    for (const kind of ['unbound', 'tcp'] as const) {
      const what = kind === 'unbound' ? 'an unbound UDP socket' : 'a listening TCP socket';
      test(`${io}: ${what} on fd 3: exit 1 with "cannot listen on inherited descriptor 3: not a bound UDP socket"`, { timeout: 20_000 }, async (t) => {
        if (ioSkip(io)) return t.skip(ioSkip(io) as string);
        if (python.error || python.status !== 0) return t.skip('no python3 to hand over a socket');
        const env = binEnv({ PIDSTAT_IO: io, LISTEN_FDS: undefined, LISTEN_PID: undefined });
        // Were the descriptor served, the daemon would run until this timeout kills it.
        const result = await run('python3', ['-c', WRAPPER, kind, ...binCommand('pidstatd', ['--foreground']).flat()], { env, timeoutMs: 5000 });
        // (Not as root, a warning about other users' processes comes first.)
        const lines = result.stderr.trim().split('\n').filter((line) => !/warning: not running as root/.test(line));
        assert.deepEqual({ code: result.code, signal: result.signal }, { code: 1, signal: null }, result.stderr);
        assert.equal(lines.length, 1, result.stderr);
        assert.match(lines[0]!, /cannot listen on inherited descriptor 3: not a bound UDP socket/);
      });
    }
  }
});
