import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import {
  ask,
  childrenOf,
  deadPid,
  exchange,
  freePort,
  isRunning,
  modulesLoadedBy,
  runBin,
  sleep,
  startDaemon,
  startSleeper,
  waitFor,
  type Daemon,
  type RunResult,
} from '../support/helpers.js';
import { commandRuns, descendants, killAll, pidnsUnavailable, watchersOf } from '../support/jobs.js';
import { startPerlDaemon } from '../support/perl-daemon.js';
import { loadLinuxCalls } from '../../src/sys/native.js';
import { PidStatClient } from '../../src/client/client.js';
import { daemonIdentity, readKeyFile, signLine, verify } from '../../src/wire/keys.js';
import { decodeRequest, keyedReplyLine } from '../../src/wire/protocol.js';

/**
 * Keys (doc/protocol.md, Keys): with `--key-file` (or PIDSTAT_KEY_FILE) requests
 * and replies are authenticated, and only a holder of the key is answered or
 * believed. The layout, which pidstatd(8) documents and which these tests pin:
 *
 *     request: PIDR <pid> <host> <flags> <start|-> <id>:<mac>\n
 *     reply:   EXIS <pid> 1 <host> <start|-> <id>:<mac>
 *              EXIS <pid> 0 <host> - <id>:<mac>
 *              UNKN <pid> na <host> - <id>:<mac>
 *
 * where mac is the first 32 lowercase hex digits of HMAC-SHA256, keyed with
 * the secret's bytes, over every byte of the datagram before the mac (from the
 * first letter through `<id>:`); a reply's mac covers first, unsent, the
 * daemon as the client asked it: `pidstatd <address> <port>\n`. A request
 * the daemon cannot authenticate gets at most `AUTH <pid> key <host>`, never
 * longer than the request.
 */

const dir = mkdtempSync(join(tmpdir(), 'pidstat-keys-'));
after(() => rmSync(dir, { recursive: true, force: true }));

let files = 0;
/** Writes a key file with this text and mode; returns its path. */
function keyFile(text: string, mode = 0o600): string {
  const path = join(dir, `keys-${++files}`);
  writeFileSync(path, text, { mode });
  chmodSync(path, mode);
  return path;
}

/** A fresh 256-bit secret, in hex. */
function secret(): string {
  return randomBytes(32).toString('hex');
}

/** What a reply's mac covers before its bytes: the daemon as asked (pidstatd(8), AUTHENTICATION). */
function identity(address: string, port: number): string {
  return `pidstatd ${address} ${port}\n`;
}

/** The authenticator of `signed` (the datagram up to and including `<id>:`). */
function macOf(secretHex: string, signed: string): string {
  return createHmac('sha256', Buffer.from(secretHex, 'hex')).update(Buffer.from(signed, 'latin1')).digest('hex').slice(0, 32);
}

/** A request signed with key `id`. */
function signedRequest(id: number, secretHex: string, pid: number, host: string, flags = 15, start = '-'): string {
  const signed = `PIDR ${pid} ${host} ${flags} ${start} ${id}:`;
  return `${signed}${macOf(secretHex, signed)}\n`;
}

function describeRun(result: RunResult): string {
  return `exit ${result.code}${result.signal ? ` (${result.signal})` : ''}; stdout: ${JSON.stringify(result.stdout)}; stderr: ${JSON.stringify(result.stderr)}`;
}

/** The start token of a live process (field 22 of /proc/PID/stat). */
function startToken(pid: number): string {
  const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]!;
}

/** pidstat through the daemon on `port`, fast: one try of 300 ms unless told otherwise. */
function pidstat(port: number, keys: string | undefined, targets: readonly string[], extra: readonly string[] = ['--tries', '1', '--try-timeout', '300ms']): Promise<RunResult> {
  return runBin('pidstat', [...(keys ? ['--key-file', keys] : []), '--no-local', '--port', String(port), ...extra, ...targets]);
}

async function withDaemon<T>(args: readonly string[], env: NodeJS.ProcessEnv, body: (daemon: Daemon) => Promise<T>): Promise<T> {
  const daemon = await startDaemon(['--bind', '127.0.0.1', ...args], env);
  try {
    return await body(daemon);
  } finally {
    await daemon.stop();
  }
}

