import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, watch } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { after, test, type TestContext } from 'node:test';
import { ask, binCommand, binEnv, type Daemon, exchange, freePort, IS_ROOT, run, sleep, startDaemon, waitFor } from '../support/helpers.js';
import { pidIn, stopDetached } from '../support/detached.js';

/**
 * --metrics-file (pidstatd(8)): the counters in the Prometheus text
 * format for node_exporter's textfile collector, written every 15 s (here
 * much faster, through the suite's own interval) and at stop, replaced
 * atomically so that a reader never sees half a file.
 */

const scratch = mkdtempSync(join(tmpdir(), 'pidstatd-metrics-'));
after(() => rmSync(scratch, { recursive: true, force: true }));
let count = 0;

interface Family {
  type: string;
  help: string;
  samples: Map<string, number>;
}

/**
 * The exposition text read as the format says, strictly: every sample after
 * the HELP and TYPE lines of its name, no timestamps (the textfile collector
 * refuses them), counters named *_total, a newline at the end.
 * @see https://prometheus.io/docs/instrumenting/exposition_formats/#text-based-format
 */
function parseExposition(text: string): Map<string, Family> {
  assert.ok(text.endsWith('\n'), 'the text ends with a newline');
  const families = new Map<string, Family>();
  for (const line of text.slice(0, -1).split('\n')) {
    const comment = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.+)$/.exec(line);
    if (comment) {
      const [, kind, name, rest] = comment;
      const family = families.get(name!) ?? { type: '', help: '', samples: new Map() };
      families.set(name!, family);
      if (kind === 'HELP') {
        assert.equal(family.help, '', `one HELP for ${name}`);
        family.help = rest!;
      } else {
        assert.equal(family.type, '', `one TYPE for ${name}`);
        assert.match(rest!, /^(counter|gauge)$/, line);
        family.type = rest!;
      }
      continue;
    }
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\["\\n])*",?)*\})? (\S+)$/.exec(line);
    assert.ok(sample, `a sample line without a timestamp: ${JSON.stringify(line)}`);
    const [, name, labels = '', value] = sample;
    const family = families.get(name!);
    assert.ok(family && family.help !== '' && family.type !== '', `${name} has HELP and TYPE before its sample`);
    assert.ok(Number.isFinite(Number(value)), `${line}: a number`);
    family.samples.set(labels, Number(value));
  }
  for (const [name, family] of families) {
    assert.match(name, /^pidstatd_[a-z_]+$/);
    if (family.type === 'counter') assert.match(name, /_total$/, `${name}: a counter ends in _total`);
    assert.ok(family.samples.size > 0, `${name} has a sample`);
  }
  return families;
}

function value(families: Map<string, Family>, name: string): number | undefined {
  return families.get(name)?.samples.get('');
}

/** promtool's verdict on the text, where Debian's prometheus package is installed; undefined without it. */
function promtool(text: string): string | undefined {
  try {
    execFileSync('promtool', ['check', 'metrics'], { input: text, stdio: ['pipe', 'pipe', 'pipe'] });
    return '';
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stdout?: Buffer; stderr?: Buffer };
    if (e.code === 'ENOENT') return undefined;
    return `${e.stdout?.toString() ?? ''}${e.stderr?.toString() ?? ''}`;
  }
}

async function daemonWriting(t: TestContext, file: string, intervalMs: number, extra: string[] = []): Promise<Daemon> {
  const daemon = await startDaemon(['--bind', '127.0.0.1', '--metrics-file', file, ...extra], { PIDSTATD_TEST_INTERVAL_MS: String(intervalMs) });
  t.after(() => daemon.stop());
  return daemon;
}

