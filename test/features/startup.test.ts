import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { BIN, binEnv, isRunning, ROOT, run, sleep, startDaemon, startSleeper, waitFor } from '../support/helpers.js';
import { commandStarted, descendants, pidfdsOf, start, watcherReady } from '../support/jobs.js';

/**
 * The bins run each command's bundle from V8's code cache beside it, made by
 * the build or the install (src/cli/start.ts). A cache must never change what
 * a command does: a missing one, one made from another build, one V8
 * refuses, and one that cannot be written all run the command as usual. Each
 * case runs on a copy of the package's run-time files, so the build the
 * other tests use is never touched.
 */

/** bin/, dist/bundle/, package.json and node_modules (a link), in a temp dir: the package without the addon. */
function copyOfPackage(): string {
  const dir = mkdtempSync(join(tmpdir(), 'pidstat-startup-'));
  cpSync(join(ROOT, 'bin'), join(dir, 'bin'), { recursive: true });
  mkdirSync(join(dir, 'dist'));
  cpSync(join(ROOT, 'dist', 'bundle'), join(dir, 'dist', 'bundle'), { recursive: true });
  cpSync(join(ROOT, 'package.json'), join(dir, 'package.json'));
  symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
  return dir;
}

/** What the commands print, run from `dir`: a version, a local answer, the help (which imports yargs lazily). */
async function outputs(dir: string, env: NodeJS.ProcessEnv = {}): Promise<string[]> {
  const bin = (name: string) => join(dir, 'bin', `${name}.cjs`);
  const runs = [
    [bin('pidstat'), '--version'],
    [bin('pidstat'), String(process.pid)],
    [bin('pidstat'), '--help'],
    [bin('pidwatch'), '--version'],
    [bin('pidstatd'), '--version'],
  ];
  const results = [];
  for (const [file, ...args] of runs) {
    // As sh(1) runs a bin: line 2 gives node the bin's options.
    const result = await run('/bin/sh', [file!, ...args], { env: binEnv(env) });
    assert.equal(result.stderr, '', `${file} ${args.join(' ')}`);
    results.push(`${result.code} ${result.stdout}`);
  }
  return results;
}

const buildLine = (text: string) => /^\/\/ build ([0-9a-f]+)\n/.exec(text)?.[1];

test('the build writes a code cache for each command, headed by its bundle\'s build id', () => {
  for (const name of ['pidstat', 'pidstatd', 'pidwatch']) {
    const id = buildLine(readFileSync(join(ROOT, 'dist', 'bundle', `${name}.cjs`), 'utf8'));
    assert.match(id ?? '', /^[0-9a-f]{32}$/, `${name}.cjs names its build`);
    const cache = readFileSync(join(ROOT, 'dist', 'bundle', `${name}.cache`));
    assert.equal(cache.subarray(0, 33).toString('latin1'), `${id}\n`);
    assert.ok(cache.length > 1000, `${name}.cache holds code (${cache.length} bytes)`);
  }
});

