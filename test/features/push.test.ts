import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test, type TestContext } from 'node:test';
import { PidStatClient } from '../../src/client/client.js';
import { loadLinuxCalls } from '../../src/sys/native.js';
import { readStartToken } from '../../src/sys/probe.js';
import { decodeRequest, encodeReply } from '../../src/wire/protocol.js';
import { NO_TICKET } from '../../src/wire/pushwire.js';
import { startServer, type Server } from '../../src/daemon/server.js';
import { waitForDeath } from '../../src/deaths/watch.js';
import { freePort, runBin, sleep, startDaemon, startSleeper, waitFor, watchSetUp, type RunResult } from '../support/helpers.js';
import { commandStarted, exitWithin, start, watcherReady } from '../support/jobs.js';
import { startPerlDaemon } from '../support/perl-daemon.js';

/**
 * Push death notices (doc/protocol.md, Death notices): a daemon tells a
 * subscriber of a watched death the moment it happens; it keeps nothing for
 * an address that has not echoed its ticket; a notice counts only with the
 * subscription's own cookie (and key); pidwatch falls back to polling where
 * the daemon offers no subscription.
 */

const dir = mkdtempSync(join(tmpdir(), 'pidstat-push-'));
after(() => rmSync(dir, { recursive: true, force: true }));

interface Peer {
  socket: dgram.Socket;
  port: number;
  /** Every datagram received, as text. */
  got: string[];
  /** Sends `text` to the server and waits up to `ms` for the next datagram. */
  ask(text: string, ms?: number): Promise<string | undefined>;
  close(): void;
}

async function peer(serverPort: number): Promise<Peer> {
  const socket = dgram.createSocket('udp4');
  const got: string[] = [];
  let waiter: ((text: string) => void) | undefined;
  socket.on('message', (msg) => {
    const text = msg.toString('latin1');
    got.push(text);
    waiter?.(text);
  });
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  return {
    socket,
    port: socket.address().port,
    got,
    ask(text, ms = 1000) {
      return new Promise((resolve) => {
        const timer = setTimeout(() => {
          waiter = undefined;
          resolve(undefined);
        }, ms);
        waiter = (reply) => {
          clearTimeout(timer);
          waiter = undefined;
          resolve(reply);
        };
        socket.send(text, serverPort, '127.0.0.1');
      });
    },
    close: () => socket.close(),
  };
}

function describeRun(result: RunResult): string {
  return `exit ${result.code}${result.signal ? ` (${result.signal})` : ''}; stdout: ${JSON.stringify(result.stdout)}; stderr: ${JSON.stringify(result.stderr)}`;
}

