import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, lstatSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { after, describe, test, type TestContext } from 'node:test';
import { ask, deadPid, freePort, IS_ROOT, isRunning, runBin, startDaemon, startSleeper, waitFor } from '../support/helpers.js';
import { pidIn, stopDetached } from '../support/detached.js';

/**
 * pidstatd's --pidfile (pidstatd(8)): made absolute before detaching,
 * never written through a symbolic link, refused while it names a live
 * pidstatd, replaced when stale, and removed at stop only if it still holds
 * the daemon's pid. Every daemon started here is stopped here by its pid.
 */

const scratch = mkdtempSync(join(tmpdir(), 'pidstatd-pidfile-'));
after(() => rmSync(scratch, { recursive: true, force: true }));
let count = 0;
function scratchFile(name: string): string {
  return join(scratch, `${++count}-${name}`);
}

const FORMS = ['--foreground', 'detached'] as const;
type Form = (typeof FORMS)[number];

/**
 * Starts pidstatd with --pidfile `pidfile` (relative to `cwd` if given), in
 * the foreground or detached, and returns the pid that SIGTERM stops once it
 * answers; stopped after the test.
 */
async function startWith(t: TestContext, form: Form, pidfile: string, cwd?: string): Promise<{ pid: number; port: number; log(): string }> {
  if (form === '--foreground') {
    const daemon = await startDaemon(['--bind', '127.0.0.1', '--pidfile', pidfile]);
    t.after(() => daemon.stop());
    return { pid: daemon.pid, port: daemon.port, log: () => `its log: ${JSON.stringify(daemon.log())}, exit ${daemon.child.exitCode ?? daemon.child.signalCode}` };
  }
  const port = await freePort();
  const absolute = cwd === undefined ? pidfile : join(cwd, pidfile);
  let supervisor: number | undefined;
  t.after(() => stopDetached(absolute, ...(supervisor === undefined ? [] : [supervisor])));
  const result = await runBin('pidstatd', ['--port', String(port), '--bind', '127.0.0.1', '--pidfile', pidfile], { timeoutMs: 10_000, ...(cwd !== undefined && { cwd }) });
  assert.equal(result.code, 0, `started: ${result.stderr}`);
  const pid = /detached as pid ([0-9]+)/.exec(result.stderr)?.[1];
  assert.ok(pid !== undefined, `names its pid: ${result.stderr}`);
  supervisor = Number(pid);
  return { pid: supervisor, port, log: () => 'detached: its log is in syslog' };
}

/** SIGTERM to pid; resolves once it is gone. */
async function stop(pid: number): Promise<void> {
  process.kill(pid, 'SIGTERM');
  assert.ok(await waitFor(() => !isRunning(pid), 5000), `pid ${pid} still runs 5 s after SIGTERM`);
}

/** Waits for the pidfile of a foreground daemon, written just after its "listening" line. */
async function holds(file: string, pid: number): Promise<boolean> {
  return waitFor(() => pidIn(file) === pid, 2000);
}

describe('a symbolic link planted where the pidfile goes', () => {
  for (const form of FORMS) {
    test(`${form}: a link made by another user in a sticky directory is replaced, never followed`, { timeout: 20_000 }, async (t) => {
      if (!IS_ROOT) return t.skip('needs root (to be the victim, and to plant the link as nobody)');
      // /tmp-like: world-writable and sticky, reachable by nobody.
      const sticky = mkdtempSync(join(tmpdir(), 'pidstatd-sticky-'));
      t.after(() => rmSync(sticky, { recursive: true, force: true }));
      chmodSync(sticky, 0o1777);
      const victim = scratchFile('precious');
      writeFileSync(victim, 'root data\n', { mode: 0o644 });
      const link = join(sticky, 'pidstatd.pid');
      const planted = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'ln', '-s', victim, link], { encoding: 'utf8' });
      if (planted.error !== undefined || planted.status !== 0) return t.skip(`cannot plant a link as nobody: ${planted.error?.message ?? planted.stderr}`);
      assert.equal(lstatSync(link).uid, 65534, 'the link is nobody\'s');

      const { pid, log } = await startWith(t, form, link);
      assert.ok(await holds(link, pid), `the pidfile holds ${pid}: ${JSON.stringify(readFileSync(link, 'latin1'))}`);
      assert.equal(lstatSync(link).isSymbolicLink(), false, 'the link was replaced by a file of its own');
      assert.equal(readFileSync(victim, 'latin1'), 'root data\n', 'the file the link pointed to is untouched');
      await stop(pid);
      assert.equal(readFileSync(victim, 'latin1'), 'root data\n', 'still untouched after stop');
      assert.ok(await waitFor(() => !existsSync(link), 5000), `its own pidfile is removed; ${log()}`);
    });
  }
});

