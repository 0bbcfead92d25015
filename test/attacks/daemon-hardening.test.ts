import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { ask, binCommand, binEnv, freePort, sleep } from '../support/helpers.js';
import { pidIn, stopDetached } from '../support/detached.js';

/**
 * What a daemon must survive or refuse (pidstatd(8)): a caller's
 * descriptor it must not keep (a pipe on fd 40), and a stderr it cannot
 * write (/dev/full). Every daemon started here is stopped here by its pid.
 */

const scratch = mkdtempSync(join(tmpdir(), 'pidstatd-hardening-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

/** Asks every 100 ms until a reply comes or `timeoutMs` passes. */
async function answerWithin(port: number, payload: string, timeoutMs: number): Promise<string | undefined> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    const reply = await ask(port, payload, { waitMs: 100 });
    if (reply !== undefined) return reply;
  }
  return undefined;
}

describe('a detached daemon keeps none of its caller\'s descriptors', () => {
  test('a pipe the caller left open on fd 40 reaches EOF once the starting command has exited', { timeout: 20_000 }, async (t) => {
    const port = await freePort();
    const pidfile = join(scratch, 'fd40.pid');
    let supervisor = 0;
    t.after(() => stopDetached(pidfile, supervisor));
    const stdio: ('ignore' | 'pipe')[] = Array.from({ length: 41 }, () => 'ignore');
    stdio[2] = 'pipe';
    stdio[40] = 'pipe';
    const child = spawn(...binCommand('pidstatd', ['--port', String(port), '--bind', '127.0.0.1', '--pidfile', pidfile]), { stdio, env: binEnv() });
    let stderr = '';
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const pipe = (child.stdio as unknown as NodeJS.ReadableStream[])[40]!;
    const eof = new Promise<number>((resolve) => {
      pipe.on('end', () => resolve(performance.now()));
      pipe.on('error', () => resolve(performance.now()));
      pipe.resume();
    });
    const code = await new Promise<number | null>((resolve) => child.on('exit', (status) => resolve(status)));
    const exited = performance.now();
    assert.equal(code, 0, `started: ${stderr}`);
    supervisor = pidIn(pidfile) ?? 0;
    assert.ok(supervisor !== 0, 'the pidfile names the supervisor');
    const closedAt = await Promise.race([eof, sleep(2000).then(() => undefined)]);
    assert.ok(closedAt !== undefined, 'the pipe on fd 40 is still held 2 s after the starting command exited');
    t.diagnostic(`EOF ${Math.max(0, Math.round(closedAt - exited))} ms after the starting command exited`);
    assert.equal(await ask(port, 'PIDR 1 fd 3'), 'EXIS 1 1 fd', 'the daemon answers');
  });
});

describe('a log it cannot write never stops the daemon', () => {
  test('--foreground with stderr on /dev/full answers, and exits 0 on SIGTERM', { timeout: 20_000 }, async (t) => {
    const port = await freePort();
    const full = openSync('/dev/full', 'w');
    const daemon = spawn(...binCommand('pidstatd', ['--foreground', '--port', String(port), '--bind', '127.0.0.1']), { stdio: ['ignore', 'ignore', full], env: binEnv() });
    closeSync(full);
    const exited = new Promise<[number | null, NodeJS.Signals | null]>((resolve) => daemon.on('exit', (code, sig) => resolve([code, sig])));
    t.after(() => daemon.kill('SIGKILL'));
    assert.equal(await answerWithin(port, 'PIDR 1 full 3', 3000), 'EXIS 1 1 full', `answers (exit ${daemon.exitCode})`);
    daemon.kill('SIGTERM');
    assert.deepEqual(await exited, [0, null], 'exit 0 on SIGTERM');
  });
});
