import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Script } from 'node:vm';
import { LOADER_IMPORT } from './lazy.js';

/**
 * What the bins run: a command's bundle, dist/bundle/NAME.cjs, compiled from
 * V8's code cache, NAME.cache, where one made from this very bundle is there
 * and this Node's V8 accepts it; else compiled afresh, as require() would.
 * Compiling the bundle is a tenth of a pidstat run, and Node 20 keeps no
 * compile cache of its own (module.enableCompileCache() came in Node 22).
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

function ignoreSignal(): void {}

export function start(name: CommandName): void {
  // Before anything else: SIGUSR1 with no listener opens Node's inspector on
  // 127.0.0.1:9229, which lets any local user run code in a root daemon.
  // Each command adds its own listener (pidstatd logs its counters, pidwatch
  // passes it on); this one keeps it harmless until then, and in pidstat.
  process.on('SIGUSR1', ignoreSignal);
  const dir = dirname(fileURLToPath(import.meta.url));
  const file = join(dir, `${name}.cjs`);
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
  (globalThis as Record<symbol, unknown>)[LOADER_IMPORT] = (specifier: string) => import(specifier);
  module.exports.run();
}