test('after known traffic the file holds the counts, parses as Prometheus text, and says up 0 once stopped', async (t) => {
  const file = join(scratch, `counts-${++count}.prom`);
  const before = Date.now() / 1000;
  const daemon = await daemonWriting(t, file, 100);
  for (let i = 0; i < 3; i++) assert.equal(await ask(daemon.port, `PIDR ${process.pid} h 3`), `EXIS ${process.pid} 1 h`);
  for (const junk of ['hello', 'PIDR x h 3']) assert.deepEqual(await exchange(daemon.port, junk, { waitMs: 50 }), []);
  const read = () => parseExposition(readFileSync(file, 'utf8'));
  assert.ok(await waitFor(() => value(read(), 'pidstatd_malformed_total') === 2, 5000), readFileSync(file, 'utf8'));
  let families = read();
  assert.equal(value(families, 'pidstatd_received_total'), 5);
  assert.equal(value(families, 'pidstatd_answered_total'), 3);
  assert.equal(value(families, 'pidstatd_reply_failed_total'), 0);
  assert.equal(value(families, 'pidstatd_up'), 1);
  const started = value(families, 'pidstatd_start_time_seconds')!;
  assert.ok(started >= before - 1 && started <= Date.now() / 1000, `start time ${started} is this daemon's`);
  assert.equal(families.get('pidstatd_start_time_seconds')!.type, 'gauge');
  assert.match([...families.get('pidstatd_build_info')!.samples.keys()][0]!, /^\{version="\d+\.\d+\.\d+",io="(batch|dgram)"\}$/);
  // Every counter the daemon keeps, as SIGUSR1 names them: replyFailed as reply_failed.
  daemon.child.kill('SIGUSR1');
  assert.ok(await waitFor(() => /counters: /.test(daemon.log()), 5000));
  const logged = /counters: (.*)$/m.exec(daemon.log())![1]!.split(', ').map((pair) => pair.split(' ')[0]!);
  const counters = [...families].filter(([, family]) => family.type === 'counter').map(([name]) => name);
  assert.deepEqual(counters, logged.map((name) => `pidstatd_${name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)}_total`));
  const verdict = promtool(readFileSync(file, 'utf8'));
  if (verdict !== undefined) assert.equal(verdict, '', 'promtool check metrics');
  else t.diagnostic('promtool is not installed (Debian package prometheus): checked by the test\'s own parser only');

  assert.equal(await daemon.stop(), 0);
  families = read();
  assert.equal(value(families, 'pidstatd_up'), 0, 'written at stop');
  assert.equal(value(families, 'pidstatd_received_total'), 5);
  assert.deepEqual(readdirSync(scratch).filter((name) => name.includes('.tmp')), [], 'no temporary file is left');
  assert.equal(statSync(file).mode & 0o777, 0o644, 'readable by node_exporter\'s user');
});

test('a reader polling the file while it is rewritten never sees part of one', async (t) => {
  const file = join(scratch, `atomic-${++count}.prom`);
  const daemon = await daemonWriting(t, file, 2);
  assert.ok(await waitFor(() => statSync(file, { throwIfNoEntry: false }) !== undefined, 5000));
  const versions = new Set<number>();
  let reads = 0;
  // Until 50 rewrites have been read across (2 s here), 20 s at most: a liveness bound.
  const deadline = performance.now() + 20_000;
  while (versions.size <= 50 && performance.now() < deadline) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      assert.fail(`the file was missing for a moment: ${(err as Error).message}`);
    }
    reads++;
    assert.match(text, /^# HELP pidstatd_received_total [^]*\npidstatd_build_info\{[^}]*\} 1\n$/, `read ${reads} is a whole file: ${JSON.stringify(text.slice(-80))}`);
    versions.add(statSync(file).mtimeMs);
    // Traffic now and then, so the versions differ.
    if (reads % 200 === 0) await exchange(daemon.port, 'hello', { waitMs: 0 });
  }
  assert.ok(versions.size > 50, `the file was rewritten while read (${versions.size} versions in ${reads} reads)`);
});

test('detached: a relative --metrics-file is the user\'s directory\'s, and the server writes it', async (t) => {
  const dir = mkdtempSync(join(scratch, 'relative-'));
  const pidfile = join(dir, 'pidstatd.pid');
  t.after(() => stopDetached(pidfile));
  const port = await freePort();
  const started = await run(...binCommand('pidstatd', ['--port', String(port), '--bind', '127.0.0.1', '--pidfile', 'pidstatd.pid', '--metrics-file', 'pidstatd.prom']), {
    cwd: dir, env: binEnv({ PIDSTATD_TEST_INTERVAL_MS: '100' }), timeoutMs: 15_000,
  });
  assert.equal(started.code, 0, started.stderr);
  assert.equal(await ask(port, `PIDR ${process.pid} h 3`), `EXIS ${process.pid} 1 h`);
  const text = () => {
    try {
      return readFileSync(join(dir, 'pidstatd.prom'), 'utf8');
    } catch {
      return '';
    }
  };
  assert.ok(await waitFor(() => /^pidstatd_answered_total 1$/m.test(text()), 5000), text());
  process.kill(pidIn(pidfile)!, 'SIGTERM');
  assert.ok(await waitFor(() => /^pidstatd_up 0$/m.test(text()), 5000), 'written at stop');
});

