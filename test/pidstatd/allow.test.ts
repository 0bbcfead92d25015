import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { parseAllow } from '../../src/daemon/allow.js';
import { startServer, type Server } from '../../src/daemon/server.js';
import { stopCounters } from '../support/fuzzer.js';
import { ask, askUntil, client, freePort, hasIPv6Loopback, ioSkip, runBin, startDaemon, TRANSPORTS, type Daemon } from '../support/helpers.js';

/**
 * Every test of pidstatd's --allow (pidstatd(8)), in one place: a list with
 * no range is a usage error, never "everyone"; clients inside a listed range
 * are answered and the rest dropped and counted as denied, ranges given
 * comma-separated or in repeated options; a range matches clients of its own
 * address family only, on a dual-stack socket as on an IPv4 one (an IPv4
 * client arriving as ::ffff:a.b.c.d is no IPv6 client), on both transports;
 * and the library's `allow` option (startServer, parseAllow). Real bins and
 * the library, loopback only (127.0.0.1-2 and ::1), ephemeral ports; every
 * process is stopped by its pid.
 */

describe('an --allow list with no range', () => {
  for (const list of ['', ',', ',,']) {
    test(`--allow '${list}' is a usage error (exit 64), never "everyone"`, { timeout: 20_000 }, async () => {
      const port = await freePort();
      const result = await runBin('pidstatd', ['--foreground', '--port', String(port), '--bind', '127.0.0.1', '--allow', list], { timeoutMs: 5000 });
      assert.deepEqual({ code: result.code, signal: result.signal }, { code: 64, signal: null }, `stderr: ${result.stderr}`);
      const lines = result.stderr.trim().split('\n');
      assert.equal(lines.length, 1, `one line: ${result.stderr}`);
      assert.match(lines[0]!, /--allow needs at least one CIDR range/);
      assert.match(lines[0]!, /--help/);
      assert.equal(await ask(port, 'PIDR 1 a 3', { waitMs: 200 }), undefined, 'nothing serves');
    });
  }
});

// ---------------------------------------------------------------------------

describe('--allow', () => {
  let inside: Daemon;
  let outside: Daemon;
  before(async () => {
    // Ranges come comma-separated, or in repeated options: the last range counts too.
    // Loopback in the first --allow: each one given counts, not only the last.
    inside = await startDaemon(['--bind', '127.0.0.1', '--allow', '127.0.0.0/24', '--allow', 'fd00::/8,10.0.0.0/8']);
    outside = await startDaemon(['--bind', '127.0.0.1', '--allow', '10.0.0.0/8,fd00::/8', '--debug']);
  });
  after(async () => {
    await inside?.stop();
    await outside?.stop();
  });
  test('a client inside a listed range is answered', async () => {
    assert.equal(await ask(inside.port, 'PIDR 1 h 3'), 'EXIS 1 1 h');
  });
  test('a client outside every range gets nothing, and the drop is logged', async () => {
    assert.equal(await ask(outside.port, 'PIDR 1 h 3', { waitMs: 300 }), undefined);
    assert.match(outside.log(), /not allowed/);
  });
});

// ---------------------------------------------------------------------------

