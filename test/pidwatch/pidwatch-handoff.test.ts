import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import { run, binEnv, BIN, isRunning, sleep, startSleeper, waitFor, type RunResult } from '../support/helpers.js';
import { commandRuns, descendants, exitWithin, start, watcherReady, watchersOf } from '../support/jobs.js';

/**
 * The hand-off from bin/pidwatch's launcher to the command (pidwatch(1),
 * --cd, --killer, SIGNALS, EXIT STATUS): the directory entered is the one
 * checked, a missing one runs nothing, the command's first word is never an
 * option of /bin/sh, a command too long for one argument is refused in one
 * line, a relative --killer is the caller's, and a signal sent while
 * pidwatch starts reaches the command. Every process a test starts is
 * stopped by its pid.
 */

let dir = '';

before(() => {
  dir = realpathSync(mkdtempSync(join(tmpdir(), 'pidwatch-handoff-')));
});

after(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** A live pid to watch for the test's length. */
function sleeperFor(t: TestContext): { pid: number; stop(): Promise<void> } {
  const sleeper = startSleeper();
  t.after(() => sleeper.stop());
  return sleeper;
}

/** A fresh directory under the test's own. */
function freshDir(name: string): string {
  return mkdtempSync(join(dir, `${name}-`));
}

/** Runs pidwatch to its end (for commands that leave no process behind). */
function runPidwatch(args: readonly string[], options: { cwd: string; env?: NodeJS.ProcessEnv; timeoutMs?: number }): Promise<RunResult> {
  return run(BIN.pidwatch, args, { cwd: options.cwd, env: binEnv(options.env), timeoutMs: options.timeoutMs ?? 15_000 });
}

function describeRun(result: { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }): string {
  return `exit ${result.code}${result.signal ? ` (${result.signal})` : ''}; stdout: ${JSON.stringify(result.stdout.slice(0, 500))}; stderr: ${JSON.stringify(result.stderr.slice(0, 500))}`;
}

describe('pidwatch --cd DIR enters exactly DIR', () => {
  test('CDPATH naming a directory with the same relative name is not followed, and nothing is printed', async (t) => {
    const sleeper = sleeperFor(t);
    const here = freshDir('here');
    const elsewhere = freshDir('cdpath');
    mkdirSync(join(here, 'sub'));
    mkdirSync(join(elsewhere, 'sub'));
    const result = await runPidwatch(['--cd', 'sub', '--pid', String(sleeper.pid), 'pwd'], { cwd: here, env: { CDPATH: elsewhere } });
    assert.equal(result.code, 0, describeRun(result));
    assert.equal(result.stdout, `${join(here, 'sub')}\n`, describeRun(result));
  });

  test('--cd - is the directory named "-", not OLDPWD, and nothing is printed', async (t) => {
    const sleeper = sleeperFor(t);
    const here = freshDir('dash');
    const old = freshDir('oldpwd');
    mkdirSync(join(here, '-'));
    const result = await runPidwatch(['--cd', '-', '--pid', String(sleeper.pid), 'pwd'], { cwd: here, env: { OLDPWD: old, PWD: here } });
    assert.equal(result.code, 0, describeRun(result));
    assert.equal(result.stdout, `${join(here, '-')}\n`, describeRun(result));
  });

  test('a DIR whose name ends in a newline, and / itself, are entered as named', async (t) => {
    const sleeper = sleeperFor(t);
    const here = freshDir('newline');
    mkdirSync(join(here, 'nl\n'));
    const result = await runPidwatch(['--cd', 'nl\n', '--pid', String(sleeper.pid), 'pwd'], { cwd: here });
    assert.equal(result.code, 0, describeRun(result));
    assert.equal(result.stdout, `${join(here, 'nl\n')}\n`, describeRun(result));
    const root = await runPidwatch(['--cd', '/', '--pid', String(sleeper.pid), 'pwd'], { cwd: here });
    assert.equal(root.stdout, '/\n', describeRun(root));
  });

  test('bytes that are not UTF-8 reach --cd and the command unchanged, in both spellings of --cd', async (t) => {
    const sleeper = sleeperFor(t);
    const here = freshDir('latin1');
    // caf\351 (Latin-1) is the DIR; caf U+FFFD is where a UTF-8 reading of it would lead.
    mkdirSync(Buffer.from(`${here}/caf\xe9`, 'latin1'));
    mkdirSync(join(here, 'caf\uFFFD'));
    const expected = Buffer.from(`\xff\x78${here}/caf\xe9\n`, 'latin1').toString('hex');
    for (const spelling of ['--cd "$D"', '--cd="$D"']) {
      // The shell makes the bytes: Node's spawn would write its strings as UTF-8.
      const script = String.raw`D=$(printf 'caf\351'); W=$(printf 'printf %%s \377x | od -An -tx1; pwd | od -An -tx1'); exec "$0" ` + spelling + ' --pid "$1" "$W"';
      const result = await run('/bin/sh', ['-c', script, BIN.pidwatch, String(sleeper.pid)], { cwd: here, env: binEnv(), timeoutMs: 15_000 });
      assert.equal(result.code, 0, `${spelling}: ${describeRun(result)}`);
      assert.equal(result.stdout.replace(/\s+/g, ''), expected, `${spelling}: the command's byte or the directory entered was not the one given: ${describeRun(result)}`);
    }
  });

  test('a missing DIR: exit 126, one line naming it, and the command never runs', async (t) => {
    const sleeper = sleeperFor(t);
    const here = freshDir('missing');
    const missing = join(here, 'no-such-dir');
    const marker = join(here, 'ran');
    const result = await runPidwatch(['--cd', missing, '--pid', String(sleeper.pid), `touch ${marker}`], { cwd: here });
    assert.equal(result.code, 126, describeRun(result));
    assert.equal(result.stdout, '');
    assert.match(result.stderr, /^pidwatch: --cd .*no-such-dir: no such directory: the command is not run\n$/, describeRun(result));
    assert.ok(!existsSync(marker), 'the command ran elsewhere');
    assert.ok(!existsSync(join(here, 'no-such-dir')));
  });

  test('a DIR that is a file: exit 126, "not a directory", and the command never runs', async (t) => {
    const sleeper = sleeperFor(t);
    const here = freshDir('file');
    const file = join(here, 'plain');
    writeFileSync(file, '');
    const marker = join(here, 'ran');
    const result = await runPidwatch(['--cd', file, '--pid', String(sleeper.pid), `touch ${marker}`], { cwd: here });
    assert.equal(result.code, 126, describeRun(result));
    assert.match(result.stderr, /^pidwatch: --cd .*plain: not a directory: the command is not run\n$/, describeRun(result));
    assert.ok(!existsSync(marker), 'the command ran elsewhere');
  });
});

describe('pidwatch: the command is never options of /bin/sh', () => {
  for (const name of ['+x', '-x'] as const) {
    test(`a first word ${name} runs the program named ${name}`, async (t) => {
      const sleeper = sleeperFor(t);
      const bin = freshDir('path');
      writeFileSync(join(bin, name), '#!/bin/sh\necho "ran $0 $*"\n');
      chmodSync(join(bin, name), 0o755);
      // A word with a leading dash is an option of pidwatch's own: `--` ends them.
      const args = ['--pid', String(sleeper.pid), ...(name.startsWith('-') ? ['--'] : []), name, 'arg'];
      const result = await runPidwatch(args, { cwd: bin, env: { PATH: `${bin}:${process.env['PATH'] ?? '/usr/bin:/bin'}` } });
      assert.equal(result.code, 0, describeRun(result));
      assert.equal(result.stdout, `ran ${join(bin, name)} arg\n`, describeRun(result));
    });
  }
});

describe('pidwatch: a command too long for one argument of /bin/sh -c', () => {
  // Arguments of `:`: 129 words of 1023 bytes and their spaces, 132,096 bytes, over 128 KiB.
  const filler = Array.from({ length: 129 }, () => 'a'.repeat(1023));

  test('over 128 KiB: exit 126, one line saying what to do, nothing run and no watcher left', async (t) => {
    const sleeper = sleeperFor(t);
    const here = freshDir('long');
    const marker = join(here, 'ran');
    const result = await runPidwatch(['--pid', String(sleeper.pid), 'touch', marker, ';', ':', ...filler], { cwd: here });
    assert.equal(result.code, 126, describeRun(result));
    assert.equal(result.stdout, '');
    assert.match(result.stderr, /^pidwatch: the command is \d+ bytes long, more than the 131071 that \/bin\/sh -c takes in one argument: put it in a script, and run the script\n$/, describeRun(result));
    assert.ok(!existsSync(marker), 'the command ran');
    assert.deepEqual(watchersOf(sleeper.pid), []);
  });

  test('just under 128 KiB still runs', async (t) => {
    const sleeper = sleeperFor(t);
    const here = freshDir('long-ok');
    // 'echo ok ; :' and 126 words of 1023 bytes, with their spaces: 129,035 bytes.
    const result = await runPidwatch(['--pid', String(sleeper.pid), 'echo', 'ok', ';', ':', ...filler.slice(0, 126)], { cwd: here });
    assert.equal(result.code, 0, describeRun(result));
    assert.equal(result.stdout, 'ok\n');
  });
});

describe('pidwatch --killer ./PROG', () => {
  test('a relative PROG is the one of the directory pidwatch started in, not the watcher\'s /', async (t) => {
    const sleeper = startSleeper();
    t.after(() => sleeper.stop());
    const here = freshDir('killer');
    const log = join(here, 'killed');
    writeFileSync(join(here, 'k.sh'), `#!/bin/sh\necho "$@" > '${log}'\nkill "$@"\n`);
    chmodSync(join(here, 'k.sh'), 0o755);
    const watch = start(t, ['--interval', '200ms', '--killer', './k.sh', '--pid', String(sleeper.pid), 'sleep 30'], { cwd: here });
    assert.ok(await waitFor(() => commandRuns(watch.pid) || !watch.running(), 20_000), watch.describe());
    await watcherReady(watch.pid);
    await sleeper.stop();
    // A liveness bound, from the death.
    const exit = await exitWithin(watch, 10_000, 'after the watched pid died');
    assert.equal(exit.signal, 'SIGHUP', watch.describe());
    assert.equal(readFileSync(log, 'utf8'), `-HUP ${watch.pid}\n`);
  });
});

/** Whether pidwatch `pid` is still starting: its Node launcher, a child of the script, runs. */
function launching(pid: number): boolean {
  return descendants(pid).some((p) => {
    try {
      return readFileSync(`/proc/${p}/cmdline`, 'latin1').includes('pidwatch.cjs\0') && !readFileSync(`/proc/${p}/environ`, 'latin1').includes('PIDWATCH_WATCHER=');
    } catch {
      return false;
    }
  });
}

describe('pidwatch: a signal sent while it starts reaches the command', () => {
  for (const sig of ['TERM', 'HUP', 'INT'] as const) {
    test(`SIG${sig} before the command runs: the command traps it and exits 3`, async (t) => {
      const sleeper = sleeperFor(t);
      const watch = start(t, ['--pid', String(sleeper.pid), `trap "echo got ${sig}; exit 3" ${sig}; while :; do sleep 0.1; done`], { cwd: dir });
      // While Node reads the options, tens of milliseconds before the command runs.
      await waitForQuick(() => launching(watch.pid) || !watch.running(), 5000);
      assert.ok(!commandRuns(watch.pid), 'the command already ran: the signal was not early');
      process.kill(watch.pid, `SIG${sig}`);
      // A liveness bound: the launcher's start is still to come.
      const exit = await exitWithin(watch, 20_000, `after an early SIG${sig}`);
      assert.equal(exit.code, 3, watch.describe());
      assert.equal(watch.stdout(), `got ${sig}\n`, watch.describe());
      assert.ok(isRunning(sleeper.pid));
    });
  }

  // bin/pidwatch hands a held signal on once the command catches it (its bit
  // in SigCgt), waiting some ten of its ticks (`sleep 0.01`) for that. Here
  // the command sets its trap only after a second, and a `sleep` first on
  // PATH makes each of those ticks last a second: the signal must wait for
  // the trap, not go at once to a command that would die of it.
  test('SIGUSR1 before the command runs, to a command that sets its trap a second later: held until the trap is set', async (t) => {
    const sleeper = sleeperFor(t);
    const here = freshDir('slow-trap');
    const realSleep = execFileSync('sh', ['-c', 'command -v sleep'], { encoding: 'utf8' }).trim();
    const bin = join(here, 'bin');
    mkdirSync(bin);
    const ticks = join(here, 'ticks');
    writeFileSync(join(bin, 'sleep'), `#!/bin/sh\ncase $* in 0.01) echo >> ${ticks}; exec ${realSleep} 1 ;; esac\nexec ${realSleep} "$@"\n`);
    chmodSync(join(bin, 'sleep'), 0o755);
    // Through env(1), which execs pidwatch in its own pid: the `sleep` first on PATH even before node's folder.
    const path = `${bin}:${binEnv()['PATH']}`;
    const watch = start(t, [`PATH=${path}`, BIN.pidwatch, '--pid', String(sleeper.pid), 'sleep 1; trap "echo got USR1; exit 3" USR1; while :; do sleep 0.1; done'], {
      command: 'env',
      cwd: here,
    });
    await waitForQuick(() => launching(watch.pid) || !watch.running(), 5000);
    assert.ok(!commandRuns(watch.pid), 'the command already ran: the signal was not early');
    process.kill(watch.pid, 'SIGUSR1');
    const exit = await exitWithin(watch, 20_000, 'after an early SIGUSR1');
    assert.equal(exit.code, 3, `the command did not catch the signal: it was sent before its trap was set; ${watch.describe()}`);
    assert.equal(watch.stdout(), 'got USR1\n', watch.describe());
    // Sent at the first tick that saw the trap: not after the ten ticks given to a command that never sets one.
    const waited = readFileSync(ticks, 'latin1').length;
    assert.ok(waited < 8, `the signal waited ${waited} ticks: the trap was not seen`);
  });

  test('SIGTERM before the command runs, to a command without a trap: pidwatch ends by SIGTERM, soon', async (t) => {
    const sleeper = sleeperFor(t);
    const here = freshDir('early');
    const marker = join(here, 'ran');
    const watch = start(t, ['--pid', String(sleeper.pid), `touch ${marker}; exec sleep 30`], { cwd: here });
    await waitForQuick(() => launching(watch.pid) || !watch.running(), 5000);
    assert.ok(!commandRuns(watch.pid), 'the command already ran: the signal was not early');
    const sent = performance.now();
    process.kill(watch.pid, 'SIGTERM');
    const exit = await exitWithin(watch, 20_000, 'after an early SIGTERM');
    assert.equal(exit.signal, 'SIGTERM', watch.describe());
    // Soon: a liveness bound (the launcher's start comes in it), half the 30 s the command would sleep.
    assert.ok(exit.at - sent < 15_000, `${Math.round(exit.at - sent)} ms`);
    assert.ok(existsSync(marker), 'the command never ran');
  });
});

/** waitFor, polling every millisecond: the window looked for lasts tens of milliseconds. */
async function waitForQuick(check: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!check()) {
    if (performance.now() > deadline) throw new Error(`not within ${timeoutMs} ms`);
    await sleep(1);
  }
}