test('a command runs the same with its cache, without it, with another build\'s, and with one V8 refuses', async (t) => {
  const dir = copyOfPackage();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const cacheOf = (name: string) => join(dir, 'dist', 'bundle', `${name}.cache`);
  const expected = await outputs(dir);
  assert.match(expected[0]!, /^0 pidstat \d+\.\d+\.\d+/);
  assert.match(expected[1]!, /^0 localhost:\d+ exists\n$/);
  assert.match(expected[2]!, /^0 Usage:/);

  const good = Object.fromEntries(['pidstat', 'pidstatd', 'pidwatch'].map((name) => [name, readFileSync(cacheOf(name))]));
  // Another build's: the same V8 code, headed by an id this bundle does not have.
  for (const [name, data] of Object.entries(good)) writeFileSync(cacheOf(name), Buffer.concat([Buffer.from(`${'0'.repeat(32)}\n`), data.subarray(33)]));
  assert.deepEqual(await outputs(dir), expected, "another build's cache is ignored");
  // This build's id over bytes that are no code: V8 refuses them and compiles.
  for (const [name, data] of Object.entries(good)) writeFileSync(cacheOf(name), Buffer.concat([data.subarray(0, 33), Buffer.alloc(4096, 7)]));
  assert.deepEqual(await outputs(dir), expected, 'a cache V8 refuses is ignored');
  for (const name of Object.keys(good)) rmSync(cacheOf(name));
  assert.deepEqual(await outputs(dir), expected, 'no cache: compiled as usual');

  // PIDSTAT_WRITE_CODE_CACHE=1 makes the cache again, as the build does.
  await outputs(dir, { PIDSTAT_WRITE_CODE_CACHE: '1' });
  for (const [name, data] of Object.entries(good)) {
    assert.equal(readFileSync(cacheOf(name)).subarray(0, 33).toString('latin1'), data.subarray(0, 33).toString('latin1'), `${name}.cache rewritten`);
  }
  assert.deepEqual(await outputs(dir), expected);
});

/** The options a bin's second line gives node: `exec node '--opt' ... "$0" "$@"`. */
function binNodeOptions(dir: string, name: string): string[] {
  const line = readFileSync(join(dir, 'bin', `${name}.cjs`), 'utf8').split('\n')[1]!;
  const options = line.slice(line.indexOf('exec node ') + 'exec node '.length, line.indexOf('"$0"'));
  return [...options.matchAll(/'([^']*)'/g)].map((match) => match[1]!);
}

test("each command's cache is one V8 takes when node runs with the options of the command's bin", async () => {
  const start = pathToFileURL(join(ROOT, 'dist', 'src', 'cli', 'start.js')).href;
  for (const name of ['pidstat', 'pidstatd', 'pidwatch']) {
    const bundle = join(ROOT, 'dist', 'bundle', `${name}.cjs`);
    const check = `import { bundleScript } from ${JSON.stringify(start)};
      import { readFileSync } from 'node:fs';
      const script = bundleScript(${JSON.stringify(bundle)}, readFileSync(${JSON.stringify(bundle)}, 'utf8'), readFileSync(${JSON.stringify(bundle.replace(/cjs$/, 'cache'))}).subarray(33));
      process.stdout.write(String(script.cachedDataRejected));`;
    const options = binNodeOptions(ROOT, name);
    const result = await run(process.execPath, [...options, '--input-type=module', '-e', check], { env: binEnv() });
    assert.equal(result.stdout, 'false', `V8 refused ${name}.cache under ${options.join(' ')}: ${result.stderr}`);
  }
});

test('a pidstat command line is read with none of the packages imported lazily; only --help needs yargs', async (t) => {
  const dir = copyOfPackage();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  // No yargs, chalk or ora (src/cli/lazy.ts).
  rmSync(join(dir, 'node_modules'));
  mkdirSync(join(dir, 'node_modules'));
  const pidstat = (...args: string[]) => run(process.execPath, [join(dir, 'bin', 'pidstat.cjs'), ...args], { env: binEnv() });
  for (const line of [['--no-color', '--timeout', '2s'], ['--color=false', '-st', '2s'], ['-nocolor', '-timeout', '2s']]) {
    const read = await pidstat(...line, '--json', String(process.pid));
    assert.equal(read.code, 0, `${line.join(' ')}: ${read.stderr}`);
    assert.equal(read.stderr, '');
  }
  const help = await pidstat('--help');
  assert.notEqual(help.code, 0);
  assert.match(help.stderr, /yargs/);
});

