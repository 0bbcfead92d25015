import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { PidStatClient } from '../../src/client/client.js';
import { INSPECT_PORT_OPTION } from '../../src/daemon/inspector.js';
import { readStartToken } from '../../src/sys/probe.js';
import { sleep, startDaemon } from '../support/helpers.js';
import { NOBODY, startManyThreads } from '../support/threads.js';

/**
 * An attacker on the host with no privilege: one process of many threads,
 * whose /proc/PID/stat costs the kernel a walk over every thread, and
 * questions that make the daemon read its start token (doc/protocol.md,
 * Bounded work). The daemon reads the token from the task file of the
 * pid's own thread, at one cost whatever the thread count, so everyone
 * else is still answered.
 */

const FLOODER = fileURLToPath(new URL('../support/flooder.js', import.meta.url));
const THREADS = 8000;
const PER_SECOND = 2400;

test(`a target of ${THREADS} threads asked ${PER_SECOND} times a second with its start token, from one local user: a polite client's questions are all answered`, async (t) => {
  const target = await startManyThreads(THREADS);
  if ('reason' in target) {
    t.skip(target.reason);
    return;
  }
  const daemon = await startDaemon();
  const asNobody = process.getuid?.() === 0 ? { uid: NOBODY, gid: NOBODY } : {};
  let flooder: ReturnType<typeof spawn> | undefined;
  const client = new PidStatClient({ port: daemon.port, local: false, timeoutMs: 1000, tries: 5 });
  try {
    const start = readStartToken(target.pid);
    assert.ok(start !== undefined, 'the target has a start token');
    // Flags 2 and the right token: the daemon reads the token, finds it alive, and answers nothing.
    const attack = `PIDR ${target.pid} attack/0123456789abcdef 2 ${start}`;
    flooder = spawn(process.execPath, [INSPECT_PORT_OPTION, FLOODER, String(daemon.port), String(PER_SECOND), '10', attack], { stdio: ['ignore', 'pipe', 'inherit'], ...asNobody });
    let sent = '';
    flooder.stdout!.setEncoding('utf8').on('data', (chunk: string) => (sent += chunk));
    const flooded = new Promise<void>((resolve) => flooder!.once('exit', () => resolve()));
    // Let the flood fill whatever queue it fills.
    await sleep(1500);
    const questions: Promise<{ state: string }>[] = [];
    for (let i = 0; i < 60; i++) {
      questions.push(client.query({ host: '127.0.0.1', pid: process.pid }));
      await sleep(100);
    }
    const states = (await Promise.all(questions)).map((result) => result.state);
    await flooded;
    assert.ok(Number(sent) >= PER_SECOND * 8, `the flood ran: ${sent.trim()} questions sent`);
    const missed = states.filter((state) => state !== 'exists').length;
    assert.equal(missed, 0, `${missed} of ${states.length} polite questions went unanswered: ${states.join(' ')}`);
  } finally {
    client.close();
    if (flooder !== undefined && flooder.exitCode === null && flooder.signalCode === null) flooder.kill('SIGKILL');
    await daemon.stop();
    await target.stop();
  }
});
