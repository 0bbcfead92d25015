import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import {
  BIN,
  ROOT,
  binEnv,
  deadPid,
  freePort,
  hasIPv6Loopback,
  run,
  runBin,
  shellQuote,
  startDaemon,
  startSleeper,
  type Daemon,
  type RunResult,
} from '../support/helpers.js';

/**
 * Black-box tests of the `pidstat` command (pidstat(1)): the built bin
 * is run as a user would run it, against daemons started on ephemeral ports
 * on loopback addresses, and judged by its stdout, stderr, exit status and
 * timing.
 */

const ESC = '\x1b';
/** Keeps every no_reply run short. */
const FAST = ['--try-timeout', '200ms', '--tries', '2'] as const;

const VERSION = (JSON.parse(readFileSync(`${ROOT}package.json`, 'utf8')) as { version: string }).version;

/** The start token of a live process: field 22 of /proc/<pid>/stat. */
function startToken(pid: number): string {
  const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  // Fields after the command name, which ends at the last ')', start at field 3.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return fields[22 - 3]!;
}

function lines(text: string): string[] {
  return text.split('\n').filter((line) => line !== '');
}

function describeRun(r: RunResult): string {
  return `exit ${r.code} signal ${r.signal}\n--- stdout ---\n${r.stdout}--- stderr ---\n${r.stderr}`;
}

/**
 * A usage error: exit 64 (or `code`), nothing on stdout, one line on stderr
 * that starts with the command name, names the problem (`needle`) and points
 * to --help, with no stack trace.
 */
function assertUsageError(r: RunResult, needle: string | RegExp, code = 64): void {
  assert.equal(r.code, code, describeRun(r));
  assert.equal(r.stdout, '', `nothing on stdout\n${describeRun(r)}`);
  assert.match(r.stderr, /^pidstat: [^\n]+\n$/, `one line on stderr\n${describeRun(r)}`);
  assert.match(r.stderr, /--help/, `points to --help\n${describeRun(r)}`);
  assert.doesNotMatch(r.stderr, /\n\s+at |internal error|Error:/, `no stack trace\n${describeRun(r)}`);
  if (typeof needle === 'string') assert.ok(r.stderr.includes(needle), `names ${needle}\n${describeRun(r)}`);
  else assert.match(r.stderr, needle, describeRun(r));
}

/**
 * Runs pidstat with stdout and stderr on a pseudo-terminal (util-linux
 * `script`); resolves undefined where no such terminal can be made.
 */
async function runPidstatOnTerminal(args: readonly string[], extraEnv: NodeJS.ProcessEnv): Promise<RunResult | undefined> {
  const env = binEnv(extraEnv);
  try {
    const probe = await run('script', ['-qec', 'true', '/dev/null'], { env, timeoutMs: 5000 });
    if (probe.code !== 0) return undefined;
  } catch {
    return undefined;
  }
  const command = [process.execPath, BIN.pidstat, ...args].map(shellQuote).join(' ');
  return run('script', ['-qec', command, '/dev/null'], { env, timeoutMs: 10_000 });
}

let sleeper: ReturnType<typeof startSleeper>;
let live: number;
let dead: number;
/** A port on 127.0.0.1 where no daemon listens, so nothing answers there. */
let nobody: number;

before(async () => {
  sleeper = startSleeper();
  live = sleeper.pid;
  dead = await deadPid();
  nobody = await freePort();
});

after(async () => {
  await sleeper.stop();
});