describe('the daemon\'s subscriptions', () => {
  let server: Server;
  const started = startServer({ port: 0, bind: '127.0.0.1', hostname: 'me', maxSubscriptionsPerSource: 2 }).then((s) => (server = s));
  after(async () => (await started).close());

  test('a first subscription gets only a ticket, no larger than it; one that echoes it is kept, and told of the death at once', async () => {
    await started;
    const sleeper = startSleeper();
    const start = readStartToken(sleeper.pid)!;
    const client = await peer(server.address().port);
    try {
      const host = `h/${randomBytes(8).toString('hex')}`;
      const first = `SUBS ${sleeper.pid} ${host} ${start} ${NO_TICKET}\n`;
      const challenge = await client.ask(first);
      const match = new RegExp(`^SUBC ${sleeper.pid} ${host} ([0-9a-f]{24})$`).exec(challenge ?? '');
      assert.ok(match, `no ticket: ${JSON.stringify(challenge)}`);
      assert.ok(challenge!.length <= first.length, 'the challenge is larger than the subscription');
      assert.equal(server.stats.subscribed, 0, 'something was kept for an address not yet proven');

      const subscribed = await client.ask(`SUBS ${sleeper.pid} ${host} ${start} ${match[1]}\n`);
      assert.equal(subscribed, `SUBR ${sleeper.pid} ${host} 1 30`);
      assert.equal(server.stats.subscribed, 1);

      const killedAt = performance.now();
      await sleeper.stop();
      assert.ok(await waitFor(() => client.got.some((text) => text.startsWith('NOTE ')), 2000), `no notice: ${JSON.stringify(client.got)}`);
      const notice = client.got.find((text) => text.startsWith('NOTE '))!;
      assert.match(notice, new RegExp(`^NOTE ${sleeper.pid} ${host} ${start} [0-9]+$`));
      const ms = performance.now() - killedAt;
      assert.ok(ms < 1000, `the notice came ${Math.round(ms)} ms after the death`);
      // Sent again until acknowledged.
      assert.ok(await waitFor(() => client.got.filter((text) => text === notice).length >= 3, 2000), 'the notice was not sent again while unacknowledged');
      const seq = notice.split(' ')[4];
      client.socket.send(`ACKN ${sleeper.pid} ${host} ${seq}\n`, server.address().port, '127.0.0.1');
      await sleep(400);
      const count = client.got.filter((text) => text === notice).length;
      await sleep(1500);
      assert.equal(client.got.filter((text) => text === notice).length, count, 'the notice was sent again after its acknowledgement');
    } finally {
      client.close();
      await sleeper.stop();
    }
  });

  test('a ticket is its address\'s: echoed from another port it is another challenge, and nothing is kept or ever sent there', async () => {
    await started;
    const sleeper = startSleeper();
    const start = readStartToken(sleeper.pid)!;
    const owner = await peer(server.address().port);
    const other = await peer(server.address().port);
    const before = server.stats.subscribed;
    try {
      const host = `h/${randomBytes(8).toString('hex')}`;
      const ticket = (await owner.ask(`SUBS ${sleeper.pid} ${host} ${start} ${NO_TICKET}\n`))!.split(' ')[3]!;
      const answer = await other.ask(`SUBS ${sleeper.pid} ${host} ${start} ${ticket}\n`);
      assert.match(answer ?? '', /^SUBC /, `another port's echo of the ticket was taken: ${answer}`);
      const forged = await other.ask(`SUBS ${sleeper.pid} ${host} ${start} ${'f'.repeat(24)}\n`);
      assert.match(forged ?? '', /^SUBC /);
      assert.equal(server.stats.subscribed, before, 'a subscription was kept for an unproven address');
      await sleeper.stop();
      await sleep(800);
      assert.deepEqual([...owner.got, ...other.got].filter((text) => text.startsWith('NOTE')), [], 'a notice went to an address that never proved itself');
    } finally {
      owner.close();
      other.close();
      await sleeper.stop();
    }
  });

  test('a dead pid, or one whose start token is another process\'s, is dead at once; the cap per source refuses (and counts)', async () => {
    await started;
    const sleepers = [startSleeper(), startSleeper(), startSleeper()];
    const client = await peer(server.address().port);
    try {
      const subscribe = async (pid: number, start: string) => {
        const host = `h/${randomBytes(8).toString('hex')}`;
        const ticket = (await client.ask(`SUBS ${pid} ${host} ${start} ${NO_TICKET}\n`))!.split(' ')[3]!;
        return client.ask(`SUBS ${pid} ${host} ${start} ${ticket}\n`);
      };
      const token = readStartToken(sleepers[0]!.pid)!;
      assert.match((await subscribe(sleepers[0]!.pid, String(BigInt(token) + 7n)))!, / 0 0$/, 'a reused pid was subscribed to');
      const refusedBefore = server.stats.subscribeRefused;
      const states = [];
      for (const sleeper of sleepers) states.push((await subscribe(sleeper.pid, readStartToken(sleeper.pid)!))!.split(' ')[3]);
      assert.deepEqual(states, ['1', '1', '-'], 'the third from one source was not refused (cap 2)');
      assert.equal(server.stats.subscribeRefused, refusedBefore + 1);
    } finally {
      client.close();
      for (const sleeper of sleepers) await sleeper.stop();
    }
  });
});

test('the cap in all refuses the next subscriber (it polls), says so in the log and counts it', async () => {
  const daemon = await startDaemon(['--bind', '127.0.0.1', '--max-subscriptions', '1']);
  const sleeper = startSleeper();
  const peers = [await peer(daemon.port), await peer(daemon.port)];
  try {
    const start = readStartToken(sleeper.pid)!;
    const states: string[] = [];
    for (const client of peers) {
      const host = `h/${randomBytes(8).toString('hex')}`;
      const ticket = (await client.ask(`SUBS ${sleeper.pid} ${host} ${start} ${NO_TICKET}\n`))!.split(' ')[3]!;
      states.push((await client.ask(`SUBS ${sleeper.pid} ${host} ${start} ${ticket}\n`))!.split(' ').slice(3).join(' '));
    }
    assert.deepEqual(states, ['1 30', '- 0'], 'the second subscriber was not refused at the cap of 1');
    assert.ok(await waitFor(() => /subscriptions refused: 1 since the last report, the last at the cap of 1 in all; those subscribers poll instead/.test(daemon.log()), 2000), daemon.log());
    daemon.child.kill('SIGUSR1');
    assert.ok(await waitFor(() => /counters: .*\bsubscribed 1, subscribeRefused 1\b/.test(daemon.log()), 2000), daemon.log());
  } finally {
    for (const client of peers) client.close();
    await sleeper.stop();
    await daemon.stop();
  }
});

