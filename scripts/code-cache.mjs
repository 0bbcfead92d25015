// Writes dist/bundle/NAME.cache, V8's code for each command's bundle, by
// running each once as a user would with PIDSTAT_WRITE_CODE_CACHE=1 (see
// src/cli/start.ts): pidstat asks a responder of this script's own on
// loopback, the others print their version. Each runs through its bin, with
// the options the bin's first lines give node: V8 refuses a cache made
// under other V8 flags (pidstatd's --max-semi-space-size, src/daemon/heap.ts).
// Runs at `npm run build`. It never fails the build: without a cache the
// commands compile as usual. The caches are left out of the package
// (package.json "files"): each holds the path of the bundle it was made
// from, the build machine's, and serves only the V8 that made it; an
// installed package makes its own at each command's first run.
import { execFile } from 'node:child_process';
import dgram from 'node:dgram';
import { existsSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

/** A socket on 127.0.0.1 that answers each PIDR as a daemon would: the process exists. */
async function responder() {
  const socket = dgram.createSocket('udp4');
  socket.on('message', (msg, from) => {
    const [, pid, host = '127.0.0.1'] = msg.toString('latin1').split(/\s+/);
    socket.send(`EXIS ${pid} 1 ${host}`, from.port, from.address);
  });
  await new Promise((resolve) => socket.bind(0, '127.0.0.1', resolve));
  return socket;
}

/**
 * Runs a bin as sh(1) reads it, with this Node first on PATH, without
 * blocking this process's event loop, which answers it.
 */
function runBin(name, args) {
  const env = { ...process.env, PATH: `${dirname(process.execPath)}:${process.env.PATH ?? '/usr/bin:/bin'}`, PIDSTAT_WRITE_CODE_CACHE: '1' };
  return new Promise((resolve) => {
    execFile('/bin/sh', [join(root, 'bin', `${name}.cjs`), ...args], { env, timeout: 10_000 }, (err, stdout, stderr) => resolve({ err, stderr }));
  });
}

// Nothing to cache before the bundles are built.
if (!existsSync(join(root, 'dist', 'bundle', 'start.cjs'))) process.exit(0);

const socket = await responder();
try {
  const runs = {
    pidstat: ['--no-local', '--port', String(socket.address().port), '127.0.0.1', String(process.pid)],
    pidstatd: ['--version'],
    pidwatch: ['--version'],
  };
  for (const [name, args] of Object.entries(runs)) {
    const { err, stderr } = await runBin(name, args);
    if (err) {
      rmSync(join(root, 'dist', 'bundle', `${name}.cache`), { force: true });
      console.error(`pidstat: no code cache for ${name} (${err.message.split('\n')[0]}${stderr ? `: ${stderr.trim()}` : ''}); it compiles as usual.`);
    }
  }
} finally {
  socket.close();
}