describe('pidstat usage errors exit 64 with one line on stderr', () => {
  test('unknown option', async () => {
    const r = await runBin('pidstat', ['--port', String(nobody), '--bogus', '1']);
    assertUsageError(r, 'bogus');
  });

  test('no target at all', async () => {
    assertUsageError(await runBin('pidstat', ['--port', String(nobody)]), /target/);
  });

  test('only the word exists, with no target after it', async () => {
    assertUsageError(await runBin('pidstat', ['--port', String(nobody), 'exists']), /target/);
  });

  test('a host with no PID after it', async () => {
    assertUsageError(await runBin('pidstat', ['--port', String(nobody), 'somehost']), 'somehost');
  });

  test('a host followed by another host, then a PID', async () => {
    assertUsageError(await runBin('pidstat', ['--port', String(nobody), 'somehost', 'otherhost', '5']), 'somehost');
  });

  test('a host with no PID after the last PID of another host', async () => {
    assertUsageError(await runBin('pidstat', ['--port', String(nobody), '127.0.0.1', '1', 'somehost']), 'somehost');
  });

  for (const pid of ['0', '-1', '+5', '0x10', '1e3', '99999999999', '2147483648']) {
    test(`invalid pid ${pid} alone`, async () => {
      assertUsageError(await runBin('pidstat', ['--port', String(nobody), pid]), `'${pid}'`);
    });
  }

  for (const word of ['localhost:0', 'localhost:-1', 'localhost:0x10', 'localhost:', 'localhost:abc']) {
    test(`invalid pid in ${word}`, async () => {
      assertUsageError(await runBin('pidstat', ['--port', String(nobody), word]), word);
    });
  }

  test('invalid pid after a host word', async () => {
    assertUsageError(await runBin('pidstat', ['--port', String(nobody), 'localhost', '2147483648']), '2147483648');
  });

  test('--port abc', async () => {
    assertUsageError(await runBin('pidstat', ['--port', 'abc', '1']), /--port.*abc/);
  });

  test('--port 70000', async () => {
    assertUsageError(await runBin('pidstat', ['--port', '70000', '1']), /--port.*70000/);
  });

  test('--timeout x', async () => {
    assertUsageError(await runBin('pidstat', ['--port', String(nobody), '--timeout', 'x', '1']), /--timeout.*'x'/);
  });

  test('--tries 0', async () => {
    assertUsageError(await runBin('pidstat', ['--port', String(nobody), '--tries', '0', '1']), /--tries.*'0'/);
  });

  test('PIDSTAT_PORT=abc in the environment', async () => {
    const r = await runBin('pidstat', ['1'], { env: { PIDSTAT_PORT: 'abc' } });
    assertUsageError(r, /PIDSTAT_PORT.*abc/);
  });

  test('a bare IPv6 address with a colon and pid (::1:5) is refused', async () => {
    const r = await runBin('pidstat', ['--port', String(nobody), '::1:5']);
    assertUsageError(r, '::1:5');
  });

  test('the ::1:5 error hints at the bracket form [::1]:PID', async () => {
    // pidstat(1): an IPv6 target is written `[::1]:PID`; a user who
    // wrote `::1:5` meant pid 5 on ::1 and should be told how to write it.
    const r = await runBin('pidstat', ['--port', String(nobody), '::1:5']);
    assert.equal(r.code, 64, describeRun(r));
    assert.match(r.stderr, /\[::1?\]|bracket/i, `hints at [::1]:PID\n${describeRun(r)}`);
  });
});

describe('pidstat --version and --help', () => {
  test('--version prints pidstat <version> from package.json and exits 0', async () => {
    const r = await runBin('pidstat', ['--version']);
    assert.equal(r.code, 0, describeRun(r));
    assert.equal(r.stdout, `pidstat ${VERSION}\n`);
    assert.equal(r.stderr, '');
  });

  for (const flag of ['--help', '-h']) {
    test(`${flag} prints usage on stdout and exits 0`, async () => {
      const r = await runBin('pidstat', [flag]);
      assert.equal(r.code, 0, describeRun(r));
      assert.match(r.stdout, /Usage/);
      assert.match(r.stdout, /HOST:PID/);
      for (const option of ['--host', '--port', '--timeout', '--tries', '--silent', '--json', '--no-local', '--debug']) {
        assert.ok(r.stdout.includes(option), `help names ${option}\n${r.stdout}`);
      }
      assert.equal(r.stderr, '');
    });
  }
});

