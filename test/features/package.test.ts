import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, realpathSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { binEnv, deadPid, freePort, ROOT, run, type RunResult } from '../support/helpers.js';

/**
 * The package as a user gets it: `npm pack`, the tarball's contents, a global
 * install into a temporary prefix by an npm that finds no C compiler, the
 * installed commands with the prebuilt addon, manual pages and systemd
 * units, the other architecture's prebuilt addon under qemu, and the library
 * type-checked and run from a fresh project; and `npm pack` on a machine
 * with only its own compiler. Every process started here is stopped by its
 * pid.
 */

const PKG = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { name: string; version: string };
const TSC = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
const NPM_TIMEOUT_MS = 90_000;

/** Whether a program is on PATH. */
function has(program: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${program}`], { stdio: 'ignore' }).status === 0;
}

/**
 * npm's environment: this node first on PATH, and none of the npm_* variables
 * an enclosing `npm test` sets (npm_config_global, npm_config_prefix...) but
 * those that say where the registry and the cache are.
 */
function npmEnv(): NodeJS.ProcessEnv {
  const env = binEnv({ PATH: `${dirname(process.execPath)}:${process.env['PATH'] ?? '/usr/bin:/bin'}` });
  for (const key of Object.keys(env)) {
    if (/^npm_/i.test(key) && !/^npm_config_(cache|registry|userconfig|globalconfig|cafile|proxy|https_proxy|noproxy|strict_ssl)$/i.test(key)) delete env[key];
  }
  return env;
}

function npm(args: string[], cwd: string, env = npmEnv()): Promise<RunResult> {
  return run('npm', args, { cwd, env, timeoutMs: NPM_TIMEOUT_MS });
}

/** The C compilers a build could try, none of which must be found by an install without one. */
const COMPILERS = ['cc', 'gcc', 'c99', 'clang', 'tcc'];

/**
 * npm's environment on a machine without a C compiler: PATH is a folder of
 * links to node, npm and the shell alone, and CC leads nowhere.
 */
function npmEnvWithoutCompiler(dir: string): NodeJS.ProcessEnv {
  mkdirSync(dir);
  const npmCli = realpathSync(spawnSync('sh', ['-c', 'command -v npm'], { encoding: 'utf8' }).stdout.trim());
  for (const [name, target] of [['node', process.execPath], ['npm', npmCli], ['sh', '/bin/sh']] as const) symlinkSync(target, join(dir, name));
  const env = { ...npmEnv(), PATH: dir, CC: '/nonexistent' };
  for (const cc of COMPILERS) assert.notEqual(spawnSync('/bin/sh', ['-c', `command -v ${cc}`], { env }).status, 0, `${cc} is on the stripped PATH`);
  return env;
}

/** This machine's architecture and the other one the package carries an addon for, as Node and Debian name them. */
const ARCH = process.arch;
const OTHER = ARCH === 'arm64'
  ? { arch: 'x64', qemu: 'qemu-x86_64', sysroot: '/usr/x86_64-linux-gnu', gcc: 'x86_64-linux-gnu-gcc', debian: 'gcc-x86-64-linux-gnu' }
  : { arch: 'arm64', qemu: 'qemu-aarch64', sysroot: '/usr/aarch64-linux-gnu', gcc: 'aarch64-linux-gnu-gcc', debian: 'gcc-aarch64-linux-gnu' };
/** The other architecture's Node, where .ci/run installed it (the registry's node-linux-ARCH package). */
const OTHER_NODE = join(ROOT, '.ci', 'node24', OTHER.arch, 'node_modules', `node-linux-${OTHER.arch}`, 'bin', 'node');

/** Why an install failed, when it is the network's fault (a reason to skip), else undefined. */
function offlineReason(result: RunResult): string | undefined {
  const text = result.stderr + result.stdout;
  if (!/E(NOTFOUND|AI_AGAIN|CONNREFUSED|CONNRESET|TIMEDOUT|NETUNREACH|NOTCACHED)|network|offline|getaddrinfo|proxy|socket hang up/i.test(text)) return undefined;
  const line = text.split('\n').find((l) => /npm (error|ERR!) (code|network|request)/i.test(l)) ?? text.trim().split('\n').at(-1);
  return `npm cannot reach a registry for the dependencies, and they are not in the cache: ${line}`;
}

function skip(t: TestContext, reason: string): void {
  t.diagnostic(reason);
  t.skip(reason);
}

/** A process started here, and its stderr so far. */
interface Started {
  child: ChildProcess;
  stderr(): string;
  stop(): Promise<void>;
}

function start(command: string, args: string[], env: NodeJS.ProcessEnv): Started {
  const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'], env });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return {
    child,
    stderr: () => stderr,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(killer);
    },
  };
}

/** Waits for a line matching `pattern` on the process's stderr. */
async function waitForLine(started: Started, pattern: RegExp, timeoutMs = 15_000): Promise<RegExpExecArray> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const match = pattern.exec(started.stderr());
    if (match) return match;
    if (started.child.exitCode !== null || started.child.signalCode !== null) {
      throw new Error(`exited (${started.child.exitCode ?? started.child.signalCode}) before ${pattern}: ${started.stderr()}`);
    }
    if (performance.now() > deadline) throw new Error(`no ${pattern} within ${timeoutMs} ms: ${started.stderr()}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** The library as a user's program uses it: a daemon, a client, the local probe. */
const PROGRAM = `import { PidStatClient, localPidExists, startServer, type Result } from 'pidstat';

const dead = Number(process.argv[2]);
const server = await startServer({ port: 0, bind: '127.0.0.1' });
const client = new PidStatClient({ port: server.address().port, timeoutMs: 500, tries: 4, local: false });
try {
  const results: Result[] = await client.queryMany([
    { host: '127.0.0.1', pid: process.pid },
    { host: '127.0.0.1', pid: dead },
  ]);
  const local: boolean | undefined = localPidExists(process.pid);
  const states: Array<Result['state']> = results.map((r) => r.state);
  console.log(JSON.stringify({ states, local, answered: server.stats.answered }));
} finally {
  await client.close();
  await server.close();
}
`;

/** What must not type-check: the declarations are real types, not any. */
const WRONG = `import { PidStatClient, type Result } from 'pidstat';

const state: Result['state'] = 'alive';
new PidStatClient({ port: 'twelve' });
export { state };
`;

test('npm pack, npm install -g, and the package at work', { timeout: 240_000 }, async (t) => {
  const tmp = mkdtempSync(join(tmpdir(), 'pidstat-package-'));
  t.after(() => rmSync(tmp, { recursive: true, force: true }));

  // npm pack as a release runs it (prepack, postpack), in a copy of what it
  // packs: prepack rewrites package.json while it packs, which other tests
  // read. The build is fresh (npm test builds first): PIDSTAT_PACK_AS_BUILT.
  const source = join(tmp, 'source');
  for (const file of ['package.json', 'README.md', 'LICENSE', 'CHANGELOG.md', 'bin', 'dist/bundle', 'dist/src', 'native', 'prebuilds', 'scripts', 'man', 'doc', 'contrib']) {
    cpSync(join(ROOT, file), join(source, file), { recursive: true, preserveTimestamps: true });
  }
  const packed = await npm(['pack', '--json', '--pack-destination', tmp], source, { ...npmEnv(), PIDSTAT_PACK_AS_BUILT: '1' });
  assert.equal(packed.code, 0, packed.stderr);
  const [{ filename }] = JSON.parse(packed.stdout.slice(packed.stdout.indexOf('['))) as [{ filename: string }];
  const tarball = join(tmp, filename);

  await t.test('the packed package.json carries no script, and the one packed from is put back', async () => {
    const shipped = JSON.parse((await run('tar', ['-xzOf', tarball, 'package/package.json'])).stdout) as Record<string, unknown>;
    assert.equal(shipped['scripts'], undefined, 'an install runs no script of ours, and npm has none to warn of');
    assert.equal(shipped['version'], PKG.version);
    assert.equal(readFileSync(join(source, 'package.json'), 'utf8'), readFileSync(join(ROOT, 'package.json'), 'utf8'));
    assert.ok(!existsSync(join(source, '.package.json.unpacked')));
  });

  await t.test('the tarball holds what a user needs and nothing else', async () => {
    const listed = await run('tar', ['-tzf', tarball]);
    assert.equal(listed.code, 0, listed.stderr);
    const files = listed.stdout.split('\n').filter((line) => line !== '' && !line.endsWith('/')).map((line) => line.replace(/^package\//, ''));
    const expected = [
      'package.json', 'README.md', 'LICENSE', 'CHANGELOG.md',
      'bin/pidstat.cjs', 'bin/pidstatd.cjs', 'bin/pidwatch', 'bin/pidwatch.cjs',
      'dist/bundle/pidstat.cjs', 'dist/bundle/pidstatd.cjs', 'dist/bundle/pidwatch.cjs',
      'dist/src/index.js', 'dist/src/index.d.ts',
      'man/pidstat.1', 'man/pidwatch.1', 'man/pidstatd.8', 'doc/protocol.md',
      'contrib/systemd/pidstatd.service', 'contrib/systemd/pidstatd.socket',
      'dist/bundle/start.cjs',
      'native/linux.c', 'scripts/build-native.mjs',
      `prebuilds/linux-${ARCH}/pidstat_linux.node`,
    ];
    for (const file of expected) assert.ok(files.includes(file), `${file} is missing from the tarball`);
    for (const file of files) {
      assert.match(file, /^(package\.json|README\.md|LICENSE|CHANGELOG\.md|bin\/|dist\/bundle\/|dist\/src\/|man\/|doc\/|contrib\/|native\/linux\.c$|prebuilds\/linux-(x64|arm64)\/pidstat_linux\.node$|scripts\/build-native\.mjs$)/, `${file} does not belong in the tarball`);
      assert.doesNotMatch(file, /(^|\/)test(s)?\/|\.test\.|\.spec\./, `${file}: tests do not belong in the tarball`);
      assert.ok(!file.endsWith('.ts') || file.endsWith('.d.ts'), `${file}: TypeScript sources do not belong in the tarball`);
      assert.doesNotMatch(file, /\.(map|tgz|tsbuildinfo)$/, `${file} does not belong in the tarball`);
    }
    // A V8 code cache holds the path of the bundle it was made from, and serves only the Node that made it: each command makes its own.
    assert.deepEqual(files.filter((file) => file.endsWith('.cache')), [], 'code caches do not belong in the tarball');
    const verbose = (await run('tar', ['-tvzf', tarball])).stdout;
    for (const file of ['bin/pidstat.cjs', 'bin/pidstatd.cjs', 'bin/pidwatch']) {
      assert.match(verbose, new RegExp(`^-rwxr-xr-x .* package/${file}$`, 'm'), `${file} is executable`);
    }
  });

  await t.test('no shipped file names the directory the package was built in', async () => {
    const unpacked = join(tmp, 'unpacked');
    mkdirSync(unpacked);
    const extracted = await run('tar', ['-xzf', tarball, '-C', unpacked]);
    assert.equal(extracted.code, 0, extracted.stderr);
    const buildDir = Buffer.from(ROOT.replace(/\/$/, ''));
    const root = join(unpacked, 'package');
    const files = (readdirSync(root, { recursive: true }) as string[]).filter((file) => statSync(join(root, file)).isFile());
    assert.ok(files.includes('dist/bundle/pidstat.cjs'), `the tarball unpacked: ${files.join(' ')}`);
    const naming = files.filter((file) => readFileSync(join(root, file)).includes(buildDir));
    assert.deepEqual(naming, [], `these shipped files name ${buildDir.toString()}`);
  });

  await t.test('the tarball carries the addon prebuilt for linux-x64 and linux-arm64, naming no path of this machine', async (t) => {
    const listed = (await run('tar', ['-tzf', tarball])).stdout;
    if (!listed.includes(`package/prebuilds/linux-${OTHER.arch}/pidstat_linux.node`) && !has(OTHER.gcc)) {
      return skip(t, `no prebuilt addon for linux-${OTHER.arch}: ${OTHER.gcc} is not installed (.ci/run installs it; npm pack packs without it, npm publish refuses)`);
    }
    const dir = join(tmp, 'prebuilds-unpacked');
    mkdirSync(dir);
    for (const arch of ['x64', 'arm64']) {
      const file = `package/prebuilds/linux-${arch}/pidstat_linux.node`;
      assert.equal((await run('tar', ['-xzf', tarball, '-C', dir, file])).code, 0, `${file} is not in the tarball`);
      const data = readFileSync(join(dir, file));
      assert.equal(data.readUInt16LE(18), arch === 'x64' ? 62 : 183, `${file} is an ELF file for ${arch}`);
      assert.equal(data.indexOf(ROOT.replace(/\/$/, '')), -1, `${file} names ${ROOT}`);
    }
  });

  // One install serves every check below: npm with no C compiler in reach.
  const prefix = join(tmp, 'global');
  const installed = await npm(['install', '-g', '--prefix', prefix, '--no-audit', '--no-fund', '--prefer-offline', tarball], tmp, npmEnvWithoutCompiler(join(tmp, 'path')));
  if (installed.code !== 0) {
    const reason = offlineReason(installed);
    if (reason !== undefined) return skip(t, reason);
    assert.fail(`npm install -g failed:\n${installed.stderr}`);
  }
  const bin = (name: string) => join(prefix, 'bin', name);
  const env = binEnv({ PATH: `${dirname(process.execPath)}:${process.env['PATH'] ?? '/usr/bin:/bin'}` });
  const installedRoot = join(prefix, 'lib', 'node_modules', PKG.name);

  await t.test('the install, without a compiler, ran nothing, built nothing, and warned of nothing', () => {
    assert.ok(!existsSync(join(installedRoot, 'dist', 'native')), 'the prebuilt addon is used as it is');
    assert.doesNotMatch(installed.stderr, /warn/, installed.stderr);
    const built = readdirSync(join(installedRoot, 'dist', 'bundle'));
    assert.deepEqual(built.filter((file) => file.endsWith('.cache')), [], 'no code cache before a command runs');
  });

  await t.test('the installed commands print the version of package.json, and the first run of each caches its code', async () => {
    for (const name of ['pidstat', 'pidstatd', 'pidwatch']) {
      const result = await run(bin(name), ['--version'], { env });
      assert.equal(result.code, 0, result.stderr);
      assert.equal(result.stdout, `${name} ${PKG.version}\n`);
      assert.ok(existsSync(join(installedRoot, 'dist', 'bundle', `${name}.cache`)), `${name}.cache made by its first run`);
    }
  });

  await t.test('the installed pidstatd answers the installed pidstat, and pidwatch ends at a dead pid', async () => {
    const daemon = start(bin('pidstatd'), ['--foreground', '--debug', '--port', '0', '--bind', '127.0.0.1'], env);
    try {
      const port = (await waitForLine(daemon, /listening on 127\.0\.0\.1:(\d+)$/m))[1]!;
      // The prebuilt addon, though the install found no compiler.
      await waitForLine(daemon, /reading datagrams in batches/);
      const pid = String(daemon.child.pid);
      const asked = await run(bin('pidstat'), ['--no-local', '--port', port, '127.0.0.1', pid], { env });
      assert.equal(asked.stdout, `127.0.0.1:${pid} exists\n`, asked.stderr);
      assert.equal(asked.code, 0);
    } finally {
      await daemon.stop();
    }
    const watched = await run(bin('pidwatch'), ['--pid', String(await deadPid()), 'sleep 5'], { env, timeoutMs: 10_000 });
    assert.ok(watched.ms < 4000, `pidwatch took ${Math.round(watched.ms)} ms`);
    assert.equal(watched.signal, 'SIGHUP', `pidwatch ends as its command did, by SIGHUP (exit ${watched.code}): ${watched.stderr}`);
  });

  await t.test('the installed pidstatd serves a socket handed over by socket activation', async (t) => {
    if (!has('systemd-socket-activate')) return skip(t, 'systemd-socket-activate is not installed (Debian package systemd)');
    const port = await freePort();
    // It holds the socket, and at the first datagram execs pidstatd (same pid) with it as fd 3.
    const activator = start('systemd-socket-activate', ['--datagram', '--listen', `127.0.0.1:${port}`, '-E', 'PATH', bin('pidstatd'), '--foreground', '--port', '0'], env);
    try {
      await waitForLine(activator, /Listening on/);
      const pid = String(activator.child.pid);
      const asked = await run(bin('pidstat'), ['--no-local', '--port', String(port), '--try-timeout', '500ms', '127.0.0.1', pid], { env });
      assert.equal(asked.stdout, `127.0.0.1:${pid} exists\n`, `${asked.stderr}\n${activator.stderr()}`);
      // --port 0 is ignored: the daemon serves the inherited socket.
      assert.match(activator.stderr(), new RegExp(`pidstatd: listening on 127\\.0\\.0\\.1:${port}$`, 'm'));
    } finally {
      await activator.stop();
    }
    assert.match(activator.stderr(), /SIGTERM: stopping/);
  });

  await t.test('npm installs the manual pages, and man shows them', async (t) => {
    for (const page of ['man1/pidstat.1', 'man1/pidwatch.1', 'man8/pidstatd.8']) {
      assert.ok(readdirSync(join(prefix, 'share', 'man', dirname(page))).includes(page.split('/')[1]!), `${page} is not installed`);
    }
    const manEnv = { ...env, MANPAGER: 'cat', PAGER: 'cat', MANWIDTH: '80' };
    let shown: RunResult;
    if (has('man')) shown = await run('man', ['-M', join(prefix, 'share', 'man'), 'pidstat'], { env: manEnv });
    else if (has('mandoc')) shown = await run('mandoc', ['-T', 'utf8', join(prefix, 'share', 'man', 'man1', 'pidstat.1')], { env: manEnv });
    else return skip(t, 'neither man nor mandoc is installed');
    assert.equal(shown.code, 0, shown.stderr);
    assert.match(shown.stdout.replace(/.\x08/g, ''), /^PIDSTAT\(1\)/m);
    assert.match(shown.stdout.replace(/.\x08/g, ''), /EXIT STATUS/);
  });

  await t.test('the shipped systemd units pass systemd-analyze verify', async (t) => {
    const unitDir = join(prefix, 'lib', 'node_modules', PKG.name, 'contrib', 'systemd');
    const service = readFileSync(join(unitDir, 'pidstatd.service'), 'utf8');
    const socket = readFileSync(join(unitDir, 'pidstatd.socket'), 'utf8');
    // Ready when it answers, and watched (pidstatd(8), Service manager notification).
    assert.match(service, /^Type=notify$/m);
    assert.match(service, /^NotifyAccess=main$/m);
    assert.match(service, /^WatchdogSec=[1-9][0-9]*s$/m);
    assert.match(service, /^ExecStart=\/usr(\/local)?\/bin\/pidstatd --foreground$/m);
    assert.match(service, /^Restart=on-failure$/m);
    assert.match(service, /^CapabilityBoundingSet=CAP_KILL$/m);
    // It must see every process, and node's JIT needs writable code.
    assert.doesNotMatch(service, /^(DynamicUser|PrivatePIDs|MemoryDenyWriteExecute|ProtectProc|ProcSubset)=/m);
    assert.match(socket, /^ListenDatagram=1752$/m);
    assert.match(socket, /^BindIPv6Only=both$/m);
    if (!has('systemd-analyze')) return skip(t, 'systemd-analyze is not installed (Debian package systemd)');
    // verify wants ExecStart= to exist and Documentation=man: pages to open: the installed ones.
    const dir = join(tmp, 'units');
    mkdirSync(dir);
    cpSync(join(unitDir, 'pidstatd.socket'), join(dir, 'pidstatd.socket'));
    writeFileSync(join(dir, 'pidstatd.service'), service.replace(/^ExecStart=\S+/m, `ExecStart=${bin('pidstatd')}`));
    const verified = await run('systemd-analyze', ['verify', join(dir, 'pidstatd.service'), join(dir, 'pidstatd.socket')], {
      env: { ...env, MANPATH: join(prefix, 'share', 'man'), SYSTEMD_LOG_COLOR: '0' },
    });
    const ours = `${verified.stdout}${verified.stderr}`.split('\n').filter((line) => /pidstatd/.test(line));
    assert.deepEqual(ours, [], 'systemd-analyze verify has something to say about our units');
    assert.equal(verified.code, 0, verified.stderr);
  });

  await t.test(`the installed linux-${OTHER.arch} addon loads into the registry's Node for ${OTHER.arch} under ${OTHER.qemu}, and opens a socket`, async (t) => {
    if (!has(OTHER.qemu)) return skip(t, `${OTHER.qemu} is not installed (Debian package qemu-user)`);
    if (!existsSync(join(OTHER.sysroot, 'lib'))) return skip(t, `no ${OTHER.arch} C library under ${OTHER.sysroot} (Debian package libc6-${OTHER.arch === 'arm64' ? 'arm64' : 'amd64'}-cross)`);
    if (!existsSync(OTHER_NODE)) return skip(t, `no Node for ${OTHER.arch} at ${OTHER_NODE} (.ci/run installs it from the registry)`);
    const addon = join(installedRoot, 'prebuilds', `linux-${OTHER.arch}`, 'pidstat_linux.node');
    const script = `const a = require(${JSON.stringify(addon)}); const fd = a.open('127.0.0.1', 0, false); console.log(process.arch, typeof a.unixSend, a.address(fd).join(' '))`;
    const loaded = await run(OTHER.qemu, ['-L', OTHER.sysroot, OTHER_NODE, '-e', script], { timeoutMs: 60_000 });
    assert.equal(loaded.code, 0, loaded.stderr);
    assert.match(loaded.stdout, new RegExp(`^${OTHER.arch} function 127\\.0\\.0\\.1 4 [1-9]\\d*\n$`));
  });

  await t.test('a TypeScript project installs the tarball, type-checks against it and runs', async (t) => {
    const project = join(tmp, 'project');
    mkdirSync(project);
    writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'scratch', version: '1.0.0', private: true, type: 'module' }, null, 2));
    const added = await npm(['install', '--no-audit', '--no-fund', '--prefer-offline', '--no-package-lock', tarball], project);
    if (added.code !== 0) {
      const reason = offlineReason(added);
      if (reason !== undefined) return skip(t, reason);
      assert.fail(`npm install failed:\n${added.stderr}`);
    }
    // One tsc run for both files (each run checks @types/node whole): wrong.ts
    // must fail and main.ts must not, and main.js is written all the same.
    const tsconfig = {
      compilerOptions: {
        target: 'ES2022',
        module: 'NodeNext',
        moduleResolution: 'NodeNext',
        strict: true,
        // The package's own declarations are checked too, under the user's settings.
        skipLibCheck: false,
        outDir: 'out',
        // @types/node from this repository: the scratch project installs only the tarball.
        typeRoots: [join(ROOT, 'node_modules', '@types')],
        types: ['node'],
      },
      include: ['main.ts', 'wrong.ts'],
    };
    writeFileSync(join(project, 'main.ts'), PROGRAM);
    writeFileSync(join(project, 'wrong.ts'), WRONG);
    writeFileSync(join(project, 'tsconfig.json'), JSON.stringify(tsconfig, null, 2));

    const checked = await run(process.execPath, [TSC, '-p', 'tsconfig.json'], { cwd: project, timeoutMs: 60_000 });
    const errors = checked.stdout.split('\n').filter((line) => /error TS/.test(line));
    assert.deepEqual(errors.filter((line) => !line.startsWith('wrong.ts(')), [], `tsc: main.ts and the package's declarations check:\n${checked.stdout}${checked.stderr}`);
    assert.notEqual(checked.code, 0, 'tsc accepts a wrong state and a wrong port: the types are not there');
    assert.match(checked.stdout, /wrong\.ts\(3,7\): error TS2322/);
    assert.match(checked.stdout, /wrong\.ts\(4,\d+\): error TS2322/);

    const ran = await run(process.execPath, [join(project, 'out', 'main.js'), String(await deadPid())], { cwd: project, timeoutMs: 20_000 });
    assert.equal(ran.code, 0, ran.stderr);
    assert.deepEqual(JSON.parse(ran.stdout), { states: ['exists', 'dead'], local: true, answered: 2 });
  });
});

