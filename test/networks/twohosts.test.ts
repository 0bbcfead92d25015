import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { BIN, waitFor, type RunResult } from '../support/helpers.js';
import { createHostPair, netnsUnavailable, pidInUse, REMOTE_HOST_SCRIPT, runBinIn, spawnInPidNamespace, type HostPair, type NsTree } from '../support/netns.js';

/**
 * Two hosts for real: network namespaces A and B joined by veth, the daemon
 * in B inside its own PID namespace. From A, `pidstat B:pid` is `exists` for a
 * process that lives only in B and `dead` once it is killed; a process that
 * lives only in A's PID namespace is `dead` to B. Skipped, with the reason,
 * where namespaces cannot be made.
 */

const unavailable = netnsUnavailable({ pidns: true });
if (unavailable) process.stdout.write(`twohosts: every test skipped: ${unavailable}\n`);
/** Each test's options: skipped, with the reason, where namespaces cannot be made. */
const opts = { skip: unavailable ?? false };


/** The start time of a process (field 22 of /proc/PID/stat), as the daemon's start token. */
function startToken(pid: number): string {
  const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]!;
}

/** A pid that no process or thread uses in this (A's) PID namespace, high enough to be clear of the usual ones. */
function pidFreeHere(): number {
  const pidMax = Number(readFileSync('/proc/sys/kernel/pid_max', 'latin1'));
  for (;;) {
    const pid = Math.floor(pidMax * (0.5 + Math.random() * 0.4));
    if (!pidInUse(pid) && !pidInUse(pid - 1)) return pid;
  }
}

function describeRun(result: RunResult): string {
  return `exit ${result.code}${result.signal ? ` (${result.signal})` : ''}; stdout: ${JSON.stringify(result.stdout)}; stderr: ${JSON.stringify(result.stderr)}`;
}

