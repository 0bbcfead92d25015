import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { after, before, describe, test } from 'node:test';
import { freePort, runBin, startDaemon, type Daemon, type RunResult } from '../support/helpers.js';
import { startRelay, type Relay } from '../support/relay.js';

/**
 * `pidstat ping` as a monitoring plugin (pidstat(1), ping; the Monitoring
 * Plugins guidelines): one line on stdout with performance data, the status
 * as the exit code, thresholds against a daemon the test slows down with a
 * relay that delays each datagram, and its usage errors as UNKNOWN on stdout.
 */

/** Each way, so an answer through the relay takes at least twice this. */
const DELAY_MS = 300;
/** No resend while the delayed answer is on its way, however loaded the machine. */
const PATIENT = ['--timeout', '5s', '--tries', '1'] as const;

/** `PIDSTATD STATUS - S.SSS second response on WHERE|time=S.SSSSSSs;[W];[C];0.000000`, the guidelines' perfdata. */
const CHECK_LINE = /^PIDSTATD (OK|WARNING|CRITICAL) - ([0-9]+\.[0-9]{3}) second response on (\S+)\|time=([0-9]+\.[0-9]{6})s;([0-9]+\.[0-9]{6})?;([0-9]+\.[0-9]{6})?;0\.000000\n$/;

interface Check {
  status: string;
  seconds: number;
  where: string;
  perfSeconds: number;
  warning: string | undefined;
  critical: string | undefined;
}

function describeRun(r: RunResult): string {
  return `exit ${r.code}${r.signal ? ` (${r.signal})` : ''}\nstdout: ${JSON.stringify(r.stdout)}\nstderr: ${JSON.stringify(r.stderr)}`;
}

/** The check's line, read by CHECK_LINE; fails the test on any other form. */
function readCheck(r: RunResult): Check {
  const match = CHECK_LINE.exec(r.stdout);
  assert.ok(match, `not a check line with perfdata:\n${describeRun(r)}`);
  const [, status, seconds, where, perfSeconds, warning, critical] = match;
  const check = { status: status!, seconds: Number(seconds), where: where!, perfSeconds: Number(perfSeconds), warning, critical };
  // The text and the perfdata tell the same time, to the text's precision.
  assert.ok(Math.abs(check.seconds - check.perfSeconds) <= 0.0005 + 1e-9, `${check.seconds} s in the text, ${check.perfSeconds} s in the perfdata`);
  return check;
}

describe('pidstat ping: thresholds and performance data', () => {
  let daemon: Daemon;
  let relay: Relay;
  before(async () => {
    daemon = await startDaemon(['--bind', '127.0.0.1']);
    relay = await startRelay({ listen: '127.0.0.1', target: `127.0.0.1:${daemon.port}`, loss: 0, delayMs: DELAY_MS, seed: 1 });
  });
  after(async () => {
    await relay?.stop();
    await daemon?.stop();
  });

  const ping = (args: string[]) => runBin('pidstat', ['--port', String(relay.port), ...PATIENT, 'ping', ...args, '127.0.0.1']);

  test('straight to the daemon, no thresholds: OK, exit 0, empty warn and crit fields', async () => {
    const r = await runBin('pidstat', ['--port', String(daemon.port), 'ping', '127.0.0.1']);
    assert.equal(r.code, 0, describeRun(r));
    const check = readCheck(r);
    assert.equal(check.status, 'OK');
    assert.equal(check.where, `127.0.0.1:${daemon.port}`);
    assert.equal(check.warning, undefined);
    assert.equal(check.critical, undefined);
    assert.match(r.stdout, /\|time=[0-9.]+s;;;0\.000000\n$/);
  });

  test('slowed, under both thresholds: OK, exit 0, the thresholds in the perfdata', async () => {
    const r = await ping(['-w', '20', '-c', '30']);
    assert.equal(r.code, 0, describeRun(r));
    const check = readCheck(r);
    assert.equal(check.status, 'OK');
    assert.equal(check.where, `127.0.0.1:${relay.port}`);
    assert.ok(check.perfSeconds >= (2 * DELAY_MS) / 1000, `${check.perfSeconds} s through a relay that holds each datagram ${DELAY_MS} ms`);
    assert.equal(check.warning, '20.000000');
    assert.equal(check.critical, '30.000000');
  });

  test('slowed, over --warning: WARNING, exit 1', async () => {
    const r = await ping(['--warning', '0.2', '--critical', '30']);
    assert.equal(r.code, 1, describeRun(r));
    const check = readCheck(r);
    assert.equal(check.status, 'WARNING');
    assert.ok(check.perfSeconds > 0.2);
    assert.equal(check.warning, '0.200000');
    assert.equal(check.critical, '30.000000');
    assert.equal(r.stderr, '');
  });

  test('slowed, over --critical: CRITICAL, exit 2 (critical wins over warning)', async () => {
    const r = await ping(['-w', '0.2', '-c', '.4']);
    assert.equal(r.code, 2, describeRun(r));
    const check = readCheck(r);
    assert.equal(check.status, 'CRITICAL');
    assert.equal(check.warning, '0.200000');
    assert.equal(check.critical, '0.400000');
  });

  test('slowed, --critical alone: CRITICAL, exit 2, an empty warn field', async () => {
    const r = await ping(['-c', '0.1']);
    assert.equal(r.code, 2, describeRun(r));
    const check = readCheck(r);
    assert.equal(check.status, 'CRITICAL');
    assert.equal(check.warning, undefined);
    assert.equal(check.critical, '0.100000');
  });
});

