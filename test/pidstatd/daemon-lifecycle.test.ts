import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { descendantsOf, pidsWithArgs, readPid, runningChildrenOf, spawnProc, stopDetached, stopPids, scratchFiles } from '../support/detached.js';
import {
  ask,
  BIN,
  binCommand,
  deadPid,
  exchange,
  freePort,
  IS_ROOT,
  ROOT,
  run,
  runBin,
  sleep,
  startDaemon,
  waitFor,
} from '../support/helpers.js';

/**
 * pidstatd's life as a process (pidstatd(8)): refusing a pidfile it
 * cannot write (in the foreground and detached), stopping on signals,
 * --debug, the command line, the non-root warning and the `unknown`
 * answer. Its socket (a busy port, socket activation) is
 * daemon-sockets.test.ts's, which runs again through Node's dgram
 * (dgram-io.test.ts); the detached daemon itself (detaching, its
 * supervisor, restarts) is detached.test.ts's. Real processes and real
 * UDP on loopback; every process started here is stopped here by its pid.
 */

const NOBODY = ['--reuid=65534', '--regid=65534', '--clear-groups'];
const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;

/** A path in this file's scratch folder that nothing uses yet. */
const scratchFile = scratchFiles('pidstatd-lifecycle-');

/** The lines of a text, without the empty last one. */
function lines(text: string): string[] {
  return text.split('\n').filter((line, i, all) => line !== '' || i < all.length - 1);
}

// ---------------------------------------------------------------------------

describe('pidstatd --foreground', () => {
  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    test(`${sig} closes the socket, removes the pidfile (which held its own pid) and exits 0`, { timeout: 20_000 }, async (t) => {
      const pidfile = scratchFile('fg.pid');
      const daemon = await startDaemon(['--bind', '127.0.0.1', '--pidfile', pidfile]);
      t.after(() => daemon.stop());
      // Written just after the "listening" line: wait for the whole pid, not just the file.
      const written = () => {
        try {
          return /^[0-9]+\n?$/.test(readFileSync(pidfile, 'latin1'));
        } catch {
          return false;
        }
      };
      assert.ok(await waitFor(written, 10_000), 'the pidfile is written');
      assert.equal(readPid(pidfile), daemon.pid, 'the pidfile holds the daemon\'s own pid');
      assert.equal(await ask(daemon.port, 'PIDR 1 f 3'), 'EXIS 1 1 f');
      assert.doesNotMatch(daemon.log(), /PIDR/, 'without --debug, datagrams are not logged');
      const ended = once(daemon.child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
      daemon.child.kill(sig);
      const [code, how] = await ended;
      assert.deepEqual({ code, signal: how }, { code: 0, signal: null }, `exit after ${sig}; log: ${daemon.log()}`);
      assert.equal(existsSync(pidfile), false, 'the pidfile is removed');
      assert.equal(await ask(daemon.port, 'PIDR 1 f 3', { waitMs: 300 }), undefined, 'the port no longer answers');
    });
  }

  test('--nofork is --foreground: it stays attached, serves, and exits 0 on SIGTERM', { timeout: 20_000 }, async (t) => {
    const daemon = spawnProc(...binCommand('pidstatd', ['--nofork', '--port', '0', '--bind', '127.0.0.1']));
    t.after(() => daemon.stop());
    const port = Number((await daemon.waitFor(/listening on .*:([0-9]+)$/m))[1]);
    assert.equal(daemon.isDone(), false, 'still running: it did not detach');
    assert.equal(await ask(port, 'PIDR 1 n 3'), 'EXIS 1 1 n');
    assert.deepEqual(runningChildrenOf(daemon.pid), [], 'no supervisor, no child');
    assert.deepEqual(await daemon.stop(), { code: 0, signal: null });
  });

  test('--debug logs each datagram on stderr with its fate', { timeout: 20_000 }, async (t) => {
    const daemon = await startDaemon(['--bind', '127.0.0.1', '--debug']);
    t.after(() => daemon.stop());
    const dead = await deadPid();
    assert.equal(await ask(daemon.port, 'PIDR 1 dbgA 3'), 'EXIS 1 1 dbgA');
    assert.deepEqual(await exchange(daemon.port, 'PIDR 0 dbgB 3', { waitMs: 200 }), []);
    assert.deepEqual(await exchange(daemon.port, 'PIDR 1 dbgC 2', { waitMs: 200 }), []);
    assert.equal(await ask(daemon.port, `PIDR ${dead} dbgD 3`), `EXIS ${dead} 0 dbgD`);
    const tags = ['dbgA', 'dbgB', 'dbgC', 'dbgD'];
    assert.ok(await waitFor(() => tags.every((tag) => daemon.log().includes(tag)), 10_000), `a line for each datagram: ${daemon.log()}`);
    const about = (tag: string) => lines(daemon.log()).filter((line) => line.includes(tag));
    for (const tag of tags) assert.equal(about(tag).length, 1, `one line for the datagram ${tag}: ${daemon.log()}`);
    for (const tag of tags) assert.match(about(tag)[0]!, /127\.0\.0\.1/, `the line for ${tag} names the source`);
    assert.match(about('dbgA')[0]!, /answered.*EXIS 1 1 dbgA/, 'answered, with the reply');
    assert.match(about('dbgD')[0]!, new RegExp(`answered.*EXIS ${dead} 0 dbgD`), 'answered, with the reply');
    assert.match(about('dbgB')[0]!, /dropped/, 'PIDR 0 is dropped as malformed');
    assert.match(about('dbgB')[0]!, /pid/, 'and the line says what is wrong');
    assert.doesNotMatch(about('dbgB')[0]!, /answered|EXIS/);
    assert.match(about('dbgC')[0]!, /no reply/, 'flags that ask for no reply');
    assert.doesNotMatch(about('dbgC')[0]!, /answered|EXIS/);
  });
});