describe('pidstat answers locally, without a daemon', () => {
  test('a live pid alone is localhost:<pid> exists, exit 0', async () => {
    const r = await runBin('pidstat', ['--port', String(nobody), String(live)]);
    assert.equal(r.code, 0, describeRun(r));
    assert.equal(r.stdout, `localhost:${live} exists\n`);
    assert.equal(r.stderr, '');
  });

  test('localhost:<dead pid> is dead, exit 1', async () => {
    const r = await runBin('pidstat', ['--port', String(nobody), `localhost:${dead}`]);
    assert.equal(r.code, 1, describeRun(r));
    assert.equal(r.stdout, `localhost:${dead} dead\n`);
  });

  test('127.0.0.1:PID is this host too: answered with no daemon on the port', async () => {
    const r = await runBin('pidstat', ['--port', String(nobody), `127.0.0.1:${live}`, `127.0.0.1:${dead}`]);
    assert.equal(r.code, 1, describeRun(r));
    assert.equal(r.stdout, `127.0.0.1:${live} exists\n127.0.0.1:${dead} dead\n`);
    assert.doesNotMatch(r.stderr, /no daemon listening/);
  });

  test('pid 1 and a live pid locally: exit 0', async () => {
    const r = await runBin('pidstat', ['--port', String(nobody), '1', String(live)]);
    assert.equal(r.code, 0, describeRun(r));
    assert.deepEqual(lines(r.stdout), ['localhost:1 exists', `localhost:${live} exists`]);
  });

  test('--no-local sends even localhost targets to the (absent) daemon: no_reply, exit 2', async () => {
    const r = await runBin('pidstat', ['--port', String(nobody), '--no-local', ...FAST, `127.0.0.1:${live}`]);
    assert.equal(r.code, 2, describeRun(r));
    assert.equal(r.stdout, `127.0.0.1:${live} no_reply\n`);
  });
});