describe('pidstat ping: the monitoring plugins\' options, and check_pidstatd\'s', () => {
  let daemon: Daemon;
  before(async () => {
    daemon = await startDaemon(['--bind', '127.0.0.1']);
  });
  after(async () => {
    await daemon?.stop();
  });

  test('-H HOST -p PORT -t SECONDS -w -c, and --hostname --port --pid, as a monitoring configuration writes them: OK', async () => {
    for (const args of [
      ['ping', '-H', '127.0.0.1', '-p', String(daemon.port), '-t', '10', '-w', '5', '-c', '9'],
      ['ping', '--hostname', '127.0.0.1', '--port', String(daemon.port), '--pid', String(process.pid)],
    ]) {
      const r = await runBin('pidstat', args);
      assert.equal(r.code, 0, describeRun(r));
      assert.match(r.stdout, new RegExp(`^PIDSTATD OK - \\d+\\.\\d{3} second response on 127\\.0\\.0\\.1:${daemon.port}\\|`), describeRun(r));
    }
  });

  test('-V prints the version, -v the datagrams, and ping --help its own options', async () => {
    const version = await runBin('pidstat', ['ping', '-V']);
    assert.equal(version.code, 0, describeRun(version));
    assert.match(version.stdout, /^pidstat \d+\.\d+\.\d+\n$/);
    const verbose = await runBin('pidstat', ['ping', '-v', '-H', '127.0.0.1', '-p', String(daemon.port)]);
    assert.equal(verbose.code, 0, describeRun(verbose));
    assert.match(verbose.stderr, /PIDR 1 127\.0\.0\.1\//, 'the question, on stderr');
    const help = await runBin('pidstat', ['ping', '--help']);
    assert.equal(help.code, 0, describeRun(help));
    for (const option of ['-H, --hostname', '-p, --port', '-t, --timeout', '-w, --warning', '-c, --critical', '--pid', '-v, --verbose', '-V, --version']) {
      assert.ok(help.stdout.includes(option), `${option} in ping --help: ${help.stdout}`);
    }
  });

  test('-t is the whole check: a daemon that never answers is CRITICAL within it, however many tries', async () => {
    // A port that takes every question and answers none (no ICMP to end a try early).
    const silent = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => silent.bind(0, '127.0.0.1', resolve));
    try {
      const began = performance.now();
      const r = await runBin('pidstat', ['ping', '-H', '127.0.0.1', '-p', String(silent.address().port), '-t', '1', '--tries', '10']);
      const ms = performance.now() - began;
      assert.equal(r.code, 2, describeRun(r));
      assert.match(r.stdout, /^PIDSTATD CRITICAL - No response/);
      // Ten tries of a second each, were -t the time of one try, would take ten.
      assert.ok(ms < 6000, `the check took ${Math.round(ms)} ms`);
    } finally {
      silent.close();
    }
  });

  test('-H and a HOST word both: UNKNOWN, exit 3', async () => {
    const r = await runBin('pidstat', ['ping', '-H', 'a', 'b']);
    assert.equal(r.code, 3, describeRun(r));
    assert.match(r.stdout, /^PIDSTATD UNKNOWN - ping takes one HOST: a \(-H\) or b, not both\n$/);
  });
});

