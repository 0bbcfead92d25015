import { accessSync, closeSync, constants, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Script } from 'node:vm';
import { DAEMON_HEAP_OPTION } from '../daemon/heap.js';
import { INSPECT_PORT_OPTION } from '../daemon/inspector.js';
import { LOADER_IMPORT } from './lazy.js';
import { describeProblem, systemProblem } from '../sys/problems.js';

/**
 * What the bins run: a command's bundle, dist/bundle/NAME.cjs, compiled from
 * V8's code cache, NAME.cache, where one made from this very bundle is there
 * and this Node's V8 accepts it; else compiled afresh, as require() would.
 *
 * V8 saves what a run compiled: the build runs each command once for it
 * (scripts/code-cache.mjs, with WRITE_ENV set), and an installed package,
 * which runs no install script, at the first run that finds none of this
 * build's. The cache's first line is the build id the bundle's first line names
 * (scripts/bundle.mjs), so no cache ever runs with a bundle it was not made
 * from: V8 itself checks only the source's length. What it saves of a
 * command's start is the bench's 'start-up machinery' figure (README,
 * Performance).
 */

export type CommandName = 'pidstat' | 'pidstatd' | 'pidwatch';

const WRITE_ENV = 'PIDSTAT_WRITE_CODE_CACHE';
const BUILD_LINE = /^\/\/ build ([0-9a-f]+)\n/;

/** The bundle's cached code, when the cache holds this build's. */
function cachedCode(cacheFile: string, header: Buffer): Buffer | undefined {
  let data: Buffer;
  try {
    data = readFileSync(cacheFile);
  } catch {
    return undefined;
  }
  return data.subarray(0, header.length).equals(header) ? data.subarray(header.length) : undefined;
}

function ignoreSignal(): void {}

export function start(name: CommandName): void {
  // Before anything else: SIGUSR1 with no listener opens Node's inspector on
  // 127.0.0.1:9229, which lets any local user run code in a root daemon.
  // Each command adds its own listener (pidstatd logs its counters, pidwatch
  // passes it on); this one keeps it harmless until then, and in pidstat.
  // Before this line Node's own handler answers it, and the option the bins
  // start node with (src/daemon/inspector.ts) makes that inspector fail to open.
  process.on('SIGUSR1', ignoreSignal);
  // SIGHUP never stops pidstatd (pidstatd(8), SIGNALS), from this line on:
  // before it, Node has set SIGHUP back to its default, which ends a process.
  if (name === 'pidstatd') {
    process.on('SIGHUP', ignoreSignal);
    withDaemonOptions();
  }
  const dir = dirname(fileURLToPath(import.meta.url));
  const file = join(dir, `${name}.cjs`);
  (globalThis as Record<symbol, unknown>)[LOADER_IMPORT] = (specifier: string) => import(specifier);
  compileCached(name, file).run();
}

/**
 * The daemon runs with its bin's node options however it is started
 * (pidstatd(8), Node options): the bin's second line gives them, but
 * `node bin/pidstatd.cjs` skips that line. Such a start is made again with
 * them, in place and with its pid, where Node can exec (process.execve,
 * Node 22.15 and later); elsewhere it is told on stderr, once.
 */
function withDaemonOptions(): void {
  const missing = [INSPECT_PORT_OPTION, DAEMON_HEAP_OPTION].filter((option) => !process.execArgv.includes(option));
  if (missing.length === 0) return;
  const { execve } = process as { execve?: (file: string, args: string[], env: NodeJS.ProcessEnv) => never };
  let why = 'this Node cannot exec in place';
  if (execve !== undefined && process.argv[1] !== undefined) {
    try {
      execve(process.execPath, [process.execPath, ...missing, ...process.execArgv, ...process.argv.slice(1)], process.env);
    } catch (err) {
      why = (err as Error).message;
    }
  }
  process.stderr.write(`pidstatd: node runs without ${missing.join(' ')} (${why}): start the daemon through its bin, bin/pidstatd.cjs, not as node's script (pidstatd(8), Node options)\n`);
}

function writable(dir: string): boolean {
  try {
    accessSync(dir, constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * Writes the cache whole or not at all: a file of its own, never through a
 * link, renamed over the old one, so that runs side by side never read half
 * a cache. A failure is said only for `name`, when the build asked for it.
 */
function writeCache(cacheFile: string, data: Buffer, name: CommandName | undefined): void {
  const temporary = `${cacheFile}.${process.pid}.tmp`;
  try {
    const fd = openSync(temporary, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o644);
    try {
      writeSync(fd, data);
    } finally {
      closeSync(fd);
    }
    renameSync(temporary, cacheFile);
  } catch (err) {
    rmSync(temporary, { force: true });
    if (name !== undefined) process.stderr.write(`${name}: ${describeProblem(systemProblem(err, `cannot write ${cacheFile}`))}\n`);
  }
}

/** The bundle compiled from NAME.cache, when it holds this build's code. */
function compileCached(name: CommandName, file: string): { run(): void } {
  const dir = dirname(file);
  const cacheFile = join(dir, `${name}.cache`);
  const source = readFileSync(file, 'utf8');
  const build = BUILD_LINE.exec(source)?.[1];
  // A bundle that names no build (edited by hand) runs without a cache.
  const header = build === undefined ? undefined : Buffer.from(`${build}\n`);
  const cachedData = header === undefined ? undefined : cachedCode(cacheFile, header);
  const script = bundleScript(file, source, cachedData);
  const compiled = script.runInThisContext() as (...args: unknown[]) => void;
  const module = { exports: {} as { run(): void } };
  compiled.call(module.exports, module.exports, createRequire(file), module, file, dir);
  // The install runs no script (README, Install): the cache is made by the
  // first run that finds none of this build's, where the bundle's folder is
  // writable, and by the build (scripts/code-cache.mjs, WRITE_ENV). A cache
  // of this build that this V8 refuses (another Node's, other flags') is
  // left as it is: two Nodes taking turns would rewrite it at every run.
  const told = process.env[WRITE_ENV] === '1';
  if (header !== undefined && (told || (cachedData === undefined && writable(dir)))) {
    process.once('exit', () => writeCache(cacheFile, Buffer.concat([header, script.createCachedData()]), told ? name : undefined));
  }
  return module.exports;
}

/** The bundle in the wrapper of Node's CommonJS loader, so that it runs as a module; compiled from `cachedData` where V8 takes it. */
export function bundleScript(file: string, source: string, cachedData: Buffer | undefined): Script {
  const wrapped = `(function (exports, require, module, __filename, __dirname) {${source}\n})`;
  return new Script(wrapped, { filename: file, ...(cachedData !== undefined && { cachedData }) });
}