describe('the client\'s subscriptions', () => {
  /** A daemon of the test's own: answers a subscription, and sends what the test says. */
  async function fakeDaemon(ignoreFirst = 0): Promise<{ port: number; subscribed: Promise<{ text: string; from: dgram.RemoteInfo }>; send(text: string): void; acks: string[]; close(): void }> {
    const socket = dgram.createSocket('udp4');
    const acks: string[] = [];
    let ignored = 0;
    let got!: (value: { text: string; from: dgram.RemoteInfo }) => void;
    const subscribed = new Promise<{ text: string; from: dgram.RemoteInfo }>((resolve) => (got = resolve));
    let client: dgram.RemoteInfo | undefined;
    socket.on('message', (msg, from) => {
      const text = msg.toString('latin1').trimEnd();
      const [kind, pid, host] = text.split(' ');
      if (kind === 'ACKN') return acks.push(text);
      if (kind !== 'SUBS' || ignored++ < ignoreFirst) return;
      client = from;
      socket.send(`SUBR ${pid} ${host} 1 30`, from.port, from.address);
      got({ text, from });
    });
    await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
    return {
      port: socket.address().port,
      subscribed,
      send: (text) => socket.send(text, client!.port, client!.address),
      acks,
      close: () => socket.close(),
    };
  }

  test('a notice counts only with the subscription\'s own cookie and start token; a replay to a later subscription is ignored', async () => {
    const daemon = await fakeDaemon();
    const client = new PidStatClient({ port: daemon.port, local: false });
    try {
      let deaths = 0;
      const subscription = client.subscribe({ host: '127.0.0.1', pid: 4242, start: '1000' }, () => deaths++);
      assert.deepEqual(await subscription.renew(1000), { state: 'subscribed', leaseMs: 30_000 });
      const { text } = await daemon.subscribed;
      const host = text.split(' ')[2]!;
      daemon.send(`NOTE 4242 127.0.0.1/${'0'.repeat(16)} 1000 1`);
      daemon.send(`NOTE 4242 ${host} 1001 2`);
      daemon.send(`NOTE 4243 ${host} 1000 3`);
      await sleep(300);
      assert.equal(deaths, 0, 'a notice with another cookie, start token or pid was believed');
      daemon.send(`NOTE 4242 ${host} 1000 4`);
      assert.ok(await waitFor(() => deaths === 1, 1000), 'the true notice was not heard');
      assert.ok(await waitFor(() => daemon.acks.includes(`ACKN 4242 ${host} 4`), 1000), `not acknowledged: ${JSON.stringify(daemon.acks)}`);
      subscription.close();

      // A later subscription to the same pid: the captured notice, replayed, names the old cookie.
      let later = 0;
      const again = client.subscribe({ host: '127.0.0.1', pid: 4242, start: '1000' }, () => later++);
      await again.renew(1000);
      daemon.send(`NOTE 4242 ${host} 1000 4`);
      await sleep(300);
      assert.equal(later, 0, 'a replayed notice was believed by a later subscription');
      again.close();
    } finally {
      await client.close();
      daemon.close();
    }
  });

  test('every copy of a notice from the daemon is acknowledged three times, copies that come after the subscription closed on the death included; from elsewhere once', async () => {
    const daemon = await fakeDaemon();
    const client = new PidStatClient({ port: daemon.port, local: false });
    try {
      let deaths = 0;
      const subscription = client.subscribe({ host: '127.0.0.1', pid: 4242, start: '1000' }, () => deaths++);
      assert.equal((await subscription.renew(1000)).state, 'subscribed');
      const host = (await daemon.subscribed).text.split(' ')[2]!;
      const ack = `ACKN 4242 ${host} 7`;
      daemon.send(`NOTE 4242 ${host} 1000 7`);
      assert.ok(await waitFor(() => deaths === 1, 1000), 'the notice was not heard');
      // The watcher closes its subscription the moment it hears: the daemon's next copy must still be acknowledged.
      subscription.close();
      assert.ok(await waitFor(() => daemon.acks.length >= 3, 1000), `the first copy got ${daemon.acks.length} acknowledgements, not 3`);
      daemon.send(`NOTE 4242 ${host} 1000 7`);
      assert.ok(await waitFor(() => daemon.acks.length >= 6, 1000), `a copy after the close got no acknowledgement: ${JSON.stringify(daemon.acks)}`);
      assert.deepEqual(daemon.acks, Array(6).fill(ack));
      assert.equal(deaths, 1, 'the death was told twice');
      // A copy from another address or port (who could forge one knows the cookie): one
      // acknowledgement, never more datagrams to an address than it sent.
      const stranger = dgram.createSocket('udp4');
      const toStranger: string[] = [];
      stranger.on('message', (msg) => toStranger.push(msg.toString('latin1').trimEnd()));
      await new Promise<void>((resolve) => stranger.bind(0, '127.0.0.1', resolve));
      try {
        const { from } = await daemon.subscribed;
        stranger.send(`NOTE 4242 ${host} 1000 7`, from.port, from.address);
        assert.ok(await waitFor(() => toStranger.length >= 1, 1000), 'a copy from elsewhere was not acknowledged');
        await sleep(200);
        assert.deepEqual(toStranger, [ack], 'a copy from elsewhere got more than one datagram back');
      } finally {
        stranger.close();
      }
    } finally {
      await client.close();
      daemon.close();
    }
  });

  test('a notice heard while a renewal waits in vain ends the watch: the renewal\'s silence does not lose it', async () => {
    // A daemon that answers the first question and the first subscription (with a 1 s lease,
    // so the renewal comes in 0.4 s), then answers the renewal with the notice alone, and
    // from then on nothing: only the notice can end the watch.
    const socket = dgram.createSocket('udp4');
    let subscriptions = 0;
    socket.on('message', (msg, from) => {
      const text = msg.toString('latin1').trimEnd();
      const [kind, pid, host] = text.split(' ');
      const reply = (line: string | Buffer) => socket.send(line, from.port, from.address);
      if (kind === 'SUBS') {
        subscriptions++;
        if (subscriptions === 1) reply(`SUBR ${pid} ${host} 1 1`);
        else if (subscriptions === 2) reply(`NOTE ${pid} ${host} 1000 1`);
        return;
      }
      if (kind === 'ACKN' || subscriptions > 0) return;
      const request = decodeRequest(msg);
      reply(encodeReply({ pid: request.pid, host: request.host!, state: 'exists', start: '1000' }));
    });
    await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), 4000);
    try {
      const death = await waitForDeath({ host: '127.0.0.1', pid: 4242, intervalMs: 300, port: socket.address().port, local: false }, abort.signal);
      assert.deepEqual(death, { cause: 'dead' }, 'the notice heard during the renewal was lost: the watch went on for 4 s');
      assert.ok(subscriptions >= 2, `only ${subscriptions} subscription requests`);
    } finally {
      clearTimeout(timer);
      socket.close();
    }
  });

  test('a subscription whose first SUBS is lost is made within the same wait: the SUBS is sent again', async () => {
    const daemon = await fakeDaemon(1);
    const client = new PidStatClient({ port: daemon.port, local: false });
    try {
      const subscription = client.subscribe({ host: '127.0.0.1', pid: 4242, start: '1000' }, () => {});
      assert.deepEqual(await subscription.renew(900), { state: 'subscribed', leaseMs: 30_000 }, 'one lost SUBS cost the subscription');
      subscription.close();
    } finally {
      await client.close();
      daemon.close();
    }
  });

  test('with keys, a notice must carry our key\'s MAC naming the daemon asked', async () => {
    const secret = randomBytes(32).toString('hex');
    const keys = join(dir, 'keys');
    writeFileSync(keys, `5 ${secret}\n`, { mode: 0o600 });
    const daemon = await fakeDaemon();
    const client = new PidStatClient({ port: daemon.port, local: false, keyFile: keys });
    const mac = (signed: string) => createHmac('sha256', Buffer.from(secret, 'hex')).update(signed, 'latin1').digest('hex').slice(0, 32);
    try {
      let deaths = 0;
      const subscription = client.subscribe({ host: '127.0.0.1', pid: 4242, start: '1000' }, () => deaths++);
      // The fake's SUBR is not signed: a keyed client takes no subscription from it.
      assert.equal((await subscription.renew(500)).state, 'silent');
      const { text } = await daemon.subscribed;
      const host = text.split(' ')[2]!;
      const line = `NOTE 4242 ${host} 1000 9 5:`;
      daemon.send(`NOTE 4242 ${host} 1000 9`);
      daemon.send(`${line}${mac(line)}`);
      daemon.send(`${line}${mac(`pidstatd 127.0.0.2 ${daemon.port}\n${line}`)}`);
      await sleep(300);
      assert.equal(deaths, 0, 'an unsigned notice, or one signed for another daemon, was believed');
      daemon.send(`${line}${mac(`pidstatd 127.0.0.1 ${daemon.port}\n${line}`)}`);
      assert.ok(await waitFor(() => deaths === 1, 1000), 'the signed notice was not heard');
    } finally {
      await client.close();
      daemon.close();
    }
  });
});