describe('--allow by address family and prefix', () => {
  interface Case {
    allow: string;
    bind?: string;
    /** Answered or not, for clients from 127.0.0.1, 127.0.0.2 and ::1. */
    v4one: boolean;
    v4two: boolean;
    v6: boolean;
  }
  const cases: Case[] = [
    { allow: '127.0.0.1/32', v4one: true, v4two: false, v6: false },
    { allow: '::1/128', v4one: false, v4two: false, v6: true },
    { allow: '::ffff:127.0.0.0/104', v4one: true, v4two: true, v6: false },
    { allow: '127.0.0.0/31', v4one: true, v4two: false, v6: false },
    { allow: '0.0.0.0/0', v4one: true, v4two: true, v6: false },
    // A range matches clients of its own family only: on a dual-stack socket an IPv4
    // client (which the kernel writes ::ffff:127.0.0.1) is no IPv6 client.
    { allow: '::/0', v4one: false, v4two: false, v6: true },
    { allow: '0.0.0.0/0,::/0', v4one: true, v4two: true, v6: true },
    { allow: '127.0.0.2,::1', v4one: false, v4two: true, v6: true },
    { allow: '::ffff:127.0.0.1', v4one: true, v4two: false, v6: false },
    { allow: '10.0.0.0/8,fd00::/8', v4one: false, v4two: false, v6: false },
    // The socket's family does not change who is let in.
    { allow: '::ffff:127.0.0.0/104', bind: '0.0.0.0', v4one: true, v4two: true, v6: false },
    { allow: '::/0', bind: '0.0.0.0', v4one: false, v4two: false, v6: false },
    { allow: '::1/128', bind: '0.0.0.0', v4one: false, v4two: false, v6: false },
  ];
  let ipv6 = false;
  before(async () => {
    ipv6 = await hasIPv6Loopback();
  });

  for (const c of cases) {
    const where = c.bind ?? ':: (dual-stack)';
    const expect = `127.0.0.1 ${c.v4one ? 'yes' : 'no'}, 127.0.0.2 ${c.v4two ? 'yes' : 'no'}, ::1 ${c.v6 ? 'yes' : 'no'}`;
    test(`--allow ${c.allow} on ${where}: ${expect}`, { timeout: 20_000 }, async (t) => {
      if (c.bind === undefined && !ipv6) return t.skip('this host has no ::1, so no dual-stack socket to test');
      const daemon = await startDaemon(['--allow', c.allow, ...(c.bind ? ['--bind', c.bind] : [])]);
      t.after(() => daemon.stop());
      assert.match(daemon.log(), c.bind ? new RegExp(`listening on ${c.bind.replace(/\./g, '\\.')}:`) : /listening on \[::\]:/);
      const probes: { name: string; bind: string; to: string; want: boolean }[] = [
        { name: '127.0.0.1', bind: '127.0.0.1', to: '127.0.0.1', want: c.v4one },
        { name: '127.0.0.2', bind: '127.0.0.2', to: '127.0.0.1', want: c.v4two },
      ];
      if (ipv6 && c.bind === undefined) probes.push({ name: '::1', bind: '::1', to: '::1', want: c.v6 });
      else if (!ipv6) t.diagnostic('no ::1 here: the IPv6 client is skipped');
      let refused = 0;
      const outcome = await Promise.all(
        probes.map(async (p) => {
          const sock = await client(p.bind);
          try {
            const host = `allow-${p.name.replace(/:/g, '_')}`;
            // A refused client sends once (the stop line must count it as denied, not lost);
            // an allowed one sends again if its datagram is lost.
            const r = await askUntil(sock, `PIDR 1 ${host} 3\n`, host, daemon.port, p.to, p.want ? 3 : 1, p.want ? 500 : 400);
            if (!p.want) refused += r.tries;
            return { ...p, got: r.reply };
          } finally {
            await sock.close();
          }
        }),
      );
      assert.equal(await daemon.stop(), 0);
      const counters = stopCounters(daemon.log());
      for (const o of outcome) {
        const host = `allow-${o.name.replace(/:/g, '_')}`;
        assert.equal(o.got, o.want ? `EXIS 1 1 ${host}` : undefined, `client ${o.name} -> ${o.want ? 'answered' : 'refused'}`);
      }
      assert.equal(counters?.denied, refused, `the refused datagrams are counted as denied: ${daemon.log()}`);
    });
  }
});

// ---------------------------------------------------------------------------

describe('--allow: a range matches clients of its own family only (dual-stack socket)', { concurrency: true }, () => {
  test('an empty list is an error, never "everyone"', async () => {
    assert.throws(() => parseAllow([]), (err: Error) => err instanceof RangeError && /empty/.test(err.message));
    await assert.rejects(startServer({ port: 0, allow: [], hostname: 'me' }), /empty/);
  });

  const cases = [
    { allow: ['0.0.0.0/0'], v4: true, v6: false },
    { allow: ['::/0'], v4: false, v6: true },
    { allow: ['::ffff:127.0.0.0/104'], v4: true, v6: false },
    { allow: ['127.0.0.1', '::1'], v4: true, v6: true },
  ];
  for (const io of TRANSPORTS) {
    test(`${io}: ${cases.map((c) => c.allow.join(',')).join('; ')}`, async (t) => {
      if (ioSkip(io)) return t.skip(ioSkip(io) as string);
      if (!(await hasIPv6Loopback())) return t.skip('this host has no ::1: no dual-stack socket to test');
      await Promise.all(
        cases.map(async (c) => {
          const server = await startServer({ port: 0, allow: c.allow, hostname: 'me', io });
          try {
            const { port } = server.address();
            const [v4, v6] = await Promise.all([
              ask(port, 'PIDR 1 four 3', { address: '127.0.0.1', waitMs: c.v4 ? 1000 : 300 }),
              ask(port, 'PIDR 1 six 3', { address: '::1', waitMs: c.v6 ? 1000 : 300 }),
            ]);
            assert.equal(v4, c.v4 ? 'EXIS 1 1 four' : undefined, `--allow ${c.allow.join(',')}: 127.0.0.1`);
            assert.equal(v6, c.v6 ? 'EXIS 1 1 six' : undefined, `--allow ${c.allow.join(',')}: ::1`);
            assert.equal(server.stats.denied, Number(!c.v4) + Number(!c.v6));
          } finally {
            await server.close();
          }
        }),
      );
    });
  }
});

// ---------------------------------------------------------------------------

describe('--allow on a dual-stack socket (library)', () => {
  let server: Server;
  before(async () => {
    server = await startServer({ port: 0, allow: ['127.0.0.1/32'], hostname: 'me' });
  });
  after(() => server?.close());
  test('an IPv4 client arriving as ::ffff:127.0.0.1 matches an IPv4 range', async () => {
    assert.equal(await ask(server.address().port, 'PIDR 1 h 3'), 'EXIS 1 1 h');
  });
  test('::1 is outside 127.0.0.1/32', async (t) => {
    if (!(await hasIPv6Loopback())) return t.skip('this host has no ::1');
    assert.equal(await ask(server.address().port, 'PIDR 1 h 3', { address: '::1', waitMs: 300 }), undefined);
    assert.equal(server.stats.denied, 1);
  });
});