describe('keys', () => {
  test("the addon's HMAC-SHA256 is node:crypto's, for keys of 16 to 64 bytes and every length of message up to 300 bytes", (t) => {
    const addon = loadLinuxCalls().addon;
    if (addon?.hmacKey === undefined || addon.hmacSha256 === undefined) {
      t.skip(`the addon has no HMAC here (${loadLinuxCalls().why ?? 'no HMAC found in the Node process'}): the commands use node:crypto`);
      return;
    }
    const out = Buffer.alloc(40, 0xaa);
    for (const size of [16, 32, 64]) {
      const key = randomBytes(size);
      const context = addon.hmacKey(key);
      const data = randomBytes(300);
      for (let length = 0; length <= 300; length++) {
        addon.hmacSha256(context, data, length, out);
        assert.equal(out.toString('hex', 0, 32), createHmac('sha256', key).update(data.subarray(0, length)).digest('hex'), `key of ${size} bytes, ${length} bytes of data`);
      }
      assert.equal(out.toString('hex', 32), 'aa'.repeat(8), 'nothing is written past 32 bytes');
    }
    assert.throws(() => addon.hmacSha256!(addon.hmacKey!(randomBytes(32)), Buffer.alloc(4), 5, out), /a length within them/);
  });

  test('with the addon, a keyed pidstat asks and checks without node:crypto, which would cost a start some 5 ms', async (t) => {
    const why = loadLinuxCalls().why;
    if (loadLinuxCalls().addon?.hmacKey === undefined) return t.skip(`the addon has no HMAC here (${why ?? 'no HMAC found in the Node process'})`);
    const keys = keyFile(`1 ${secret()}\n`);
    const sleeper = startSleeper();
    try {
      await withDaemon(['--key-file', keys], {}, async (daemon) => {
        const { status, modules } = await modulesLoadedBy('pidstat', ['--key-file', keys, '--no-local', '--port', String(daemon.port), '127.0.0.1', String(sleeper.pid)], { redirect: '>/dev/null' });
        assert.equal(status, 0, 'the live pid exists, through the keyed daemon');
        assert.ok(!modules.includes('crypto'), `node:crypto was loaded: ${modules.join(' ')}`);
      });
    } finally {
      await sleeper.stop();
    }
  });

  test('the same key on both sides: a live pid exists, a dead one is dead (--key-file and PIDSTAT_KEY_FILE)', async () => {
    const key = secret();
    const keys = keyFile(`# the test's key\n\n7 ${key}\n\n# end\n`);
    const sleeper = startSleeper();
    const dead = await deadPid();
    try {
      await withDaemon(['--key-file', keys], {}, async (daemon) => {
        const targets = [`127.0.0.1:${sleeper.pid}`, `127.0.0.1:${dead}`];
        const expected = `127.0.0.1:${sleeper.pid} exists\n127.0.0.1:${dead} dead\n`;
        const byOption = await pidstat(daemon.port, keys, targets, []);
        assert.equal(byOption.stdout, expected, describeRun(byOption));
        assert.equal(byOption.code, 1, describeRun(byOption));
        const byEnv = await runBin('pidstat', ['--no-local', '--port', String(daemon.port), ...targets], { env: { PIDSTAT_KEY_FILE: keys } });
        assert.equal(byEnv.stdout, expected, describeRun(byEnv));
        assert.equal(byEnv.code, 1, describeRun(byEnv));
      });
    } finally {
      await sleeper.stop();
    }
  });

  test('no key, a wrong secret, or an id the daemon lacks: no_reply from a keyed daemon', async () => {
    const key = secret();
    const keys = keyFile(`7 ${key}\n`);
    const wrongSecret = keyFile(`7 ${secret()}\n`);
    const wrongId = keyFile(`8 ${key}\n`);
    const sleeper = startSleeper();
    try {
      await withDaemon(['--key-file', keys], {}, async (daemon) => {
        const target = `127.0.0.1:${sleeper.pid}`;
        const runs = await Promise.all([undefined, wrongSecret, wrongId].map((file) => pidstat(daemon.port, file, [target])));
        for (const [i, result] of runs.entries()) {
          const who = ['no key', 'a wrong secret', 'an unknown key id'][i];
          assert.equal(result.stdout, `${target} no_reply\n`, `${who}: ${describeRun(result)}`);
          assert.equal(result.code, 2, `${who}: ${describeRun(result)}`);
        }
        // The daemon is alive and answers its key: the silence was the keys'.
        const right = await pidstat(daemon.port, keys, [target], ['--tries', '3', '--try-timeout', '400ms']);
        assert.equal(right.stdout, `${target} exists\n`, describeRun(right));
      });
    } finally {
      await sleeper.stop();
    }
  });

  test('a forged unauthenticated reply, sent first, does not end a question that the keyed daemon answers within the try', async () => {
    const keys = keyFile(`7 ${secret()}\n`);
    const ring = readKeyFile(keys);
    // A daemon with the key, and a forger who reads its requests: the forgery at once, the real answer 300 ms later.
    const socket = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
    const port = socket.address().port;
    socket.on('message', (msg, from) => {
      const request = decodeRequest(msg);
      const host = request.host ?? 'x';
      socket.send(`EXIS ${request.pid} 1 ${host}`, from.port, from.address);
      const key = verify(request.auth, ring.byId);
      if (key === undefined) return;
      const line = signLine(key, keyedReplyLine({ pid: request.pid, host, state: 'exists' }), daemonIdentity('127.0.0.1', port));
      setTimeout(() => socket.send(line, from.port, from.address), 300);
    });
    const client = new PidStatClient({ port, local: false, keyFile: keys, timeoutMs: 3000, tries: 1 });
    try {
      const result = await client.query({ host: '127.0.0.1', pid: process.pid });
      assert.equal(result.state, 'exists', JSON.stringify(result));
    } finally {
      await client.close();
      socket.close();
    }
  });

  test('a keyed client facing a daemon without keys (ours, the original): no_reply, "reply not authenticated"', async () => {
    const keys = keyFile(`7 ${secret()}\n`);
    const sleeper = startSleeper();
    const perl = await startPerlDaemon();
    try {
      await withDaemon([], {}, async (daemon) => {
        for (const [name, port] of [['pidstatd', daemon.port], ['the original daemon', perl.port]] as const) {
          const result = await pidstat(port, keys, [`127.0.0.1:${sleeper.pid}`]);
          assert.equal(result.stdout, `127.0.0.1:${sleeper.pid} no_reply\n`, `${name}: ${describeRun(result)}`);
          assert.equal(result.code, 2, `${name}: ${describeRun(result)}`);
          assert.match(result.stderr, new RegExp(`^pidstat: 127\\.0\\.0\\.1:${sleeper.pid}: .*reply not authenticated`, 'm'), `${name}: ${describeRun(result)}`);
          // Said at the end of the try that heard it, not after every try.
          const json = await pidstat(port, keys, [`127.0.0.1:${sleeper.pid}`], ['--json', '--tries', '5', '--try-timeout', '2000ms']);
          const [answer] = JSON.parse(json.stdout) as { state: string; tries: number; error?: string }[];
          assert.deepEqual([answer?.state, answer?.tries, answer?.error], ['no_reply', 1, 'reply not authenticated'], `${name}: ${describeRun(json)}`);
        }
        assert.ok(perl.requests.length > 0, 'the original daemon got no request');
      });
    } finally {
      await perl.stop();
      await sleeper.stop();
    }
  });

  test('rotation: a daemon with keys 1 and 2 answers a client of either (daemon keys from PIDSTAT_KEY_FILE)', async () => {
    const one = secret();
    const two = secret();
    const daemonKeys = keyFile(`1 ${one}\n2 ${two}\n`);
    const newClient = keyFile(`2 ${two}\n1 ${one}\n`);
    const oldClient = keyFile(`1 ${one}\n`);
    const sleeper = startSleeper();
    try {
      await withDaemon([], { PIDSTAT_KEY_FILE: daemonKeys }, async (daemon) => {
        const target = `127.0.0.1:${sleeper.pid}`;
        for (const file of [newClient, oldClient]) {
          const result = await pidstat(daemon.port, file, [target], ['--tries', '2', '--try-timeout', '500ms']);
          assert.equal(result.stdout, `${target} exists\n`, describeRun(result));
          assert.equal(result.code, 0, describeRun(result));
        }
        // The daemon did read the file: a client without keys is not answered.
        const keyless = await pidstat(daemon.port, undefined, [target]);
        assert.equal(keyless.stdout, `${target} no_reply\n`, describeRun(keyless));
      });
    } finally {
      await sleeper.stop();
    }
  });

  test('SIGHUP re-reads the key file; a broken file keeps the old keys and says why', async () => {
    const one = secret();
    const two = secret();
    const daemonKeys = keyFile(`1 ${one}\n`);
    const clientOne = keyFile(`1 ${one}\n`);
    const clientTwo = keyFile(`2 ${two}\n`);
    const sleeper = startSleeper();
    try {
      await withDaemon(['--key-file', daemonKeys], {}, async (daemon) => {
        const target = `127.0.0.1:${sleeper.pid}`;
        // Positive checks get a few tries (a loaded machine); negative ones need only one.
        const answered = async (file: string): Promise<boolean> =>
          (await pidstat(daemon.port, file, [target], ['--tries', '3', '--try-timeout', '400ms'])).stdout === `${target} exists\n`;
        const refused = async (file: string): Promise<boolean> => (await pidstat(daemon.port, file, [target])).stdout === `${target} no_reply\n`;
        assert.ok(await answered(clientOne), 'key 1 not answered before the reload');
        assert.ok(await refused(clientTwo), 'key 2 answered before the reload');

        writeFileSync(daemonKeys, `2 ${two}\n`);
        chmodSync(daemonKeys, 0o600);
        daemon.child.kill('SIGHUP');
        assert.ok(await waitFor(() => answered(clientTwo), 20_000), `key 2 not answered after SIGHUP; log: ${daemon.log()}`);
        assert.ok(await refused(clientOne), 'key 1 still answered after it was removed and SIGHUP');

        const logBefore = daemon.log().length;
        writeFileSync(daemonKeys, 'this is not a key file\n');
        daemon.child.kill('SIGHUP');
        // Once the daemon has read it (it says which key file it could not use):
        assert.ok(await waitFor(() => daemon.log().slice(logBefore).includes(daemonKeys) || daemon.child.exitCode !== null, 20_000), `the daemon did not say which key file it could not use: ${JSON.stringify(daemon.log().slice(logBefore))}`);
        assert.equal(daemon.child.exitCode, null, `SIGHUP with a broken key file stopped the daemon; log: ${daemon.log()}`);
        assert.ok(await answered(clientTwo), `a broken key file dropped the keys in use; log: ${daemon.log()}`);
        assert.ok(await refused(clientOne), 'a broken key file let key 1 in');
      });
    } finally {
      await sleeper.stop();
    }
  });

  test('a key file others may read or write, or with a short secret, is refused (exit 64, the file named) by all three commands', async () => {
    const valid = `7 ${secret()}\n`;
    const groupReadable = keyFile(valid, 0o640);
    const port = await freePort();
    const sleeper = startSleeper();
    const marker = join(dir, 'the-job-ran');
    try {
      const portArgs = ['--no-local', '--port', String(port), '--tries', '1', '--try-timeout', '300ms'];
      const others = [keyFile(valid, 0o604), keyFile(valid, 0o602), keyFile(`7 ${secret().slice(0, 31)}\n`)] as const;
      const cases: [string, string, Promise<RunResult>][] = [
        ['pidstat 0640', groupReadable, runBin('pidstat', ['--key-file', groupReadable, ...portArgs, `127.0.0.1:${sleeper.pid}`])],
        ['pidstat 0640 by PIDSTAT_KEY_FILE', groupReadable, runBin('pidstat', [...portArgs, `127.0.0.1:${sleeper.pid}`], { env: { PIDSTAT_KEY_FILE: groupReadable } })],
        ['pidstat 0604', others[0], runBin('pidstat', ['--key-file', others[0], ...portArgs, `127.0.0.1:${sleeper.pid}`])],
        ['pidstat 0602', others[1], runBin('pidstat', ['--key-file', others[1], ...portArgs, `127.0.0.1:${sleeper.pid}`])],
        ['pidstat, a 31-digit secret', others[2], runBin('pidstat', ['--key-file', others[2], ...portArgs, `127.0.0.1:${sleeper.pid}`])],
        ['pidwatch 0640', groupReadable, runBin('pidwatch', ['--key-file', groupReadable, '--no-local', '--host', '127.0.0.1', '--port', String(port), '--pid', String(sleeper.pid), 'touch', marker])],
        ['pidstatd 0640', groupReadable, runBin('pidstatd', ['--foreground', '--bind', '127.0.0.1', '--port', '0', '--key-file', groupReadable], { timeoutMs: 5000 })],
      ];
      for (const [name, file, running] of cases) {
        const result = await running;
        assert.equal(result.code, 64, `${name}: ${describeRun(result)}`);
        assert.ok(result.stderr.includes(file), `${name}: the message does not name ${file}: ${describeRun(result)}`);
        assert.doesNotMatch(result.stderr, /^\s+at /m, `${name}: a stack trace: ${describeRun(result)}`);
        assert.equal(result.stdout, '', `${name}: ${describeRun(result)}`);
      }
      assert.ok(!existsSync(marker), 'pidwatch ran its command with a refused key file');
    } finally {
      await sleeper.stop();
    }
  });

  test('the original\'s plain requests get nothing from a keyed daemon; a request signed as pidstatd(8) says gets a reply whose MAC verifies', async () => {
    const key = secret();
    const keys = keyFile(`7 ${key}\n`);
    const sleeper = startSleeper();
    const dead = await deadPid();
    try {
      await withDaemon(['--key-file', keys], {}, async (daemon) => {
        // Nothing about the process; at most the refusal, which echoes pid
        // and host and is never longer than the request.
        const plain = [`PIDR ${sleeper.pid}\n`, `PIDR ${sleeper.pid} host 3\n`, `PIDR ${dead} host 3\n`, `PIDR ${sleeper.pid} host 15 - \n`, `PIDR ${dead} host 15 - \n`];
        // The two that must get a refusal are waited for as long as a busy machine needs; the others 300 ms.
        const plainReplies = await Promise.all(plain.map((request, i) => ask(daemon.port, request, { waitMs: i >= 3 ? 5000 : 300 })));
        plainReplies.forEach((reply, i) => {
          const request = plain[i]!;
          if (reply === undefined) return;
          assert.equal(reply, `AUTH ${request.split(' ')[1]} key host`, `a keyed daemon answered ${JSON.stringify(request)}`);
          assert.ok(reply.length <= request.length, `the refusal ${JSON.stringify(reply)} is longer than the request ${JSON.stringify(request)}`);
        });
        assert.equal(plainReplies[0], undefined, 'a request that names no host was answered');
        assert.equal(plainReplies[3], `AUTH ${sleeper.pid} key host`, 'a plain request to a keyed daemon got no refusal');
        assert.equal(plainReplies[4], `AUTH ${dead} key host`, 'the refusal differs for a dead pid: it tells of the process');

        const host = `probe/${randomBytes(8).toString('hex')}`;
        const live = await ask(daemon.port, signedRequest(7, key, sleeper.pid, host));
        assert.ok(live !== undefined, `no reply to a signed request; log: ${daemon.log()}`);
        const match = /^(EXIS (\d+) 1 (\S+) (\S+) 7:)([0-9a-f]{32})\n?$/.exec(live);
        assert.ok(match, `the reply is not "EXIS <pid> 1 <host> <start> 7:<mac>": ${JSON.stringify(live)}`);
        assert.equal(Number(match[2]), sleeper.pid);
        assert.equal(match[3], host, 'the host field (cookie included) is not echoed');
        assert.equal(match[4], startToken(sleeper.pid), 'the start token is not the process\'s');
        assert.equal(match[5], macOf(key, identity('127.0.0.1', daemon.port) + match[1]!), `the reply's MAC does not cover the daemon as asked: ${JSON.stringify(live)}`);
        assert.notEqual(match[5], macOf(key, match[1]!), 'the reply\'s MAC covers only its own bytes');

        const gone = await ask(daemon.port, signedRequest(7, key, dead, host));
        const deadMatch = /^(EXIS (\d+) 0 (\S+) - 7:)([0-9a-f]{32})\n?$/.exec(gone ?? '');
        assert.ok(deadMatch, `the reply is not "EXIS <pid> 0 <host> - 7:<mac>": ${JSON.stringify(gone)}`);
        assert.equal(deadMatch[3], host);
        assert.equal(deadMatch[4], macOf(key, identity('127.0.0.1', daemon.port) + deadMatch[1]!), `the reply's MAC does not verify: ${JSON.stringify(gone)}`);

        // What the MAC covers: the pid and the host; and a key id the daemon lacks is refused.
        const signed = signedRequest(7, key, sleeper.pid, host);
        const tampered = [
          signed.replace(`PIDR ${sleeper.pid} `, `PIDR ${dead} `),
          signed.replace(host, `${host.slice(0, -1)}${host.endsWith('0') ? '1' : '0'}`),
          signedRequest(8, key, sleeper.pid, host),
          // The MAC's last digit changed (the match ends with the newline: the digit is at 31).
          signed.replace(/[0-9a-f]{32}\n$/, (mac) => `${mac.slice(0, 31)}${mac[31] === '0' ? '1' : '0'}\n`),
        ];
        // The refusal waited for up to 5 s, then 300 ms more for a second reply that must not come.
        const tamperedReplies = await Promise.all(tampered.map((request) => exchange(daemon.port, request, { firstWithinMs: 5000, waitMs: 300 })));
        tamperedReplies.forEach((replies, i) => {
          const pid = tampered[i]!.split(' ')[1];
          const hostSent = tampered[i]!.split(' ')[2];
          assert.deepEqual(replies, [`AUTH ${pid} key ${hostSent}`], `a keyed daemon answered ${JSON.stringify(tampered[i])}`);
        });
      });
    } finally {
      await sleeper.stop();
    }
  });

  test('a captured authenticated reply, replayed to a later request, is not believed', async () => {
    // The attacker saw a reply and answers a later question with it, from the
    // daemon's own address and port (it stopped, and took its port): as
    // captured, and with the later question's cookie put in.
    const keys = keyFile(`7 ${secret()}\n`);
    const sleeper = startSleeper();
    const target = `127.0.0.1:${sleeper.pid}`;
    let recorded: string | undefined;
    let port = 0;
    try {
      await withDaemon(['--key-file', keys], {}, async (daemon) => {
        port = daemon.port;
        const first = await pidstat(daemon.port, keys, ['--debug', target], ['--tries', '2', '--try-timeout', '500ms']);
        assert.equal(first.stdout, `${target} exists\n`, describeRun(first));
        recorded = new RegExp(`^pidstat: < \\S+ (EXIS ${sleeper.pid} 1 \\S+ \\d+ 7:[0-9a-f]{32})$`, 'm').exec(first.stderr)?.[1];
        assert.ok(recorded !== undefined, `no reply in the debug output: ${first.stderr}`);
      });
      await sleeper.stop();
      for (const rewrite of [false, true]) {
        const replayer = dgram.createSocket('udp4');
        let replayed = 0;
        replayer.on('message', (msg, client) => {
          const host = msg.toString('latin1').split(' ')[2]!;
          const reply = rewrite ? recorded!.replace(/^(EXIS \d+ 1 )\S+/, `$1${host}`) : recorded!;
          replayed++;
          replayer.send(reply, client.port, client.address);
        });
        await new Promise<void>((resolve) => replayer.bind(port, '127.0.0.1', resolve));
        try {
          const second = await pidstat(port, keys, [target], ['--tries', '2', '--try-timeout', '300ms']);
          assert.ok(replayed > 0, 'nothing was replayed');
          assert.equal(second.stdout, `${target} no_reply\n`, `the replayed reply${rewrite ? ' (with the new cookie)' : ''} was believed: ${describeRun(second)}; replayed: ${JSON.stringify(recorded)}`);
          assert.equal(second.code, 2, describeRun(second));
        } finally {
          await new Promise<void>((resolve) => replayer.close(() => resolve()));
        }
      }
    } finally {
      await sleeper.stop();
    }
  });

  test('a daemon that shares the key but was not the one asked is not believed: a relay to it kills nothing', async (t) => {
    // Daemon A sees the sleeper; daemon B, in a PID namespace of its own,
    // sees no such pid. A relay where the client asks for A passes the
    // requests to B: B's signed "dead" must not count (pidstatd(8), AUTHENTICATION).
    const why = pidnsUnavailable();
    if (why !== undefined) return t.skip(why);
    const keys = keyFile(`7 ${secret()}\n`);
    const sleeper = startSleeper();
    const inNamespace = (command: string, args: string[]): [string, string[]] => ['unshare', ['--pid', '--fork', '--mount-proc', '--kill-child=SIGTERM', command, ...args]];
    const a = await startDaemon(['--bind', '127.0.0.1', '--key-file', keys]);
    const b = await startDaemon(['--bind', '127.0.0.1', '--key-file', keys], {}, inNamespace);
    const relay = await startRelay(b.port);
    const marker = join(dir, 'relayed-job-ended');
    try {
      const target = `127.0.0.1:${sleeper.pid}`;
      const fromA = await pidstat(a.port, keys, [target]);
      assert.equal(fromA.stdout, `${target} exists\n`, `A: ${describeRun(fromA)}`);
      const fromB = await pidstat(b.port, keys, [target]);
      assert.equal(fromB.stdout, `${target} dead\n`, `B, in its own PID namespace: ${describeRun(fromB)}`);

      const relayed = await pidstat(relay.port, keys, [target], ['--tries', '2', '--try-timeout', '300ms']);
      assert.ok(relay.passed() > 0, 'the relay passed nothing on');
      assert.equal(relayed.stdout, `${target} no_reply\n`, `B's answer, relayed, was believed: ${describeRun(relayed)}`);
      assert.match(relayed.stderr, /reply not authenticated/);

      const watched = await runBin('pidwatch', ['--key-file', keys, '--no-local', '--host', '127.0.0.1', '--port', String(relay.port), '--pid', String(sleeper.pid), '--interval', '200ms',
        'sh', '-c', `sleep 2; touch ${marker}`], { timeoutMs: 20_000 });
      assert.equal(watched.code, 0, `pidwatch through the relay: ${describeRun(watched)}`);
      assert.ok(existsSync(marker), 'the job was killed on the relayed answer of another daemon');
    } finally {
      await relay.close();
      await b.stop();
      await a.stop();
      await sleeper.stop();
    }
  });

  test('a keyed daemon that cannot tell where requests were sent (Node\'s dgram on a wildcard address) refuses to start, and says what to do', async () => {
    const keys = keyFile(`7 ${secret()}\n`);
    const result = await runBin('pidstatd', ['--foreground', '--port', '0', '--key-file', keys], { env: { PIDSTAT_IO: 'dgram' }, timeoutMs: 10_000 });
    assert.equal(result.code, 1, describeRun(result));
    assert.match(result.stderr, /a daemon with keys signs the address each request was sent to.*give --bind ADDRESS/, describeRun(result));
    assert.doesNotMatch(result.stderr, /^\s+at /m, describeRun(result));
  });

  test('a client without the key, or with another, hears at once that the daemon requires a key', async () => {
    const keys = keyFile(`7 ${secret()}\n`);
    const wrong = keyFile(`9 ${secret()}\n`);
    const sleeper = startSleeper();
    try {
      await withDaemon(['--key-file', keys], {}, async (daemon) => {
        const target = `127.0.0.1:${sleeper.pid}`;
        for (const [file, said] of [[undefined, /the daemon at 127\.0\.0\.1 requires a key \(see --key-file\)/], [wrong, /the daemon at 127\.0\.0\.1 refused our key/]] as const) {
          const began = performance.now();
          // Five tries of 30 s would take 150 s: the refusal ends the first.
          const result = await pidstat(daemon.port, file, [target], ['--tries', '5', '--try-timeout', '30s']);
          const ms = performance.now() - began;
          assert.equal(result.stdout, `${target} no_reply\n`, describeRun(result));
          assert.equal(result.code, 2, describeRun(result));
          assert.match(result.stderr, said, describeRun(result));
          // A liveness bound (runBin ends it at 20 s), far below one try's timeout.
          assert.ok(ms < 20_000, `it took ${Math.round(ms)} ms to learn that a key is needed (5 tries would be 150 s)`);
        }
      });
    } finally {
      await sleeper.stop();
    }
  });

  test('pidwatch with the key kills the job when the pid dies; with a wrong key it hears nothing and kills nothing', async () => {
    const key = secret();
    const keys = keyFile(`7 ${key}\n`);
    const wrong = keyFile(`7 ${secret()}\n`);
    const sleeper = startSleeper();
    const jobs: number[] = [];
    try {
      await withDaemon(['--key-file', keys], {}, async (daemon) => {
        const watch = (file: string): Promise<RunResult> =>
          runBin('pidwatch', ['--key-file', file, '--no-local', '--host', '127.0.0.1', '--port', String(daemon.port), '--pid', String(sleeper.pid), '--interval', '200ms', 'sleep', '30'], { timeoutMs: 40_000 });
        const [right, wrongRun] = [watch(keys), watch(wrong)];
        // The jobs are the children of the two pidwatch processes, which are this process's children.
        assert.ok(await waitFor(() => pidwatchJobs().length >= 2, 20_000), 'pidwatch started no jobs');
        jobs.push(...pidwatchJobs());
        await sleep(1000);
        for (const job of jobs) assert.ok(isRunning(job), 'a job died while the watched pid lives');

        await sleeper.stop();
        const result = await right;
        assert.equal(result.signal, 'SIGHUP', `pidwatch with the key did not end by the SIGHUP it sent: ${describeRun(result)}`);
        await sleep(600);
        const alive = jobs.filter(isRunning);
        assert.equal(alive.length, 1, `pidwatch with a wrong key killed its job (or both live): ${alive.length} of 2 jobs alive`);
        // Its watcher ends what the job started once the job's root ends.
        for (const job of alive) process.kill(job, 'SIGTERM');
        await wrongRun;
      });
    } finally {
      await killAll(jobs.flatMap((job) => [...descendants(job), ...watchersOf(job), job]));
      await sleeper.stop();
    }
  });
});

