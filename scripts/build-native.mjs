// Builds native/udpbatch.c, the daemon's batched datagram I/O, into
// dist/native/udpbatch.node with the C compiler and Node's own headers.
// Runs at `npm run build` and at install. It never fails the install: where
// it cannot build (no compiler, no headers, not Linux), it says why and
// pidstatd reads its socket through Node's dgram, answering the same, slower.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const source = join(root, 'native', 'udpbatch.c');
const target = join(root, 'dist', 'native', 'udpbatch.node');

function skip(why) {
  rmSync(target, { force: true });
  console.error(`pidstat: batched daemon I/O not built: ${why}.`);
  console.error("pidstat: pidstatd will read its socket through Node's dgram, which answers the same, more slowly.");
  process.exit(0);
}

function newer(file, than) {
  return existsSync(file) && than.every((other) => statSync(file).mtimeMs > statSync(other).mtimeMs);
}

if (process.platform !== 'linux') skip('recvmmsg and sendmmsg are Linux system calls');
if (newer(target, [source, fileURLToPath(import.meta.url)])) process.exit(0);

const prefixes = [process.env.npm_config_nodedir, join(dirname(process.execPath), '..')].filter(Boolean);
const include = prefixes.map((prefix) => join(prefix, 'include', 'node')).find((dir) => existsSync(join(dir, 'node_api.h')));
if (include === undefined) skip(`Node's headers (node_api.h) are not under ${prefixes.join(' or ')}/include/node`);

const cc = process.env.CC || 'cc';
mkdirSync(dirname(target), { recursive: true });
const partial = join(dirname(target), `udpbatch-${process.pid}.node`);
const args = ['-O2', '-Wall', '-shared', '-fPIC', '-DNODE_GYP_MODULE_NAME=udpbatch', `-I${include}`, '-o', partial, source];
const result = spawnSync(cc, args, { encoding: 'utf8' });
if (result.error !== undefined || result.status !== 0) {
  rmSync(partial, { force: true });
  skip(result.error !== undefined ? `${cc}: ${result.error.message}` : `${cc} ${args.join(' ')} failed:\n${result.stderr.trim()}`);
}
try {
  createRequire(import.meta.url)(partial);
} catch (err) {
  rmSync(partial, { force: true });
  skip(`the built addon does not load: ${err.message}`);
}
renameSync(partial, target);