/**
 * A free port below the kernel's ephemeral range (32768 and up, by default):
 * no daemon another test starts on port 0 can take it meanwhile, so an
 * answer there can only be from the daemon under test.
 */
async function quietPort(): Promise<number> {
  for (;;) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    const socket = dgram.createSocket('udp4');
    const free = await new Promise<boolean>((resolve) => {
      socket.once('error', () => resolve(false));
      socket.bind(port, '127.0.0.1', () => resolve(true));
    });
    await new Promise<void>((resolve) => socket.close(() => resolve()));
    if (free) return port;
  }
}

describe('a pidfile that cannot be written', () => {
  for (const form of ['--foreground', 'detached'] as const) {
    test(`${form}: exits 1 with one line naming the pidfile, and serves nothing`, { timeout: 20_000 }, async (t) => {
      const port = await quietPort();
      const pidfile = join(scratchFile('no-such-folder'), 'pidstatd.pid');
      t.after(() => stopPids(pidsWithArgs('--pidfile', pidfile)));
      const args = ['--port', String(port), '--bind', '127.0.0.1', '--pidfile', pidfile, ...(form === 'detached' ? [] : ['--foreground'])];
      // A daemon that reported the failure yet served on would be ended by run's timeout.
      const result = await runBin('pidstatd', args, { timeoutMs: 3000 });
      // Looked at the moment the command has exited: a script goes on at once.
      const left = pidsWithArgs('--pidfile', pidfile);
      const reply = await ask(port, 'PIDR 1 p 3', { waitMs: 300 });
      const error = lines(result.stderr).filter((line) => !/listening on/.test(line));
      assert.deepEqual({ code: result.code, signal: result.signal }, { code: 1, signal: null }, `exits 1 by itself; stderr: ${result.stderr}`);
      assert.equal(error.length, 1, `one line about the failure: ${JSON.stringify(result.stderr)}`);
      assert.ok(error[0]!.includes(pidfile), `the line names the pidfile: ${error[0]}`);
      assert.doesNotMatch(result.stderr, /^\s+at /m, 'no stack trace');
      assert.deepEqual(left, [], 'no process of it runs once the command has exited');
      assert.equal(reply, undefined, 'nothing answers on the port');
    });
  }
});