/** The jobs of the pidwatch processes this test process started: pidwatch runs its command in its own process. */
function pidwatchJobs(): number[] {
  return childrenOf(process.pid).filter(commandRuns);
}

interface Relay {
  port: number;
  /** Requests passed on so far. */
  passed(): number;
  close(): Promise<void>;
}

/**
 * A UDP relay to a daemon: what an attacker between the client and the host
 * asked does, passing each request to another daemon and its replies back.
 */
async function startRelay(daemonPort: number): Promise<Relay> {
  const front = dgram.createSocket('udp4');
  const upstream = new Map<string, dgram.Socket>();
  let passed = 0;
  front.on('error', () => {});
  front.on('message', (msg, client) => {
    const key = `${client.address} ${client.port}`;
    let socket = upstream.get(key);
    if (socket === undefined) {
      const created = dgram.createSocket('udp4');
      created.on('error', () => {});
      created.on('message', (reply) => front.send(reply, client.port, client.address));
      upstream.set(key, created);
      socket = created;
    }
    passed++;
    socket.send(msg, daemonPort, '127.0.0.1');
  });
  await new Promise<void>((resolve) => front.bind(0, '127.0.0.1', resolve));
  return {
    port: front.address().port,
    passed: () => passed,
    async close() {
      for (const socket of upstream.values()) socket.close();
      await new Promise<void>((resolve) => front.close(() => resolve()));
    },
  };
}