/**
 * A PATH with every program of this one but those whose name starts with
 * `left`: a folder of links, this node first.
 */
function pathWithout(dir: string, left: string): string {
  mkdirSync(dir);
  symlinkSync(process.execPath, join(dir, 'node'));
  const linked = new Set(['node']);
  for (const from of (process.env['PATH'] ?? '/usr/bin:/bin').split(':')) {
    let names: string[];
    try {
      names = readdirSync(from || '.');
    } catch {
      continue;
    }
    for (const name of names) {
      if (linked.has(name) || name.startsWith(left)) continue;
      linked.add(name);
      symlinkSync(join(from || '.', name), join(dir, name));
    }
  }
  return dir;
}

test('npm pack needs only this machine\'s compiler: without the other architecture\'s it packs, warning in one line; npm publish refuses', { timeout: 120_000 }, async (t) => {
  if (process.platform !== 'linux' || (ARCH !== 'x64' && ARCH !== 'arm64')) return skip(t, `the package is prebuilt on linux-x64 and linux-arm64, not on ${process.platform}-${ARCH}`);
  if (!has(process.env['CC'] || 'cc')) return skip(t, 'no C compiler (cc) on PATH');
  const tmp = mkdtempSync(join(tmpdir(), 'pidstat-pack-'));
  t.after(() => rmSync(tmp, { recursive: true, force: true }));
  // The package before its build: the addon's source and script, and no prebuilt addon yet.
  const pkg = join(tmp, 'pidstat');
  for (const file of ['package.json', 'native', 'scripts/build-native.mjs', 'scripts/pack.mjs', 'bin', 'README.md', 'LICENSE']) cpSync(join(ROOT, file), join(pkg, file), { recursive: true });
  // The TypeScript build wants the dev dependencies, and is tested above: here prepack builds the addons alone.
  const env = { ...npmEnv(), PATH: pathWithout(join(tmp, 'path'), OTHER.gcc), PIDSTAT_PACK_AS_BUILT: '1' };
  assert.notEqual(spawnSync('/bin/sh', ['-c', `command -v ${OTHER.gcc}`], { env }).status, 0, `${OTHER.gcc} is on the PATH made without it`);

  const packed = await npm(['pack', '--json', '--pack-destination', tmp], pkg, env);
  assert.equal(packed.code, 0, packed.stderr);
  const ours = packed.stderr.split('\n').filter((line) => line.startsWith('pidstat:'));
  assert.deepEqual(ours, [`pidstat: warning: packing without the addon for linux-${OTHER.arch}: ${OTHER.gcc} is not on PATH (Debian: apt-get install ${OTHER.debian}); npm publish insists on it.`]);
  const [{ filename }] = JSON.parse(packed.stdout.slice(packed.stdout.indexOf('['))) as [{ filename: string }];
  const listed = await run('tar', ['-tzf', join(tmp, filename)]);
  const prebuilt = listed.stdout.split('\n').filter((line) => line.startsWith('package/prebuilds/'));
  assert.deepEqual(prebuilt, [`package/prebuilds/linux-${ARCH}/pidstat_linux.node`]);

  const published = await npm(['run', 'prepublishOnly'], pkg, env);
  assert.notEqual(published.code, 0, 'prepublishOnly passes without the other architecture\'s addon');
  assert.match(published.stderr, new RegExp(`^pidstat: no prebuilt addon for linux-${OTHER.arch}: ${OTHER.gcc} is not on PATH \\(Debian: apt-get install ${OTHER.debian}\\)\\.$`, 'm'));
  assert.match(published.stderr, new RegExp(`^pidstat: npm publish needs the addon prebuilt for both linux-x64 and linux-arm64, and linux-${OTHER.arch} has none \\(see above\\)\\.$`, 'm'));
});