test('a file that cannot be written is logged once, throttled, and the daemon goes on answering', async (t) => {
  const daemon = await daemonWriting(t, join(scratch, 'no-such-dir', 'pidstatd.prom'), 20);
  await sleep(1000);
  assert.equal(await ask(daemon.port, `PIDR ${process.pid} h 3`), `EXIS ${process.pid} 1 h`);
  const said = daemon.log().match(/cannot write the metrics file .*no-such-dir.*: no such file or directory.*/g) ?? [];
  assert.equal(said.length, 1, `one line, not one per write: ${daemon.log()}`);
  assert.equal(await daemon.stop(), 0);
});

test('a file not named *.prom is written, with a warning that the textfile collector skips it', async (t) => {
  const file = join(scratch, `counts-${++count}.txt`);
  const daemon = await daemonWriting(t, file, 1000);
  assert.ok(await waitFor(() => /warning: node_exporter's textfile collector reads only files named \*\.prom/.test(daemon.log()), 5000), daemon.log());
  assert.ok(await waitFor(() => statSync(file, { throwIfNoEntry: false }) !== undefined, 5000));
});

test('--metrics-file with no name is a usage error', async () => {
  const result = await run(...binCommand('pidstatd', ['--foreground', '--metrics-file', '']), { env: binEnv() });
  assert.equal(result.code, 64);
  assert.match(result.stderr, /^pidstatd: --metrics-file needs a file name\b.*\n$/);
});

/**
 * The metrics file often lives in a directory other users may write. Its
 * temporary name (pidstatd(8), --metrics-file) must not be one they can
 * guess: a directory made at a guessable name would block every write.
 */
test('a directory planted at the name .FILE.PID.tmp (another user\'s, where run as root) does not stop the writes', async (t) => {
  // As /tmp: world-writable and sticky, where nobody can reach it.
  const dir = mkdtempSync(join(tmpdir(), 'pidstatd-metrics-shared-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  chmodSync(dir, 0o1777);
  const file = join(dir, 'pidstatd.prom');
  const daemon = await daemonWriting(t, file, 50);
  const planted = join(dir, `.${basename(file)}.${daemon.pid}.tmp`);
  const asNobody = IS_ROOT ? ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', '--'] : [];
  const made = spawnSync(asNobody[0] ?? 'mkdir', [...asNobody.slice(1), ...(IS_ROOT ? ['mkdir'] : []), planted], { encoding: 'utf8' });
  assert.equal(made.status, 0, `mkdir ${planted}: ${made.stderr}`);
  assert.ok(statSync(planted).isDirectory());
  assert.equal(await ask(daemon.port, `PIDR ${process.pid} h 3`), `EXIS ${process.pid} 1 h`);
  const text = () => readFileSync(file, 'utf8');
  assert.ok(await waitFor(() => /^pidstatd_answered_total 1$/m.test(text()), 5000), `a write after the mkdir landed: ${text()}`);
  assert.doesNotMatch(daemon.log(), /cannot write the metrics file/, daemon.log());
  assert.equal(await daemon.stop(), 0);
  assert.match(text(), /^pidstatd_up 0$/m, 'and the last one, at stop');
});

test('the temporary name is not fixed: each write picks a new random one', async (t) => {
  const dir = mkdtempSync(join(scratch, 'names-'));
  const file = join(dir, 'pidstatd.prom');
  const names = new Set<string>();
  const watcher = watch(dir, (_event, name) => {
    if (name !== null && name !== basename(file)) names.add(String(name));
  });
  t.after(() => watcher.close());
  const daemon = await daemonWriting(t, file, 20);
  assert.ok(await waitFor(() => names.size >= 5, 5000), `temporary files seen: ${[...names].join(' ')}`);
  await daemon.stop();
  for (const name of names) assert.match(name, /^\.pidstatd\.prom\.[0-9a-f]{16}\.tmp$/, 'a dot file, 64 random bits, not *.prom');
  assert.ok(![...names].some((name) => name.includes(`.${daemon.pid}.`)), 'no part of it is the pid');
});