describe('pidstat through a daemon on 127.0.0.1 (--no-local)', () => {
  let daemon: Daemon;
  let port: string;
  before(async () => {
    daemon = await startDaemon();
    port = String(daemon.port);
  });
  after(async () => {
    await daemon.stop();
  });

  test('exit 0 when every target exists: HOST PID PID on one host', async () => {
    const r = await runBin('pidstat', ['--no-local', '--port', port, '127.0.0.1', String(live), '1']);
    assert.equal(r.code, 0, describeRun(r));
    assert.equal(r.stdout, `127.0.0.1:${live} exists\n127.0.0.1:1 exists\n`);
    assert.equal(r.stderr, '');
  });

  test('exit 1 when one target is dead and all answered', async () => {
    const r = await runBin('pidstat', ['--no-local', '--port', port, '127.0.0.1', String(live), String(dead)]);
    assert.equal(r.code, 1, describeRun(r));
    assert.equal(r.stdout, `127.0.0.1:${live} exists\n127.0.0.1:${dead} dead\n`);
  });

  test('exit 2 wins over dead: a dead pid plus a host where nothing listens', async () => {
    // 127.0.0.3 is loopback too, but the daemon is bound to 127.0.0.1 only.
    const r = await runBin('pidstat', ['--no-local', '--port', port, ...FAST, `127.0.0.1:${dead}`, '127.0.0.3:1']);
    assert.equal(r.code, 2, describeRun(r));
    assert.equal(r.stdout, `127.0.0.1:${dead} dead\n127.0.0.3:1 no_reply\n`);
    assert.match(r.stderr, /127\.0\.0\.3:1: .*no daemon listening/);
  });

  test('HOST:PID form', async () => {
    const r = await runBin('pidstat', ['--no-local', '--port', port, `127.0.0.1:${live}`]);
    assert.equal(r.code, 0, describeRun(r));
    assert.equal(r.stdout, `127.0.0.1:${live} exists\n`);
  });

  test('bare pids with --host 127.0.0.1', async () => {
    const r = await runBin('pidstat', ['--no-local', '--port', port, '--host', '127.0.0.1', String(dead), String(live)]);
    assert.equal(r.code, 1, describeRun(r));
    assert.equal(r.stdout, `127.0.0.1:${dead} dead\n127.0.0.1:${live} exists\n`);
  });

  test('the exists prefix means the same', async () => {
    const r = await runBin('pidstat', ['--no-local', '--port', port, 'exists', `127.0.0.1:${live}`]);
    assert.equal(r.code, 0, describeRun(r));
    assert.equal(r.stdout, `127.0.0.1:${live} exists\n`);
  });

  test('PIDSTAT_PORT in the environment picks the port', async () => {
    const r = await runBin('pidstat', ['--no-local', `127.0.0.1:${live}`], { env: { PIDSTAT_PORT: port } });
    assert.equal(r.code, 0, describeRun(r));
    assert.equal(r.stdout, `127.0.0.1:${live} exists\n`);
  });

  test('--port beats PIDSTAT_PORT', async () => {
    const r = await runBin('pidstat', ['--no-local', '--port', port, `127.0.0.1:${live}`], { env: { PIDSTAT_PORT: String(nobody) } });
    assert.equal(r.code, 0, describeRun(r));
    assert.equal(r.stdout, `127.0.0.1:${live} exists\n`);
  });

  test('--json: an array of {host, pid, state, tries, ms}, start for a live pid, in the order given', async () => {
    const r = await runBin('pidstat', ['--no-local', '--port', port, '--json', `127.0.0.1:${dead}`, `127.0.0.1:${live}`, '127.0.0.1:1']);
    assert.equal(r.code, 1, describeRun(r));
    const parsed: unknown = JSON.parse(r.stdout);
    assert.ok(Array.isArray(parsed), r.stdout);
    const results = parsed as Record<string, unknown>[];
    assert.deepEqual(
      results.map((o) => [o['host'], o['pid'], o['state']]),
      [
        ['127.0.0.1', dead, 'dead'],
        ['127.0.0.1', live, 'exists'],
        ['127.0.0.1', 1, 'exists'],
      ],
    );
    for (const o of results) {
      assert.equal(typeof o['tries'], 'number', JSON.stringify(o));
      assert.ok(Number.isInteger(o['tries']) && (o['tries'] as number) >= 1, JSON.stringify(o));
      assert.equal(typeof o['ms'], 'number', JSON.stringify(o));
      assert.ok((o['ms'] as number) >= 0, JSON.stringify(o));
    }
    const liveResult = results[1]!;
    assert.equal(typeof liveResult['start'], 'string', JSON.stringify(liveResult));
    assert.match(liveResult['start'] as string, /^[0-9]+$/);
    assert.equal(liveResult['start'], startToken(live), 'the start token of /proc/<pid>/stat field 22');
    assert.equal(results[0]!['start'], undefined, 'a dead pid has no start token');
    assert.equal(results[0]!['error'], undefined);
  });

  test('--silent prints nothing and keeps exit 1', async () => {
    const r = await runBin('pidstat', ['--no-local', '--port', port, '--silent', `127.0.0.1:${dead}`]);
    assert.equal(r.code, 1, describeRun(r));
    assert.equal(r.stdout, '');
    assert.equal(r.stderr, '');
  });

  test('-s prints nothing and keeps exit 0', async () => {
    const r = await runBin('pidstat', ['--no-local', '--port', port, '-s', `127.0.0.1:${live}`]);
    assert.equal(r.code, 0, describeRun(r));
    assert.equal(r.stdout, '');
    assert.equal(r.stderr, '');
  });

  test('no escape codes on a piped stdout by default', async () => {
    const r = await runBin('pidstat', ['--no-local', '--port', port, `127.0.0.1:${live}`, `127.0.0.1:${dead}`]);
    assert.equal(r.code, 1, describeRun(r));
    assert.ok(!r.stdout.includes(ESC), JSON.stringify(r.stdout));
    assert.ok(!r.stderr.includes(ESC), JSON.stringify(r.stderr));
  });

  test('--color: exists in green, dead in red', async () => {
    const r = await runBin('pidstat', ['--no-local', '--port', port, '--color', `127.0.0.1:${live}`, `127.0.0.1:${dead}`]);
    assert.equal(r.code, 1, describeRun(r));
    const [first, second] = lines(r.stdout);
    assert.ok(first?.startsWith(`127.0.0.1:${live} `), JSON.stringify(r.stdout));
    assert.ok(first.includes(`${ESC}[32mexists`), `green exists: ${JSON.stringify(first)}`);
    assert.ok(second?.startsWith(`127.0.0.1:${dead} `), JSON.stringify(r.stdout));
    assert.ok(second.includes(`${ESC}[31mdead`), `red dead: ${JSON.stringify(second)}`);
  });

  test('FORCE_COLOR=1 colours a pipe, and --no-color beats it', async () => {
    const forced = await runBin('pidstat', ['--no-local', '--port', port, `127.0.0.1:${live}`], { env: { FORCE_COLOR: '1' } });
    assert.equal(forced.code, 0, describeRun(forced));
    assert.ok(forced.stdout.includes(ESC), `FORCE_COLOR=1 colours: ${JSON.stringify(forced.stdout)}`);
    const r = await runBin('pidstat', ['--no-local', '--port', port, '--no-color', `127.0.0.1:${live}`], { env: { FORCE_COLOR: '1' } });
    assert.equal(r.code, 0, describeRun(r));
    assert.equal(r.stdout, `127.0.0.1:${live} exists\n`);
  });

  test('NO_COLOR=1 with FORCE_COLOR unset: no escape codes', async () => {
    const r = await runBin('pidstat', ['--no-local', '--port', port, `127.0.0.1:${live}`, `127.0.0.1:${dead}`], { env: { NO_COLOR: '1' } });
    assert.equal(r.code, 1, describeRun(r));
    assert.equal(r.stdout, `127.0.0.1:${live} exists\n127.0.0.1:${dead} dead\n`);
  });

  test('--debug shows the datagrams on stderr and nothing extra on stdout', async () => {
    const r = await runBin('pidstat', ['--no-local', '--port', port, '--debug', `127.0.0.1:${live}`]);
    assert.equal(r.code, 0, describeRun(r));
    assert.equal(r.stdout, `127.0.0.1:${live} exists\n`);
    // pidstat(1): pidstat asks with flags 15; doc/protocol.md: the host field carries a cookie, echoed.
    const cookie = new RegExp(`PIDR ${live} 127\\.0\\.0\\.1/([0-9a-f]{16}) 15\\b`).exec(r.stderr)?.[1];
    assert.ok(cookie !== undefined, r.stderr);
    assert.match(r.stderr, new RegExp(`EXIS ${live} 1 127\\.0\\.0\\.1/${cookie}`), r.stderr);
    const again = await runBin('pidstat', ['--no-local', '--port', port, '--debug', `127.0.0.1:${live}`]);
    assert.doesNotMatch(again.stderr, new RegExp(cookie), 'each run draws a fresh cookie');
  });

  test('--debug says when a pid of this host is answered here, with no question sent', async () => {
    const r = await runBin('pidstat', ['--port', port, '--debug', `127.0.0.1:${live}`]);
    assert.equal(r.code, 0, describeRun(r));
    assert.match(r.stderr, new RegExp(`^pidstat: 127\\.0\\.0\\.1:${live} is on this host: answered by kill\\(${live}, 0\\) here, no question sent \\(--no-local asks its daemon\\)$`, 'm'));
    assert.doesNotMatch(r.stderr, /PIDR/, 'nothing sent');
  });

  test('ping: one OK line with the response time, exit 0', async () => {
    const r = await runBin('pidstat', ['--port', port, 'ping', '127.0.0.1']);
    assert.equal(r.code, 0, describeRun(r));
    assert.equal(lines(r.stdout).length, 1, r.stdout);
    assert.ok(r.stdout.endsWith('\n'));
    assert.match(r.stdout.trimEnd(), new RegExp(`^PIDSTATD OK - \\d+\\.\\d{3} second response on 127\\.0\\.0\\.1:${port}\\|time=\\d+\\.\\d{6}s;;;0\\.000000$`));
  });

  test('ping with a usage error after --port still exits 3', async () => {
    // pidstat(1), ping: it reports its own usage errors with exit 3.
    const r = await runBin('pidstat', ['--port', port, 'ping', '--bogus']);
    assert.equal(r.code, 3, describeRun(r));
    assert.match(r.stdout + r.stderr, /bogus/);
  });
});

