import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { readdirSync } from 'node:fs';
import { describe, test, type TestContext } from 'node:test';
import { PidStatClient, type Result } from '../../src/client/client.js';
import { readStartToken } from '../../src/sys/probe.js';
import { NO_TICKET } from '../../src/wire/pushwire.js';
import { startServer, type Server, type ServerOptions } from '../../src/daemon/server.js';
import { sleep, startDaemon, startSleeper, waitFor } from '../support/helpers.js';
import { massSubscriber, subscriptionTo } from '../support/subscriber.js';

/**
 * Subscriptions that would make the daemon work at a cost the sender
 * chooses (doc/protocol.md, Bounded work), over real UDP on loopback:
 * a thread id is refused (the client polls), so nothing is looked at
 * every 100 ms for it; 127.0.0.2 to 127.0.0.11 are one source for the
 * per-source cap; a death with 20 000 subscribers that never acknowledge
 * goes out while a polite client's questions are all answered.
 */

/** The SUBR state a subscription from `address` gets, after the ticket's round trip; undefined on silence. */
async function subscribeFrom(serverPort: number, address: string, pid: number, start: string): Promise<string | undefined> {
  const socket = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => socket.bind(0, address, resolve));
  const ask = (text: string) =>
    new Promise<string | undefined>((resolve) => {
      const timer = setTimeout(() => resolve(undefined), 2000);
      socket.once('message', (msg) => {
        clearTimeout(timer);
        resolve(msg.toString('latin1'));
      });
      socket.send(text, serverPort, '127.0.0.1');
    });
  try {
    const host = `abuse/${randomBytes(8).toString('hex')}`;
    const challenge = await ask(`SUBS ${pid} ${host} ${start} ${NO_TICKET}\n`);
    const ticket = /^SUBC \S+ \S+ ([0-9a-f]{24})$/.exec(challenge ?? '')?.[1];
    if (ticket === undefined) return undefined;
    return (await ask(`SUBS ${pid} ${host} ${start} ${ticket}\n`))?.split(' ')[3];
  } finally {
    socket.close();
  }
}

/** A library daemon on 127.0.0.1, closed after the test; what it logs besides. */
async function libraryDaemon(t: TestContext, options: ServerOptions = {}): Promise<{ server: Server; warnings: string[] }> {
  const warnings: string[] = [];
  const server = await startServer({ port: 0, bind: '127.0.0.1', hostname: 'me', onWarning: (text) => warnings.push(text), ...options });
  t.after(() => server.close());
  return { server, warnings };
}

test('a thread id that is no process is refused (SUBR -, the client polls), counted and logged; its process is kept', async (t) => {
  const { server, warnings } = await libraryDaemon(t);
  // Node runs threads of its own (libuv's pool, V8's platform workers).
  const threaded = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
  const exited = new Promise((resolve) => threaded.once('exit', resolve));
  t.after(async () => {
    threaded.kill('SIGKILL');
    await exited;
  });
  const pid = threaded.pid!;
  const tasks = () => readdirSync(`/proc/${pid}/task`).map(Number);
  assert.ok(await waitFor(() => tasks().length > 1, 10_000), `process ${pid} has no thread but itself`);
  const tid = tasks().find((task) => task !== pid)!;
  assert.equal(await subscribeFrom(server.address().port, '127.0.0.1', tid, readStartToken(tid)!), '-', `thread ${tid} of ${pid} was subscribed to`);
  assert.equal(server.stats.subscribeRefused, 1);
  assert.equal(server.stats.subscribed, 0);
  assert.ok(await waitFor(() => warnings.some((text) => text.includes(`the last for ${tid}, a thread and not a process`)), 2000), `not logged: ${JSON.stringify(warnings)}`);
  assert.equal(await subscribeFrom(server.address().port, '127.0.0.1', pid, readStartToken(pid)!), '1', `process ${pid} itself was refused`);
  assert.equal(server.stats.subscribed, 1);
});

