import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { readCommandLine, type CommandSpec, type OptionTable } from '../../src/cli/args.js';
import { CommandError } from '../../src/cli/errors.js';
import { SPEC as PIDSTAT } from '../../src/cli/pidstat.js';
import { SPEC as PIDSTATD } from '../../src/cli/pidstatd.js';
import { SPEC as PIDWATCH } from '../../src/cli/pidwatch.js';
import { stopDetached } from '../support/detached.js';
import { ask, BIN, deadPid, freePort, runBin, startDaemon, startSleeper, type RunResult } from '../support/helpers.js';

/**
 * Command lines written for IPC::Locker's tools, which read them with Perl's
 * Getopt::Long (pidwatch(1), OPTIONS): one-dash long options (`-pid 12`), the
 * negated `--nofork`/`--no-fork`, any case, unique abbreviations. First how
 * they are read, one line a case, then the real bins.
 */

type Spec = CommandSpec<OptionTable>;

/** What readCommandLine() makes of a line: the values given (defaults included) and the words. */
function read(spec: unknown, ...argv: string[]): Record<string, unknown> {
  const line = readCommandLine(spec as Spec, argv);
  return { ...line.values, words: line.words };
}

function describeRun(r: RunResult): string {
  return `exit ${r.code} signal ${r.signal}\n--- stdout ---\n${r.stdout}--- stderr ---\n${r.stderr}`;
}

/** A usage error: exit 64, one line on stderr naming `needle`, nothing on stdout. */
function assertUsageError(r: RunResult, name: string, needle: string): void {
  assert.equal(r.code, 64, describeRun(r));
  assert.equal(r.stdout, '', describeRun(r));
  assert.match(r.stderr, new RegExp(`^${name}: [^\\n]+\\n$`), `one line on stderr\n${describeRun(r)}`);
  assert.ok(r.stderr.includes(needle), `names ${needle}\n${describeRun(r)}`);
}

describe('Getopt::Long spellings, read as the long forms', () => {
  test('one dash', () => assert.deepEqual(read(PIDWATCH, '-pid', '12', '-host', 'h', 'true'), read(PIDWATCH, '--pid', '12', '--host', 'h', 'true')));
  test('one dash with =', () => assert.deepEqual(read(PIDWATCH, '-pid=12', 'true'), { pid: '12', local: true, words: ['true'] }));
  test('a value that begins with a dash is the value', () => assert.deepEqual(read(PIDWATCH, '-signal', '-HUP', '--pid', '-3', 'x'), { signal: '-HUP', pid: '-3', local: true, words: ['x'] }));
  test('another long option is no value', () => assert.throws(() => read(PIDWATCH, '-cd', '--pid', '3'), /^CommandError: -cd needs a value$/));
  test('any case', () => assert.deepEqual(read(PIDWATCH, '-PID', '1', '--Host', 'h', 'x'), { pid: '1', host: 'h', local: true, words: ['x'] }));
  test('a unique abbreviation', () => assert.deepEqual(read(PIDWATCH, '-pi', '1', '--ho', 'h', 'x'), { pid: '1', host: 'h', local: true, words: ['x'] }));
  test('--nofork, -nofork, -no-fork, --no-fork, -NoFork', () => {
    for (const word of ['--nofork', '-nofork', '-no-fork', '--no-fork', '-NoFork']) assert.equal(read(PIDSTATD, word)['fork'], false, word);
  });
  test('negated booleans of pidstat', () => assert.deepEqual(read(PIDSTAT, '-nolocal', '-nosilent', '1'), { local: false, silent: false, words: ['1'] }));
  test('pidwatch\'s command is never read', () => assert.deepEqual(read(PIDWATCH, '-pid', '1', 'echo', '-pid', '-host', '--no-fork').words, ['echo', '-pid', '-host', '--no-fork']));
  test('- alone starts pidwatch\'s command', () => assert.deepEqual(read(PIDWATCH, '-pid', '1', '-', '-pid').words, ['-', '-pid']));
  test('nothing after --', () => assert.deepEqual(read(PIDSTAT, '-host', 'h', '--', '-host'), { host: 'h', local: true, words: ['-host'] }));
  test('pidstat\'s options after its targets too', () => assert.deepEqual(read(PIDSTAT, 'h', '1', '-port', '7'), { port: '7', local: true, words: ['h', '1'] }));
  test('a value is never read as an option', () => assert.deepEqual(read(PIDSTAT, '--host', '-port', '1'), { host: '-port', local: true, words: ['1'] }));
  test('short options and their groups', () => assert.deepEqual(read(PIDSTAT, '-s', '-st', '3', '1'), { silent: true, timeout: '3', local: true, words: ['1'] }));
  test('a negative number is a word', () => assert.deepEqual(read(PIDSTAT, '-5').words, ['-5']));
  test('an unknown one-dash word is a usage error', () => assert.throws(() => readCommandLine(PIDSTAT as Spec, ['-bogus', '1'], { usageExitCode: 64 }), (err) => err instanceof CommandError && err.exitCode === 64 && /'-bogus'/.test(err.message)));
  test('an ambiguous abbreviation is a usage error naming the candidates', () => assert.throws(() => read(PIDSTATD, '-fo'), /'-fo' is ambiguous: --foreground, --fork/));
  test('leniently, unknown and ambiguous words are skipped', () => assert.deepEqual(readCommandLine(PIDSTATD as Spec, ['-fo', '-bogus', 'x'], { lenient: true }).words, ['x']));
});