describe('pidstat with mixed hosts', () => {
  let first: Daemon;
  let second: Daemon;
  before(async () => {
    first = await startDaemon(['--bind', '127.0.0.1']);
    second = await startDaemon(['--bind', '127.0.0.2', '--port', String(first.port)]);
  });
  after(async () => {
    await Promise.all([first?.stop(), second?.stop()]);
  });

  test('h1 p1 h2 p2 p3: each pid on the host before it, in the order given', async () => {
    const r = await runBin('pidstat', ['--no-local', '--port', String(first.port), '127.0.0.1', String(live), '127.0.0.2', String(dead), '1']);
    assert.equal(r.code, 1, describeRun(r));
    assert.equal(r.stdout, `127.0.0.1:${live} exists\n127.0.0.2:${dead} dead\n127.0.0.2:1 exists\n`);
  });

  test('HOST:PID and HOST PID mixed', async () => {
    const r = await runBin('pidstat', ['--no-local', '--port', String(first.port), `127.0.0.2:${live}`, '127.0.0.1', '1', `127.0.0.2:1`]);
    assert.equal(r.code, 0, describeRun(r));
    assert.equal(r.stdout, `127.0.0.2:${live} exists\n127.0.0.1:1 exists\n127.0.0.2:1 exists\n`);
  });
});

