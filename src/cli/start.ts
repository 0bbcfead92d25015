import { readFileSync, statSync, writeFileSync } from 'node:fs';
import Module, { createRequire } from 'node:module';
import { homedir } from 'node:os';
import { dirname, isAbsolute, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Script } from 'node:vm';
import { LOADER_IMPORT } from './lazy.js';

/**
 * What the bins run: a command's bundle, dist/bundle/NAME.cjs, with its
 * compiled code cached, since compiling the bundle is a tenth of a pidstat
 * run. Node 22 and later cache it themselves (module.enableCompileCache()),
 * in the user's cache directory (nodeCacheDir()). Node 20 has no such cache:
 * there the bundle is compiled from V8's code cache, NAME.cache, where one
 * made from this very bundle is there and this Node's V8 accepts it; else
 * compiled afresh, as require() would.
 *
 * scripts/code-cache.mjs runs each command once with WRITE_ENV set, and V8
 * saves what that run compiled. The cache's first line is the build id the
 * bundle's first line names (scripts/bundle.mjs), so no cache ever runs with
 * a bundle it was not made from: V8 itself checks only the source's length.
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

/** module.enableCompileCache, from Node 22.1 on (@types/node is Node 20's). */
const enableCompileCache = (Module as { enableCompileCache?: (dir?: string) => unknown }).enableCompileCache;

/**
 * Where Node 22+ keeps the commands' compiled code: $XDG_CACHE_HOME/pidstat
 * or ~/.cache/pidstat, where the nearest folder of that path that exists is
 * this user's and no one else may write to it; else undefined, and no cache.
 * Not Node's default, os.tmpdir(): a cache is code Node runs, and another
 * user could make /tmp/node-compile-cache first and fill it (root's pidstatd
 * would run theirs). Never the package's folder, which may be root's. Where
 * Node cannot make or write the folder, it says so only to the caller, which
 * goes on without a cache.
 */
export function nodeCacheDir(env: NodeJS.ProcessEnv = process.env): string | undefined {
  let base = env['XDG_CACHE_HOME'];
  if (base === undefined || !isAbsolute(base)) {
    try {
      base = join(homedir(), '.cache');
    } catch {
      return undefined;
    }
  }
  const dir = join(base, 'pidstat');
  for (let at = dir; ; at = dirname(at)) {
    try {
      const stat = statSync(at);
      return stat.isDirectory() && stat.uid === process.getuid?.() && (stat.mode & 0o022) === 0 ? dir : undefined;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || dirname(at) === at) return undefined;
    }
  }
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
  if (name === 'pidstatd') process.on('SIGHUP', ignoreSignal);
  const dir = dirname(fileURLToPath(import.meta.url));
  const file = join(dir, `${name}.cjs`);
  (globalThis as Record<symbol, unknown>)[LOADER_IMPORT] = (specifier: string) => import(specifier);
  const command = enableCompileCache !== undefined ? requireCached(file) : compileCached(name, file);
  command.run();
}

/** Node 22+: the bundle through require(), with Node's compile cache where nodeCacheDir() allows one. */
function requireCached(file: string): { run(): void } {
  const cacheDir = nodeCacheDir();
  // It never throws: it answers { status: FAILED, message } where it cannot.
  if (cacheDir !== undefined) enableCompileCache!(cacheDir);
  return createRequire(file)(file) as { run(): void };
}

/** Node 20: the bundle compiled from NAME.cache, when it holds this build's code. */
function compileCached(name: CommandName, file: string): { run(): void } {
  const dir = dirname(file);
  const cacheFile = join(dir, `${name}.cache`);
  const source = readFileSync(file, 'utf8');
  const build = BUILD_LINE.exec(source)?.[1];
  // A bundle that names no build (edited by hand) runs without a cache.
  const header = build === undefined ? undefined : Buffer.from(`${build}\n`);
  const cachedData = header === undefined ? undefined : cachedCode(cacheFile, header);
  // The wrapper of Node's CommonJS loader, so the bundle runs as a module.
  const wrapped = `(function (exports, require, module, __filename, __dirname) {${source}\n})`;
  const script = new Script(wrapped, { filename: file, ...(cachedData !== undefined && { cachedData }) });
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