describe('the command line', () => {
  test('--version prints "pidstatd <version>" to stdout and exits 0', async () => {
    const result = await runBin('pidstatd', ['--version'], { timeoutMs: 10_000 });
    assert.deepEqual({ code: result.code, stdout: result.stdout, stderr: result.stderr }, { code: 0, stdout: `pidstatd ${VERSION}\n`, stderr: '' });
  });

  test('--help prints the usage to stdout and exits 0', async () => {
    const result = await runBin('pidstatd', ['--help'], { timeoutMs: 10_000 });
    assert.equal(result.code, 0);
    assert.equal(result.stderr, '');
    assert.match(result.stdout, /usage/i);
    for (const option of ['--port', '--bind', '--foreground', '--allow', '--rate', '--pidfile', '--debug', '--version']) {
      assert.ok(result.stdout.includes(option), `the usage lists ${option}`);
    }
  });

  test('usage errors exit 64 with one line on stderr pointing to --help, and start nothing', { timeout: 30_000 }, async (t) => {
    // Should a bad flag be ignored, the daemon would listen only on loopback
    // and on an ephemeral port (PIDSTAT_PORT), and is stopped by run's timeout.
    const fallbackPort = String(await freePort());
    const pidfile = scratchFile('usage.pid');
    t.after(() => stopDetached(pidfile));
    const cases: string[][] = [
      ['--foreground', '--bind', '127.0.0.1', '--bogus'],
      ['--foreground', '--bind', '127.0.0.1', '--port', 'abc'],
      ['--foreground', '--bind', '127.0.0.1', '--rate', '-1'],
      ['--foreground', '--bind', '127.0.0.1', '--allow', 'notacidr'],
      ['--foreground', '--bind', 'notanaddress'],
      ['--foreground', '--bind', '127.0.0.1', 'stray'],
      // Detached: the error comes before anything detaches.
      ['--bind', '127.0.0.1', '--pidfile', pidfile, '--bogus'],
      ['--bind', '127.0.0.1', '--pidfile', pidfile, 'stray'],
    ];
    const results = await Promise.all(
      cases.map((args) => runBin('pidstatd', args, { timeoutMs: 8000, env: { PIDSTAT_PORT: fallbackPort } })),
    );
    const problems: string[] = [];
    cases.forEach((args, i) => {
      const { code, stdout, stderr } = results[i]!;
      const text = lines(stderr);
      if (code !== 64) problems.push(`${args.join(' ')}: exit ${code}, not 64 (stderr ${JSON.stringify(stderr)})`);
      if (text.length !== 1) problems.push(`${args.join(' ')}: ${text.length} lines on stderr, not 1: ${JSON.stringify(stderr)}`);
      else if (!text[0]!.includes('--help')) problems.push(`${args.join(' ')}: the line does not point to --help: ${text[0]}`);
      if (stdout !== '') problems.push(`${args.join(' ')}: stdout ${JSON.stringify(stdout)}`);
    });
    assert.deepEqual(problems, []);
    assert.equal(existsSync(pidfile), false, 'nothing detached');
    assert.equal(await ask(Number(fallbackPort), 'PIDR 1 u 3', { waitMs: 200 }), undefined, 'nothing listens');
  });
});