describe('two hosts: network namespaces A and B, the daemon in B in its own PID namespace', () => {
  let pair: HostPair;
  let tree: NsTree | undefined;
  let port = 0;
  /** The sleeper's pid as B sees it, and as A (this process) sees it. */
  let sleeper = 0;
  let sleeperHere = 0;
  let daemonHere = 0;
  let wanted = 0;

  const pidstat = (args: readonly string[]): Promise<RunResult> =>
    runBinIn(pair.a, 'pidstat', ['--port', String(port), ...args], { timeoutMs: 15_000 });

  before(async () => {
    if (unavailable) return;
    pair = await createHostPair();
    try {
      wanted = pidFreeHere();
      tree = spawnInPidNamespace(pair.b, 'sh', ['-c', REMOTE_HOST_SCRIPT, 'sh', String(wanted - 1), '/bin/sh', BIN.pidstatd]);
      sleeper = Number((await tree.waitFor(/^sleeper (\d+)$/m, { stream: 'stdout' }))[1]);
      const daemon = Number((await tree.waitFor(/^daemon (\d+)$/m, { stream: 'stdout' }))[1]);
      port = Number((await tree.waitFor(/pidstatd: listening on .*:(\d+)$/m, { stream: 'stderr' }))[1]);
      const t = tree;
      assert.ok(await waitFor(() => t.outerPid(sleeper) !== undefined && t.outerPid(daemon) !== undefined, 5000), 'the processes in B are not found from A');
      sleeperHere = t.outerPid(sleeper)!;
      daemonHere = t.outerPid(daemon)!;
    } catch (err) {
      await tree?.stop();
      await pair.destroy();
      throw err;
    }
  });

  after(async () => {
    // Stop what this test started, by pid: the sleeper, the daemon, then all of B's PID namespace.
    for (const [pid, signal] of [[sleeperHere, 'SIGKILL'], [daemonHere, 'SIGKILL']] as const) {
      if (pid > 0 && tree?.processes().some((p) => p.pid === pid)) {
        try {
          process.kill(pid, signal);
        } catch {
          // Already gone.
        }
      }
    }
    await tree?.stop();
    await pair?.destroy();
  });

  test('the sleeper exists only in B: its pid in B is not that process in A', opts, (t) => {
    assert.ok(sleeper > 1, `sleeper pid in B: ${sleeper}`);
    assert.notEqual(sleeperHere, sleeper, 'the sleeper has the same pid in A and in B: the PID namespace is not its own');
    assert.equal(readFileSync(`/proc/${sleeperHere}/comm`, 'latin1').trim(), 'sleep');
    if (sleeper === wanted) {
      assert.ok(!pidInUse(sleeper), `pid ${sleeper} is in use in A too`);
    } else {
      // ns_last_pid could not be set: the pid exists in A maybe, but is another process there.
      t.diagnostic(`B gave the sleeper pid ${sleeper}, not ${wanted}; in A that pid is ${pidInUse(sleeper) ? 'another process' : 'free'}`);
    }
  });

  test('pidstat ping B from A: PIDSTATD OK, exit 0', opts, async () => {
    const result = await pidstat(['ping', pair.b.ipv4]);
    assert.equal(result.code, 0, describeRun(result));
    assert.match(result.stdout, new RegExp(`^PIDSTATD OK - \\d+(\\.\\d+)? second response on ${pair.b.ipv4.replace(/\./g, '\\.')}:${port}(\\|time=.*)?\\n?$`));
  });

  test('pidstat B:pid from A (IPv4): exists, with the start token of that very process', opts, async () => {
    const result = await pidstat([`${pair.b.ipv4}:${sleeper}`]);
    assert.equal(result.code, 0, describeRun(result));
    assert.equal(result.stdout, `${pair.b.ipv4}:${sleeper} exists\n`);

    const json = await pidstat(['--json', `${pair.b.ipv4}:${sleeper}`]);
    assert.equal(json.code, 0, describeRun(json));
    const [entry, ...rest] = JSON.parse(json.stdout) as { host: string; pid: number; state: string; start?: string | number }[];
    assert.equal(rest.length, 0);
    assert.equal(entry?.host, pair.b.ipv4);
    assert.equal(entry?.pid, sleeper);
    assert.equal(entry?.state, 'exists');
    assert.equal(String(entry?.start), startToken(sleeperHere), 'the start token B sends is not the sleeper\'s');
  });

  test('pidstat [B]:pid from A (IPv6): exists', opts, async (t) => {
    if (!pair.b.ipv6) return t.skip(pair.ipv6Missing ?? 'no IPv6 address on B');
    const result = await pidstat([`[${pair.b.ipv6}]:${sleeper}`]);
    assert.equal(result.code, 0, describeRun(result));
    assert.equal(result.stdout, `[${pair.b.ipv6}]:${sleeper} exists\n`);
    const ping = await pidstat(['ping', pair.b.ipv6]);
    assert.equal(ping.code, 0, describeRun(ping));
    assert.match(ping.stdout, /^PIDSTATD OK - /);
  });

  test('pidstat [fe80::…%zone]:pid from A (link-local, the zone named): exists, in batches and through dgram', opts, async (t) => {
    if (!pair.b.ipv6) return t.skip(pair.ipv6Missing ?? 'no IPv6 on the veth pair');
    // Link-local addresses of our own on the veth pair (the kernel's are still tentative).
    for (const [host, address] of [[pair.a, 'fe80::a'], [pair.b, 'fe80::b']] as const) {
      const added = spawnSync('ip', ['-n', host.name, '-6', 'addr', 'add', `${address}/64`, 'dev', host.ifname, 'nodad'], { encoding: 'utf8' });
      if (added.status !== 0) return t.skip(`cannot add ${address} in ${host.name}: ${added.stderr.trim()}`);
    }
    const target = `[fe80::b%${pair.a.ifname}]:${sleeper}`;
    for (const io of ['batch', 'dgram']) {
      const result = await runBinIn(pair.a, 'pidstat', ['--port', String(port), target], { timeoutMs: 15_000, env: { PIDSTAT_IO: io } });
      assert.equal(result.code, 0, `PIDSTAT_IO=${io}: ${describeRun(result)}`);
      assert.equal(result.stdout, `${target} exists\n`);
    }
  });

  test('a process that lives only in A is dead to B: the answer is B\'s', opts, async () => {
    const inB = tree!.innerPidsInUse();
    const candidates = [process.pid, process.ppid, ...readdirSync('/proc').filter((name) => /^\d+$/.test(name)).map(Number)];
    const onlyHere = candidates.find((pid) => pid > 1 && pidInUse(pid) && !inB.has(pid));
    assert.ok(onlyHere !== undefined, `no pid in use in A that is free in B (B uses ${[...inB].join(' ')})`);
    const result = await pidstat([`${pair.b.ipv4}:${sleeper}`, `${pair.b.ipv4}:${onlyHere}`]);
    assert.equal(result.code, 1, describeRun(result));
    assert.equal(result.stdout, `${pair.b.ipv4}:${sleeper} exists\n${pair.b.ipv4}:${onlyHere} dead\n`);
  });

  test('once the sleeper is killed in B, pidstat B:pid from A is dead, exit 1', opts, async (t) => {
    process.kill(sleeperHere, 'SIGKILL');
    // Gone from /proc once B's pid 1 has reaped it (a zombie would still exist).
    assert.ok(await waitFor(() => !pidInUse(sleeperHere), 5000), `the killed sleeper (pid ${sleeperHere} in A) is never reaped`);
    const result = await pidstat([`${pair.b.ipv4}:${sleeper}`]);
    assert.equal(result.code, 1, describeRun(result));
    assert.equal(result.stdout, `${pair.b.ipv4}:${sleeper} dead\n`);
    if (!pair.b.ipv6) return t.diagnostic(`IPv6 part skipped: ${pair.ipv6Missing}`);
    const six = await pidstat([`[${pair.b.ipv6}]:${sleeper}`]);
    assert.equal(six.code, 1, describeRun(six));
    assert.equal(six.stdout, `[${pair.b.ipv6}]:${sleeper} dead\n`);
  });

  test('the daemon in B stops on SIGTERM with exit 0; then A hears "no daemon listening" fast and ping is CRITICAL', opts, async (t) => {
    process.kill(daemonHere, 'SIGTERM');
    const [, status] = await tree!.waitFor(/^daemon-exit (\d+)$/m, { stream: 'stdout', timeoutMs: 6000 });
    assert.equal(status, '0', `daemon log: ${tree!.stderr()}`);
    assert.match(tree!.stderr(), /SIGTERM: stopping/);

    const result = await pidstat([`${pair.b.ipv4}:${sleeper}`]);
    assert.equal(result.code, 2, describeRun(result));
    assert.equal(result.stdout, `${pair.b.ipv4}:${sleeper} no_reply\n`);
    assert.match(result.stderr, /no daemon listening/);
    assert.ok(result.ms < 5000, `no_reply took ${Math.round(result.ms)} ms although B refuses with ICMP`);

    const ping = await pidstat(['ping', pair.b.ipv4]);
    t.diagnostic(`no_reply after ${Math.round(result.ms)} ms, CRITICAL after ${Math.round(ping.ms)} ms`);
    assert.equal(ping.code, 2, describeRun(ping));
    assert.match(ping.stdout, new RegExp(`^PIDSTATD CRITICAL - No response from pidstatd on ${pair.b.ipv4.replace(/\./g, '\\.')}:${port}(\\|time=.*)?\\n?$`));
  });
});