describe('pidstat ping: what is not an answer', () => {
  test('no daemon listening: CRITICAL, exit 2, no perfdata', async () => {
    const port = await freePort();
    const r = await runBin('pidstat', ['--port', String(port), '--timeout', '400ms', '--tries', '2', 'ping', '-w', '1', '127.0.0.1']);
    assert.equal(r.code, 2, describeRun(r));
    assert.equal(r.stdout, `PIDSTATD CRITICAL - No response from pidstatd on 127.0.0.1:${port}\n`);
  });

  test('a name that does not resolve: CRITICAL, exit 2, with the reason', async () => {
    const port = await freePort();
    const r = await runBin('pidstat', ['--port', String(port), '--timeout', '200ms', '--tries', '1', 'ping', 'pidstat-ping-test.invalid'], { timeoutMs: 60_000 });
    assert.equal(r.code, 2, describeRun(r));
    assert.match(r.stdout, /^PIDSTATD CRITICAL - Cannot resolve pidstat-ping-test\.invalid: [A-Z_]+\n$/);
  });
});

describe('pidstat ping: usage errors are UNKNOWN on stdout, exit 3', () => {
  const cases: [string, string[], NodeJS.ProcessEnv, RegExp][] = [
    ['two hosts', ['ping', 'a', 'b'], {}, /ping takes one HOST, not 2/],
    ['an unknown option', ['ping', '--bogus'], {}, /bogus/],
    ['a warning that is no number', ['ping', '-w', 'soon', '127.0.0.1'], {}, /--warning must be a duration.*'soon'/],
    ['a negative critical', ['ping', '--critical=-1', '127.0.0.1'], {}, /--critical must be a duration.*'-1'/],
    ['a critical with an exponent', ['ping', '-c', '1e3', '127.0.0.1'], {}, /--critical must be a duration.*'1e3'/],
    ['a warning over the critical', ['ping', '-w', '2', '-c', '1', '127.0.0.1'], {}, /--warning 2 is over --critical 1/],
    ['a bad --tries', ['ping', '--tries', '0', '127.0.0.1'], {}, /--tries must be a whole number/],
    ['a bad PIDSTAT_PORT', ['ping', '127.0.0.1'], { PIDSTAT_PORT: 'http' }, /PIDSTAT_PORT must be a whole number/],
    ['a key file that is not there', ['ping', '--key-file', '/nonexistent/pidstat.keys', '127.0.0.1'], {}, /nonexistent/],
    ['an empty host', ['ping', ''], {}, /an empty host/],
    ['HOST:PORT', ['ping', 'node17:1752'], {}, /'node17:1752': ping takes a HOST without a port; give the port with --port, as in pidstat --port 1752 ping node17$/],
    ['[IPv6]:PORT', ['ping', '[::1]:1752'], {}, /--port 1752 ping \[::1\]$/],
  ];
  for (const [what, args, env, reason] of cases) {
    test(what, async () => {
      const r = await runBin('pidstat', args, { env });
      assert.equal(r.code, 3, describeRun(r));
      assert.match(r.stdout, /^PIDSTATD UNKNOWN - .+\n$/, describeRun(r));
      assert.match(r.stdout.slice('PIDSTATD UNKNOWN - '.length).trimEnd(), reason);
      assert.equal(r.stderr, '', 'a plugin says it all on stdout');
    });
  }

  test('--warning outside ping is a usage error of pidstat, exit 64', async () => {
    const r = await runBin('pidstat', ['-w', '1', '1']);
    assert.equal(r.code, 64, describeRun(r));
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /^pidstat: --warning is for ping/);
  });
});