describe('as a user other than root', () => {
  test('warns exactly once what it cannot read of other users\' processes, and answers exists for them (EPERM)', { timeout: 20_000 }, async (t) => {
    let command = process.execPath;
    let prefix: string[] = [];
    if (IS_ROOT) {
      const check = await run('setpriv', [...NOBODY, ...binCommand('pidstatd', ['--version']).flat()], { timeoutMs: 10_000, cwd: '/' })
        .catch((err: Error) => ({ code: -1, stderr: err.message, stdout: '' }));
      if (check.code !== 0) return t.skip(`cannot run pidstatd as nobody (setpriv or a repo unreadable by others): ${check.stderr.trim()}`);
      command = 'setpriv';
      prefix = [...NOBODY, process.execPath];
    }
    const [, daemonArgs] = binCommand('pidstatd', ['--foreground', '--port', '0', '--bind', '127.0.0.1']);
    const daemon = spawnProc(command, [...prefix, ...daemonArgs], { cwd: '/' });
    t.after(() => daemon.stop());
    const port = Number((await daemon.waitFor(/listening on .*:([0-9]+)$/m))[1]);
    // Questions about another user's process (pid 1 is root's) bring no more warnings.
    assert.equal(await ask(port, 'PIDR 1 w 3'), 'EXIS 1 1 w');
    assert.equal(await ask(port, 'PIDR 1 w 3'), 'EXIS 1 1 w');
    const warned = () => lines(daemon.stderr()).filter((line) => /warn|EPERM|root/i.test(line));
    assert.ok(await waitFor(() => warned().length > 0, 10_000), `no warning: ${JSON.stringify(daemon.stderr())}`);
    // A moment for a second one, which must not come.
    await sleep(100);
    const warnings = warned();
    assert.equal(warnings.length, 1, `one warning line: ${JSON.stringify(daemon.stderr())}`);
    assert.match(warnings[0]!, /other users' processes are still seen/i);
    assert.match(warnings[0]!, /EPERM/);
    assert.deepEqual(await daemon.stop(), { code: 0, signal: null });
  });

  test('as root, there is no such warning', { timeout: 20_000 }, async (t) => {
    if (!IS_ROOT) return t.skip('not running as root');
    const daemon = await startDaemon(['--bind', '127.0.0.1']);
    t.after(() => daemon.stop());
    assert.equal(await ask(daemon.port, 'PIDR 1 w 3'), 'EXIS 1 1 w');
    assert.doesNotMatch(daemon.log(), /warn|other users|\/proc/i);
  });

  test('without /proc, another user\'s process exists: kill()\'s EPERM proves it, no /proc needed', { timeout: 20_000 }, async (t) => {
    if (!IS_ROOT) return t.skip('needs root, to unmount /proc in a mount namespace and become nobody');
    const inner = `umount -l /proc && exec setpriv ${NOBODY.join(' ')} /bin/sh '${BIN.pidstatd}' --foreground --port 0 --bind 127.0.0.1`;
    const wrapper = spawnProc('unshare', ['--mount', '--fork', '--kill-child', 'sh', '-c', inner], { cwd: '/' });
    t.after(async () => {
      await stopPids(descendantsOf(wrapper.pid));
      await wrapper.stop('SIGKILL');
    });
    let port: number;
    try {
      port = Number((await wrapper.waitFor(/listening on .*:([0-9]+)$/m))[1]);
    } catch (err) {
      if (!/pidstatd/.test(wrapper.stderr())) return t.skip(`unshare/umount failed here: ${wrapper.stderr().trim() || (err as Error).message}`);
      throw err;
    }
    const dead = await deadPid();
    assert.equal(await ask(port, 'PIDR 1 h 7'), 'EXIS 1 1 h', 'flags 7: exists');
    assert.equal(await ask(port, 'PIDR 1 h 15'), 'EXIS 1 1 h', 'flags 15: exists, with no start token (no /proc to read it from)');
    assert.equal(await ask(port, 'PIDR 1 h 3'), 'EXIS 1 1 h', 'flags 3: exists');
    assert.equal(await ask(port, 'PIDR 1 h 2', { waitMs: 500 }), undefined, 'flags 2 (dead only): no reply');
    assert.equal(await ask(port, `PIDR ${dead} h 7`), `EXIS ${dead} 0 h`, 'a dead pid is still dead (ESRCH needs no /proc)');
  });
});
