import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import { test } from 'node:test';
import { ROOT } from '../support/helpers.js';

/**
 * The layers the README's Architecture section draws are src/'s folders:
 * each imports only from the folders under it (client/ and daemon/ never
 * from each other), src/ holds only the library's entry point and the
 * folders, and the README names every folder.
 */

/** Bottom up: a folder may import from those before it in this list, and from itself. */
const LAYERS = ['sys', 'wire', 'net', 'client|daemon', 'deaths', 'job', 'cli'] as const;
const SRC = join(ROOT, 'src');

function rank(folder: string): number {
  const at = LAYERS.findIndex((layer) => layer.split('|').includes(folder));
  assert.ok(at >= 0, `src/${folder}/ is no layer of the README's`);
  return at;
}

/** Every .ts file under src/, as a path relative to src/. */
function sources(): string[] {
  return (readdirSync(SRC, { recursive: true }) as string[]).filter((file) => file.endsWith('.ts')).sort();
}

/** The files of src/ that `file` (relative to src/) imports, relative to src/. */
function importsOf(file: string): string[] {
  const text = readFileSync(join(SRC, file), 'utf8');
  const found: string[] = [];
  for (const match of text.matchAll(/(?:from|import)\s*\(?\s*'(\.{1,2}\/[^']+)\.js'/g)) {
    found.push(`${normalize(join(dirname(file), match[1]!))}.ts`);
  }
  return found;
}

test('src/ holds the library\'s entry point and the layer folders, nothing else', () => {
  const top = readdirSync(SRC, { withFileTypes: true });
  const files = top.filter((entry) => entry.isFile()).map((entry) => entry.name);
  assert.deepEqual(files, ['index.ts']);
  for (const entry of top.filter((e) => e.isDirectory())) rank(entry.name);
});

test('no import runs up a layer, and client/ and daemon/ never use each other', () => {
  const wrong: string[] = [];
  for (const file of sources()) {
    const from = file.split('/')[0]!;
    if (from === 'index.ts') continue;
    for (const target of importsOf(file)) {
      const to = target.split('/')[0]!;
      if (relative(SRC, join(SRC, target)).startsWith('..')) wrong.push(`${file} -> ${target}: outside src/`);
      else if (to === 'index.ts') wrong.push(`${file} -> ${target}: the entry point`);
      else if (to !== from && rank(to) >= rank(from)) wrong.push(`src/${file} -> src/${target}`);
    }
  }
  assert.deepEqual(wrong, []);
});

test('wire/ holds messages, MACs and addresses as text: no sockets, no files', () => {
  const wrong = sources()
    .filter((file) => file.startsWith('wire/'))
    .filter((file) => /(?:from|import)\s*\(?\s*'node:(?:fs|dgram|net)'|require\([^)]*\)\('node:(?:fs|dgram|net)'\)/.test(readFileSync(join(SRC, file), 'utf8')));
  assert.deepEqual(wrong, []);
});

test('the README\'s Architecture section names every folder of src/, with what may live there', () => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## Architecture'), readme.indexOf('\n## ', readme.indexOf('## Architecture') + 1));
  for (const folder of LAYERS.flatMap((layer) => layer.split('|'))) {
    assert.match(section, new RegExp(`\`src/${folder}/\``), `src/${folder}/ in the README's Architecture section`);
  }
});