describe('pidwatch by push', () => {
  test('the job ends at once when the pid dies, long before the next poll would ask', async () => {
    const daemon = await startDaemon(['--bind', '127.0.0.1', '--debug']);
    const sleeper = startSleeper();
    try {
      const running = runBin('pidwatch', ['--no-local', '--host', '127.0.0.1', '--port', String(daemon.port), '--pid', String(sleeper.pid), '--interval', '20000ms', 'sleep', '60'], { timeoutMs: 30_000 });
      await watchSetUp(daemon, sleeper.pid);
      const killedAt = performance.now();
      await sleeper.stop();
      const result = await running;
      const ms = performance.now() - killedAt;
      assert.equal(result.signal, 'SIGHUP', describeRun(result));
      // A liveness bound that the next question, or renewal, 20 s after the subscription would miss.
      assert.ok(ms < 10_000, `the job ended ${Math.round(ms)} ms after the death; polling every 20 s would take up to 20 s`);
    } finally {
      await sleeper.stop();
      await daemon.stop();
    }
  });

  test('against a daemon that answers no subscription (--no-push, as IPC::Locker\'s), pidwatch polls and still ends the job', async () => {
    const daemon = await startDaemon(['--bind', '127.0.0.1', '--no-push', '--debug']);
    const sleeper = startSleeper();
    try {
      const running = runBin('pidwatch', ['--no-local', '--host', '127.0.0.1', '--port', String(daemon.port), '--pid', String(sleeper.pid), '--interval', '300ms', 'sleep', '60'], { timeoutMs: 30_000 });
      // The death comes once the subscription went unanswered: pidwatch then polls.
      const refused = new RegExp(`"SUBS ${sleeper.pid} .*no reply: push notices are off`);
      assert.ok(await waitFor(() => refused.test(daemon.log()), 20_000), `pidwatch asked for no subscription: ${daemon.log()}`);
      await sleeper.stop();
      const result = await running;
      assert.equal(result.signal, 'SIGHUP', describeRun(result));
      await daemon.stop();
      assert.match(daemon.log(), /stopped: .*\bmalformed 0\b/, 'a subscription to a --no-push daemon was counted as malformed');
    } finally {
      await sleeper.stop();
      await daemon.stop();
    }
  });

  // IPC::Locker's daemon reports no start token, without which there is
  // nothing to subscribe to: pidwatch polls it, as it always did.
  test('against IPC::Locker\'s daemon, pidwatch polls and ends the job', async () => {
    const perl = await startPerlDaemon();
    const sleeper = startSleeper();
    try {
      const running = runBin('pidwatch', ['--no-local', '--host', '127.0.0.1', '--port', String(perl.port), '--pid', String(sleeper.pid), '--interval', '300ms', 'sleep', '60'], { timeoutMs: 30_000 });
      // A liveness bound: three questions take 600 ms at --interval 300.
      assert.ok(await waitFor(() => perl.requests.length >= 3, 20_000), `pidwatch asked ${perl.requests.length} times in 20 s at --interval 300: it is not polling`);
      await sleeper.stop();
      const result = await running;
      assert.equal(result.signal, 'SIGHUP', describeRun(result));
    } finally {
      await sleeper.stop();
      await perl.stop();
    }
  });

  /** A daemon on `port`, with --debug, its log read for pidwatch's subscription to `pid`. */
  const daemonOn = (port: number) => startDaemon(['--bind', '127.0.0.1', '--port', String(port), '--debug']);
  const subscribedIn = (log: () => string, pid: number) => waitFor(() => new RegExp(`answered SUBR ${pid} \\S+ 1 30`).test(log()), 8000);

  /**
   * pidwatch --no-local watching a sleeper through a daemon on a port of the
   * test's, once subscribed; the test may replace `daemon` (a restart), and
   * whichever runs at the end is stopped, with the sleeper.
   */
  async function subscribedWatch(t: TestContext) {
    const port = await freePort();
    const watch = { port, daemon: await daemonOn(port), sleeper: startSleeper(), running: undefined as unknown as Promise<RunResult> };
    t.after(async () => {
      await watch.sleeper.stop();
      await watch.daemon.stop();
    });
    // --dead-after 6000: renewals every 2 s (a third of it), and a restart of a second or so is no death.
    watch.running = runBin('pidwatch', ['--no-local', '--host', '127.0.0.1', '--port', String(port), '--pid', String(watch.sleeper.pid), '--dead-after', '6s', '--interval', '500ms', 'sleep', '60'], { timeoutMs: 30_000 });
    assert.ok(await subscribedIn(() => watch.daemon.log(), watch.sleeper.pid), `pidwatch did not subscribe: ${watch.daemon.log()}`);
    return watch;
  }

  test('a daemon that restarts loses the subscription: the next renewal subscribes again, and the death is pushed', async (t) => {
    const watch = await subscribedWatch(t);
    await watch.daemon.stop();
    watch.daemon = await daemonOn(watch.port);
    assert.ok(await subscribedIn(() => watch.daemon.log(), watch.sleeper.pid), `pidwatch did not subscribe again to the new daemon: ${watch.daemon.log()}`);
    const killedAt = performance.now();
    await watch.sleeper.stop();
    const result = await watch.running;
    const ms = performance.now() - killedAt;
    assert.equal(result.signal, 'SIGHUP', describeRun(result));
    // A liveness bound: the notice itself is what the new daemon's log shows.
    assert.ok(ms < 15_000, `the job ended ${Math.round(ms)} ms after the death`);
    await watch.daemon.stop();
    assert.match(watch.daemon.log(), /stopped: .*\bnotified 1\b/, `the new daemon told of no death: ${watch.daemon.log()}`);
  });

  test('a death while the daemon is down is still told: the new daemon finds the start token gone', async (t) => {
    const watch = await subscribedWatch(t);
    await watch.daemon.stop();
    await watch.sleeper.stop();
    watch.daemon = await daemonOn(watch.port);
    const result = await watch.running;
    assert.equal(result.signal, 'SIGHUP', describeRun(result));
    assert.match(watch.daemon.log(), new RegExp(`answered (SUBR ${watch.sleeper.pid} \\S+ 0 0|EXIS ${watch.sleeper.pid} 0 )`), `the new daemon did not tell of the death: ${watch.daemon.log()}`);
  });
});

describe('pidwatch on this host', () => {
  const { addon } = loadLinuxCalls();
  const skip = addon?.watchExit === undefined ? 'the addon (pidfd) is not loaded' : false;

  test('a local pid is watched through a pidfd: the job ends at once, with no poll for 20 s', { skip }, async (t) => {
    const sleeper = startSleeper();
    t.after(() => sleeper.stop());
    const job = start(t, ['--pid', String(sleeper.pid), '--interval', '20000ms', 'sleep', '60']);
    await commandStarted(job);
    // It holds its pidfds, the sleeper's among them: killed sooner, the sleeper would be found dead at the first look.
    await watcherReady(job.pid);
    const killedAt = performance.now();
    await sleeper.stop();
    // A liveness bound that a poll every 20 s would miss by about half the time (the bench's 'pidwatch reaction' measures how fast).
    const exit = await exitWithin(job, 10_000, 'the job ended over 10 s after the death; a poll every 20 s would take up to 20 s');
    t.diagnostic(`the job ended ${Math.round(exit.at - killedAt)} ms after the death`);
    assert.equal(exit.signal, 'SIGHUP', job.describe());
  });
});
