import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Script } from 'node:vm';
import { DAEMON_HEAP_OPTION } from '../heap.js';
import { INSPECT_PORT_OPTION } from '../inspector.js';
import { LOADER_IMPORT } from './lazy.js';

/**
 * What the bins run: a command's bundle, dist/bundle/NAME.cjs, compiled from
 * V8's code cache, NAME.cache, where one made from this very bundle is there
 * and this Node's V8 accepts it; else compiled afresh, as require() would.
 *
 * scripts/code-cache.mjs runs each command once with WRITE_ENV set, and V8
 * saves what that run compiled. The cache's first line is the build id the
 * bundle's first line names (scripts/bundle.mjs), so no cache ever runs with
 * a bundle it was not made from: V8 itself checks only the source's length.
 *
 * The cache saves 4.1 to 4.7 ms of pidstat's 29 to 30 ms start-to-answer
 * on Node 20, and 4.5 to 4.8 ms on Node 24, where Node's own compile cache
 * (module.enableCompileCache(), Node 22+), which it replaced, saved 0.4 to
 * 0.5 ms (bench figure 'start-up machinery', test/bench/startup.ts, two runs
 * of 2026-12-05, medians of 40 rounds).
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
  // start node with (src/inspector.ts) makes that inspector fail to open.
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
 * (pidstatd(8), NODE OPTIONS): the bin's second line gives them, but
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
  process.stderr.write(`pidstatd: node runs without ${missing.join(' ')} (${why}): start the daemon through its bin, bin/pidstatd.cjs, not as node's script (pidstatd(8), NODE OPTIONS)\n`);
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
  if (process.env[WRITE_ENV] === '1' && header !== undefined) {
    process.once('exit', () => {
      try {
        writeFileSync(cacheFile, Buffer.concat([header, script.createCachedData()]));
      } catch (err) {
        process.stderr.write(`${name}: cannot write ${cacheFile}: ${(err as Error).message}\n`);
      }
    });
  }
  return module.exports;
}

/** The bundle in the wrapper of Node's CommonJS loader, so that it runs as a module; compiled from `cachedData` where V8 takes it. */
export function bundleScript(file: string, source: string, cachedData: Buffer | undefined): Script {
  const wrapped = `(function (exports, require, module, __filename, __dirname) {${source}\n})`;
  return new Script(wrapped, { filename: file, ...(cachedData !== undefined && { cachedData }) });
}