describe('pidstat over IPv6 loopback', () => {
  test('[::1]:PID and ::1 PID against a daemon bound to ::1', async (t) => {
    if (!(await hasIPv6Loopback())) {
      t.skip('::1 is not available on this host');
      return;
    }
    const daemon = await startDaemon(['--bind', '::1']);
    try {
      const port = String(daemon.port);
      const r = await runBin('pidstat', ['--no-local', '--port', port, `[::1]:${live}`, `[::1]:${dead}`, '::1', '1']);
      assert.equal(r.code, 1, describeRun(r));
      assert.equal(r.stdout, `[::1]:${live} exists\n[::1]:${dead} dead\n[::1]:1 exists\n`);
      const json = await runBin('pidstat', ['--no-local', '--port', port, '--json', `[::1]:${live}`]);
      assert.equal(json.code, 0, describeRun(json));
      const [only] = JSON.parse(json.stdout) as Record<string, unknown>[];
      assert.equal(only?.['host'], '::1');
      assert.equal(only?.['state'], 'exists');
    } finally {
      await daemon.stop();
    }
  });
});

describe('pidstat with no daemon listening', () => {
  test('--no-local against a free port: no_reply, reason on stderr, exit 2; each try ends at the refusal, not at its --try-timeout', async () => {
    const port = await freePort();
    const r = await runBin('pidstat', ['--no-local', '--port', String(port), '--try-timeout', '30s', '127.0.0.1', '1']);
    assert.equal(r.code, 2, describeRun(r));
    assert.equal(r.stdout, '127.0.0.1:1 no_reply\n');
    assert.match(r.stderr, /127\.0\.0\.1:1: .*no daemon listening/);
    assert.ok(!r.stdout.includes('no daemon listening'), 'the reason is not on stdout');
    // The default 5 tries, each waiting 30 s for a reply, would take 150 s
    // without the ICMP shortcut; with it, four 200 ms pauses and the start-up
    // of node. A liveness bound (runBin ends it at 20 s).
    assert.ok(r.ms < 20_000, `took ${Math.round(r.ms)} ms`);
  });

  test('--json for no_reply carries the error and every try', async () => {
    const port = await freePort();
    const r = await runBin('pidstat', ['--no-local', '--port', String(port), ...FAST, '--json', `127.0.0.1:${live}`, '127.0.0.1:1']);
    assert.equal(r.code, 2, describeRun(r));
    const results = JSON.parse(r.stdout) as Record<string, unknown>[];
    assert.deepEqual(
      results.map((o) => [o['host'], o['pid'], o['state'], o['tries']]),
      [
        ['127.0.0.1', live, 'no_reply', 2],
        ['127.0.0.1', 1, 'no_reply', 2],
      ],
    );
    for (const o of results) {
      assert.equal(typeof o['error'], 'string', JSON.stringify(o));
      assert.match(o['error'] as string, /no daemon listening/);
      assert.equal(o['start'], undefined);
    }
  });

  test('--silent prints nothing, not even the reason, and keeps exit 2', async () => {
    const port = await freePort();
    for (const flag of ['--silent', '-s']) {
      const r = await runBin('pidstat', ['--no-local', '--port', String(port), ...FAST, flag, '127.0.0.1:1']);
      assert.equal(r.code, 2, describeRun(r));
      assert.equal(r.stdout, '', flag);
      assert.equal(r.stderr, '', flag);
    }
  });

  test('--color shows no_reply in yellow', async () => {
    const port = await freePort();
    const r = await runBin('pidstat', ['--no-local', '--port', String(port), ...FAST, '--color', '127.0.0.1:1']);
    assert.equal(r.code, 2, describeRun(r));
    assert.ok(r.stdout.includes(`${ESC}[33mno_reply`), JSON.stringify(r.stdout));
  });

  test('ping: CRITICAL line, exit 2, never answered locally', async () => {
    const port = await freePort();
    const r = await runBin('pidstat', ['--port', String(port), ...FAST, 'ping', '127.0.0.1']);
    assert.equal(r.code, 2, describeRun(r));
    assert.equal(r.stdout, `PIDSTATD CRITICAL - No response from pidstatd on 127.0.0.1:${port}\n`);
  });

  test('ping with two hosts exits 3', async () => {
    const r = await runBin('pidstat', ['--port', String(nobody), 'ping', 'a', 'b']);
    assert.equal(r.code, 3, describeRun(r));
    assert.doesNotMatch(r.stdout + r.stderr, /\n\s+at /);
  });

  test('ping --bogus exits 3', async () => {
    const r = await runBin('pidstat', ['ping', '--bogus'], { env: { PIDSTAT_PORT: String(nobody) } });
    assert.equal(r.code, 3, describeRun(r));
    assert.match(r.stdout + r.stderr, /bogus/);
  });
});

describe('pidstat colour on a terminal', () => {
  test('a terminal stdout is coloured, and NO_COLOR=1 turns it off', async (t) => {
    const args = ['--port', String(nobody), String(live)];
    const coloured = await runPidstatOnTerminal(args, {});
    if (coloured === undefined) {
      t.skip('no pseudo-terminal (util-linux script) available');
      return;
    }
    assert.equal(coloured.code, 0, describeRun(coloured));
    assert.ok(coloured.stdout.includes(`${ESC}[32mexists`), `green on a terminal: ${JSON.stringify(coloured.stdout)}`);
    const plain = await runPidstatOnTerminal(args, { NO_COLOR: '1' });
    assert.ok(plain !== undefined);
    assert.equal(plain.code, 0, describeRun(plain));
    assert.match(plain.stdout, new RegExp(`localhost:${live} exists`));
    assert.ok(!plain.stdout.includes(ESC), `NO_COLOR=1: ${JSON.stringify(plain.stdout)}`);
  });
});