test('a rebuilt bundle never runs with the code cached from the one before, though V8 would take it', async (t) => {
  const dir = copyOfPackage();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const bundle = join(dir, 'dist', 'bundle', 'pidstat.cjs');
  const before = readFileSync(bundle, 'utf8');
  // A rebuild of the same length that prints the version another way, with
  // its own build id, as scripts/bundle.mjs writes it; the old cache stays.
  const template = '`${spec.name} ${readVersion()}';
  assert.ok(before.includes(template), 'the bundle prints the version as this test expects');
  const rebuilt = before.replace(template, '`${spec.name}=${readVersion()}').replace(/^\/\/ build [0-9a-f]+\n/, `// build ${'f'.repeat(32)}\n`);
  assert.equal(rebuilt.length, before.length);
  writeFileSync(bundle, rebuilt);
  const result = await run(process.execPath, [join(dir, 'bin', 'pidstat.cjs'), '--version'], { env: binEnv() });
  assert.match(result.stdout, /^pidstat=\d+\.\d+\.\d+\n$/, `the rebuilt code ran: ${result.stdout}${result.stderr}`);
});

test('without the addon (no C compiler at install), the commands answer through dgram; PIDSTAT_IO=batch says what is missing', async (t) => {
  const dir = copyOfPackage();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const bin = (name: string) => join(dir, 'bin', `${name}.cjs`);
  // The daemon's command line with the copy's bin in place of the package's, its node options kept.
  const fromCopy = (command: string, args: string[]): [string, string[]] => [command, args.map((arg) => (arg === BIN.pidstatd ? bin('pidstatd') : arg))];
  const sleeper = startSleeper();
  t.after(() => sleeper.stop());
  const daemon = await startDaemon(['--bind', '127.0.0.1', '--debug'], { NOTIFY_SOCKET: '@pidstatd-no-addon' }, fromCopy);
  try {
    const said = /reading datagrams through Node's dgram \(.*pidstat_linux\.node was not built\)/;
    // Under systemd's Type=notify the start would time out: the log says so, once.
    const notify = /warning: NOTIFY_SOCKET is set, but the daemon cannot notify the service manager \(a Type=notify start times out; use Type=simple\): .*was not built/;
    // Each line is a write of its own, which this end of the pipe may read apart.
    assert.ok(await waitFor(() => said.test(daemon.log()) && notify.test(daemon.log()), 2000), daemon.log());
    await sleep(100);
    assert.equal(daemon.log().match(new RegExp(notify, 'g'))?.length, 1, daemon.log());
    const asked = await run(process.execPath, [bin('pidstat'), '--debug', '--no-local', '--port', String(daemon.port), '127.0.0.1', String(sleeper.pid)], { env: binEnv() });
    assert.equal(asked.stdout, `127.0.0.1:${sleeper.pid} exists\n`, asked.stderr);
    assert.match(asked.stderr, /reading sockets through Node's dgram/);
  } finally {
    await daemon.stop();
  }
  // Keys without the addon: the MACs come from node:crypto, on both sides.
  const keys = join(dir, 'keys');
  writeFileSync(keys, `3 ${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
  const keyed = await startDaemon(['--bind', '127.0.0.1', '--key-file', keys], {}, fromCopy);
  try {
    const asked = await run(process.execPath, [bin('pidstat'), '--key-file', keys, '--no-local', '--port', String(keyed.port), '127.0.0.1', String(sleeper.pid)], { env: binEnv() });
    assert.equal(asked.stdout, `127.0.0.1:${sleeper.pid} exists\n`, asked.stderr + keyed.log());
  } finally {
    await keyed.stop();
  }
  for (const [name, args] of [['pidstat', ['--no-local', '127.0.0.1', '1']], ['pidwatch', ['--pid', '1', 'true']], ['pidstatd', ['--foreground', '--port', '0']]] as const) {
    const result = await run('/bin/sh', [bin(name), ...args], { env: binEnv({ PIDSTAT_IO: 'batch' }) });
    assert.equal(result.code, 64, `${name}: ${result.stderr}`);
    assert.match(result.stderr, new RegExp(`^${name}: PIDSTAT_IO=batch, but the addon is not there \\(.*was not built\\): build it`));
  }
});

/** scripts/ and native/ in a temp dir, with the bundle an install has, and the prebuilt addons if asked. */
function copyOfSources(prebuilds: boolean): string {
  const dir = mkdtempSync(join(tmpdir(), 'pidstat-native-'));
  cpSync(join(ROOT, 'scripts'), join(dir, 'scripts'), { recursive: true });
  cpSync(join(ROOT, 'native'), join(dir, 'native'), { recursive: true });
  mkdirSync(join(dir, 'dist', 'bundle'), { recursive: true });
  writeFileSync(join(dir, 'dist', 'bundle', 'start.cjs'), '');
  if (prebuilds) cpSync(join(ROOT, 'prebuilds'), join(dir, 'prebuilds'), { recursive: true });
  return dir;
}

test('the install uses the prebuilt addon as it is, with no compiler', async (t) => {
  const dir = copyOfSources(true);
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const result = await run(process.execPath, [join(dir, 'scripts', 'build-native.mjs')], { env: binEnv({ CC: 'no-such-compiler' }) });
  assert.equal(result.code, 0, result.stderr);
  assert.equal(result.stderr, '');
  assert.ok(!existsSync(join(dir, 'dist', 'native')), 'nothing built');
});

test('the install builds the addon where the prebuilt one does not load, with the compiler there is', async (t) => {
  const dir = copyOfSources(true);
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  // What a prebuilt addon is on a system it does not fit (musl, an old glibc): a file dlopen refuses.
  writeFileSync(join(dir, 'prebuilds', `linux-${process.arch}`, 'pidstat_linux.node'), 'not an ELF file');
  const result = await run(process.execPath, [join(dir, 'scripts', 'build-native.mjs')], { env: binEnv() });
  if (/no-such|ENOENT/.test(result.stderr)) return t.skip(`no C compiler here: ${result.stderr.trim()}`);
  assert.equal(result.code, 0, result.stderr);
  assert.equal(result.stderr, '');
  const loaded = await run(process.execPath, ['-e', `console.log(typeof require(${JSON.stringify(join(dir, 'dist', 'native', 'pidstat_linux.node'))}).start)`]);
  assert.equal(loaded.stdout, 'function\n', loaded.stderr);
});

test('without the addon, pidwatch looks at its command every 200 ms: kill -9 of pidwatch still ends its `sleep 100`', async (t) => {
  const dir = copyOfPackage();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const sleeper = startSleeper();
  t.after(() => sleeper.stop());
  const job = start(t, ['--pid', String(sleeper.pid), 'sleep 100'], { command: join(dir, 'bin', 'pidwatch') });
  await commandStarted(job);
  let sleep100: number | undefined;
  assert.ok(await waitFor(() => (sleep100 = descendants(job.pid)[0]) !== undefined, 20_000), job.describe());
  // The copy has no addon: its watcher holds no pidfd, and polls once it shows what it watches.
  const watcher = await watcherReady(job.pid, { pidfds: 0 });
  assert.equal(pidfdsOf(watcher), 0, 'the watcher of the copy holds pidfds: it has an addon');
  process.kill(job.pid, 'SIGKILL');
  // A liveness bound (the bench measures how fast).
  assert.ok(await waitFor(() => !isRunning(sleep100!), 10_000), `sleep 100 (${sleep100}) still runs 10 s after pidwatch was killed: ${job.describe()}`);
});

test('the addon build never fails an install: without a prebuilt addon or a compiler it says why and leaves no addon', async (t) => {
  const dir = copyOfSources(false);
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const result = await run(process.execPath, [join(dir, 'scripts', 'build-native.mjs')], { env: binEnv({ CC: 'no-such-compiler' }) });
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stderr, /the addon of Linux system calls \(native\/linux\.c\) is not available: no prebuilt addon for linux-\w+, and none built: no-such-compiler: .*ENOENT/);
  assert.match(result.stderr, /work without it, with the same answers, more slowly: sockets are read through Node's dgram/);
  assert.throws(() => readFileSync(join(dir, 'dist', 'native', 'pidstat_linux.node')), { code: 'ENOENT' });
});