describe('command lines written for IPC::Locker, with the real bins', () => {
  test('pidwatch -pid P -host localhost CMD runs CMD as the long forms do', async (t) => {
    const sleeper = startSleeper();
    t.after(() => sleeper.stop());
    const short = await runBin('pidwatch', ['-pid', String(sleeper.pid), '-host', 'localhost', 'sh', '-c', "'exit 3'"], { timeoutMs: 15_000 });
    const long = await runBin('pidwatch', ['--pid', String(sleeper.pid), '--host', 'localhost', 'sh', '-c', "'exit 3'"], { timeoutMs: 15_000 });
    assert.equal(long.code, 3, describeRun(long));
    assert.deepEqual({ code: short.code, signal: short.signal, stderr: short.stderr }, { code: long.code, signal: long.signal, stderr: long.stderr });
  });

  test('pidwatch -pid=DEAD -signal -TERM: the dead pid is read, and TERM ends the job as --signal=-TERM does', async () => {
    const dead = await deadPid();
    const short = await runBin('pidwatch', [`-pid=${dead}`, '-signal', '-TERM', '-interval', '100ms', 'sleep', '30'], { timeoutMs: 15_000 });
    const long = await runBin('pidwatch', [`--pid=${dead}`, '--signal=-TERM', '--interval', '100ms', 'sleep', '30'], { timeoutMs: 15_000 });
    assert.ok(long.signal === 'SIGTERM' || long.code === 128 + 15, `ended by TERM: ${describeRun(long)}`);
    assert.deepEqual({ code: short.code, signal: short.signal }, { code: long.code, signal: long.signal }, describeRun(short));
    assert.ok(short.ms < 10_000, `at once, not at the end of sleep 30: ${Math.round(short.ms)} ms`);
  });

  test('pidwatch leaves its command\'s words alone: echo -pid -host --no-fork', async (t) => {
    const sleeper = startSleeper();
    t.after(() => sleeper.stop());
    const r = await runBin('pidwatch', ['-pid', String(sleeper.pid), 'echo', '-pid', '-host', '--no-fork'], { timeoutMs: 15_000 });
    assert.equal(r.code, 0, describeRun(r));
    assert.equal(r.stdout, '-pid -host --no-fork\n');
  });

  test('pidstat -port N -nolocal localhost 1 asks the daemon on port N', async (t) => {
    const daemon = await startDaemon(['--bind', '127.0.0.1']);
    t.after(() => daemon.stop());
    const r = await runBin('pidstat', ['-port', String(daemon.port), '-nolocal', '-host', '127.0.0.1', '1']);
    assert.equal(r.code, 0, describeRun(r));
    assert.equal(r.stdout, '127.0.0.1:1 exists\n');
    // The same line on a port where nothing listens gets no reply: -port was read, not the default.
    const elsewhere = await runBin('pidstat', ['-port', String(await freePort()), '-nolocal', '-timeout', '200', '-tries', '2', '-host', '127.0.0.1', '1']);
    assert.equal(elsewhere.code, 2, describeRun(elsewhere));
    const local = await runBin('pidstat', ['-port', String(daemon.port), 'localhost', '1']);
    assert.equal(local.code, 0, describeRun(local));
    assert.equal(local.stdout, 'localhost:1 exists\n');
  });

  for (const argv of [['--no-fork'], ['--nofork'], ['-nofork'], ['-foreground']]) {
    test(`pidstatd ${argv[0]} -port N stays attached, answers, and stops on SIGTERM to its pid`, async (t) => {
      const port = await freePort();
      // A pidfile finds the daemon should it detach all the same.
      const dir = mkdtempSync(join(tmpdir(), 'getopt-'));
      const pidfile = join(dir, 'pidstatd.pid');
      // The daemon's command line word for word, not startDaemon's own --foreground --port 0.
      const daemon = startDaemon([], {}, (command, words) => [command, [...words.slice(0, words.indexOf(BIN.pidstatd) + 1), ...argv, '-port', String(port), '-bind', '127.0.0.1', '--pidfile', pidfile]]);
      t.after(async () => {
        await (await daemon.catch(() => undefined))?.stop();
        await stopDetached(pidfile);
        rmSync(dir, { recursive: true, force: true });
      });
      await assert.doesNotReject(daemon, 'it stays attached and says where it listens');
      const started = await daemon;
      assert.equal(started.port, port);
      assert.equal(await ask(port, 'PIDR 1 n 3'), 'EXIS 1 1 n');
      assert.equal(started.child.exitCode, null, 'still running: it did not detach');
      assert.equal(await started.stop(), 0, started.log());
    });
  }

  for (const name of ['pidstat', 'pidwatch', 'pidstatd'] as const) {
    test(`${name} -bogus: exit 64 with one line naming it`, async () => {
      assertUsageError(await runBin(name, ['-bogus', '1'], { timeoutMs: 10_000 }), name, "'-bogus'");
    });
  }

  test('pidstatd -fo: ambiguous (--foreground or --fork), exit 64, and no daemon started', async () => {
    assertUsageError(await runBin('pidstatd', ['-fo', '--port', '0', '--bind', '127.0.0.1'], { timeoutMs: 10_000 }), 'pidstatd', '--foreground, --fork');
  });
});
