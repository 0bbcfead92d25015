// Bundles each command into one CommonJS file in dist/bundle/, which the
// thin bins load. One file, and no ES module loader, is what lets pidstat
// answer in little more than `node -e 0` (see test/bench/). yargs,
// yargs-parser, chalk and ora stay outside: they load, with import(), only
// when needed.
import { build } from 'esbuild';

await build({
  entryPoints: ['pidstat', 'pidstatd', 'pidwatch'].map((name) => `dist/src/cli/${name}.js`),
  outdir: 'dist/bundle',
  outExtension: { '.js': '.cjs' },
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  external: ['yargs', 'yargs-parser', 'chalk', 'ora'],
  // import.meta has no meaning in CommonJS: give it this file's URL.
  banner: { js: "const __import_meta_url = require('node:url').pathToFileURL(__filename).href;" },
  define: { 'import.meta.url': '__import_meta_url' },
  logLevel: 'warning',
});