test('127.0.0.2 to 127.0.0.11 are one source: a cap of 5 per source keeps 5 of their 10 subscriptions', async (t) => {
  const { server, warnings } = await libraryDaemon(t, { maxSubscriptionsPerSource: 5 });
  const sleeper = startSleeper();
  t.after(() => sleeper.stop());
  const start = readStartToken(sleeper.pid)!;
  const states: (string | undefined)[] = [];
  for (let i = 2; i <= 11; i++) states.push(await subscribeFrom(server.address().port, `127.0.0.${i}`, sleeper.pid, start));
  assert.deepEqual(states, ['1', '1', '1', '1', '1', '-', '-', '-', '-', '-']);
  assert.equal(server.stats.subscribeRefused, 5);
  assert.ok(await waitFor(() => warnings.some((text) => text.includes('from 127.0.0.0/8, at the cap of 5 per source')), 2000), `not logged: ${JSON.stringify(warnings)}`);
});

describe('a death with 20 000 subscribers that never acknowledge', { timeout: 180_000 }, () => {
  const SUBSCRIBERS = 20_000;
  /** The polite client asks this often. */
  const EVERY_MS = 10;

  test('a polite client asking every 10 ms through the fan-out and resends has every question answered', async (t) => {
    const daemon = await startDaemon(['--bind', '127.0.0.1', '--rate', '0', '--max-subscriptions-per-source', String(SUBSCRIBERS)]);
    const sleeper = startSleeper();
    const subscriber = await massSubscriber(daemon.port, { address: '127.0.0.2', acknowledge: false });
    const client = new PidStatClient({ port: daemon.port, local: false });
    t.after(async () => {
      subscriber.close();
      await client.close();
      await sleeper.stop();
      await daemon.stop();
    });
    const start = readStartToken(sleeper.pid)!;
    const subs = Array.from({ length: SUBSCRIBERS }, () => subscriptionTo(sleeper.pid, start));
    const { subscribed } = await subscriber.subscribeAll(subs, 120_000);
    assert.equal(subscribed, SUBSCRIBERS, `only ${subscribed} subscribed`);

    /** Every counter of the daemon's SIGUSR1 line, read anew. */
    const counters = async (): Promise<Map<string, number>> => {
      const before = daemon.log().length;
      daemon.child.kill('SIGUSR1');
      await waitFor(() => daemon.log().indexOf('counters: ', before) !== -1, 10_000);
      const line = daemon.log().slice(daemon.log().indexOf('counters: ', before)).split('\n')[0]!;
      return new Map(line.slice('counters: '.length).split(', ').map((pair) => [pair.split(' ')[0]!, Number(pair.split(' ')[1])]));
    };

    const answers: Promise<Result>[] = [];
    let asking = true;
    const polite = (async () => {
      while (asking) {
        answers.push(client.query({ host: '127.0.0.1', pid: process.pid }));
        await sleep(EVERY_MS);
      }
    })();
    await sleep(200);
    await sleeper.stop();
    // Every notice sent, resent and given up on: the fan-out and its resends are over.
    let last = new Map<string, number>();
    const over = await waitFor(async () => (last = await counters()).get('notifyUnacknowledged') === SUBSCRIBERS, 120_000);
    asking = false;
    await polite;
    const results = await Promise.all(answers);
    const unanswered = results.filter((result) => result.state !== 'exists');
    const worst = Math.max(...results.map((result) => result.ms));
    process.stdout.write(`# push-abuse: ${results.length} polite questions during the fan-out, the slowest answered in ${Math.round(worst)} ms; ` +
      `the subscriber got ${subscriber.copies} notices; daemon: notified ${last.get('notified')}, unacknowledged ${last.get('notifyUnacknowledged')}\n`);
    assert.ok(over, `the fan-out did not end: ${JSON.stringify([...last])}`);
    assert.equal(last.get('notified'), SUBSCRIBERS);
    assert.ok(subscriber.copies > 0, 'the subscriber heard no notice');
    assert.deepEqual(unanswered.map((result) => result.state), [], `${unanswered.length} of ${results.length} polite questions were not answered`);
  });
});