describe('a relative --pidfile', () => {
  test('detached: names the file in the starting command\'s folder, which is removed at stop; a file of that name in / is untouched', { timeout: 20_000 }, async (t) => {
    const cwd = mkdtempSync(join(scratch, 'cwd-'));
    const name = `pidstatd-test-${process.pid}-${++count}.pid`;
    // The detached daemon works in /: a path left relative would name this file.
    const decoy = join('/', name);
    let decoyMade = false;
    try {
      writeFileSync(decoy, 'not a pidfile\n', { flag: 'wx' });
      decoyMade = true;
      t.after(() => rmSync(decoy, { force: true }));
    } catch {
      t.diagnostic(`cannot write ${decoy}: only the starting folder is checked`);
    }
    const { pid } = await startWith(t, 'detached', name, cwd);
    assert.equal(pidIn(join(cwd, name)), pid, 'the pidfile is in the folder the command was started from');
    await stop(pid);
    assert.equal(existsSync(join(cwd, name)), false, 'removed at stop');
    if (decoyMade) assert.equal(readFileSync(decoy, 'latin1'), 'not a pidfile\n', `${decoy} is untouched`);
  });
});

describe('a pidfile naming a live pidstatd', () => {
  for (const form of FORMS) {
    test(`${form}: is refused, exit 1 with a line naming the file and that pid; the file and the daemon are left as they were`, { timeout: 20_000 }, async (t) => {
      const pidfile = scratchFile('live.pid');
      const first = await startDaemon(['--bind', '127.0.0.1', '--pidfile', pidfile]);
      t.after(() => first.stop());
      assert.ok(await holds(pidfile, first.pid), 'the first daemon wrote its pidfile');
      const port = await freePort();
      t.after(() => stopDetached(pidfile));
      const args = ['--port', String(port), '--bind', '127.0.0.1', '--pidfile', pidfile, ...(form === 'detached' ? [] : ['--foreground'])];
      const result = await runBin('pidstatd', args, { timeoutMs: 5000 });
      assert.deepEqual({ code: result.code, signal: result.signal }, { code: 1, signal: null }, `refused; stderr: ${result.stderr}`);
      assert.equal(result.stderr.trim().split('\n').length, 1, `one line: ${result.stderr}`);
      assert.ok(result.stderr.includes(pidfile), `names the file: ${result.stderr}`);
      assert.match(result.stderr, new RegExp(`\\b${first.pid}\\b`), 'names the pid');
      assert.equal(pidIn(pidfile), first.pid, 'the pidfile still names the first daemon');
      assert.equal(await ask(port, 'PIDR 1 l 3', { waitMs: 300 }), undefined, 'nothing serves the second port');
      assert.equal(await ask(first.port, 'PIDR 1 l 3'), 'EXIS 1 1 l', 'the first daemon answers on');
    });
  }
});

describe('a stale pidfile', () => {
  const stale: Record<string, () => Promise<{ text: string; done?: () => Promise<void> }>> = {
    'a dead pid': async () => ({ text: `${await deadPid()}\n` }),
    'a live process that is not pidstatd': async () => {
      const sleeper = startSleeper();
      return { text: `${sleeper.pid}\n`, done: () => sleeper.stop() };
    },
    junk: async () => ({ text: 'pidstatd was here\n' }),
  };
  for (const [what, make] of Object.entries(stale)) {
    test(`naming ${what}: is replaced (--foreground)`, { timeout: 20_000 }, async (t) => {
      const pidfile = scratchFile('stale.pid');
      const { text, done } = await make();
      if (done) t.after(done);
      writeFileSync(pidfile, text);
      const { pid } = await startWith(t, '--foreground', pidfile);
      assert.ok(await holds(pidfile, pid), `the pidfile now holds ${pid}: ${JSON.stringify(readFileSync(pidfile, 'latin1'))}`);
    });
  }
});

describe('at stop, the pidfile is removed only if it still holds the daemon\'s pid', () => {
  for (const form of FORMS) {
    test(`${form}: a pidfile another process took over is left in place`, { timeout: 20_000 }, async (t) => {
      const pidfile = scratchFile('taken.pid');
      const { pid } = await startWith(t, form, pidfile);
      assert.ok(await holds(pidfile, pid), 'written');
      const other = startSleeper();
      t.after(() => other.stop());
      writeFileSync(pidfile, `${other.pid}\n`);
      await stop(pid);
      assert.equal(readFileSync(pidfile, 'latin1'), `${other.pid}\n`, `${basename(pidfile)} still names the other process`);
    });
  }
});
