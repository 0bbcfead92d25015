// Bundles each command into one CommonJS file in dist/bundle/, which the
// thin bins run through dist/bundle/start.cjs (src/cli/start.ts). One file,
// and no ES module loader, is what lets pidstat answer in little more than
// `node -e 0` (see test/bench/). yargs, chalk and ora stay
// outside: they load, with import(), only when needed.
//
// Each bundle's first line names its build, a hash of its text: a code cache
// made from it says the same, so start() never runs one with another build.
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { build } from 'esbuild';

const result = await build({
  entryPoints: ['pidstat', 'pidstatd', 'pidwatch', 'start'].map((name) => `dist/src/cli/${name}.js`),
  outdir: 'dist/bundle',
  outExtension: { '.js': '.cjs' },
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  external: ['yargs', 'chalk', 'ora'],
  // import.meta has no meaning in CommonJS: give it this file's URL.
  banner: { js: "const __import_meta_url = require('node:url').pathToFileURL(__filename).href;" },
  define: { 'import.meta.url': '__import_meta_url' },
  logLevel: 'warning',
  write: false,
});

for (const { path, contents } of result.outputFiles) {
  const id = createHash('sha256').update(contents).digest('hex').slice(0, 32);
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, Buffer.concat([Buffer.from(`// build ${id}\n`), contents]));
}
