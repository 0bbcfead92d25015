import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import dgram from 'node:dgram';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { test } from 'node:test';
import { binCommand, binEnv, IS_ROOT, waitFor } from '../support/helpers.js';

/**
 * The client's UDP ports are its own: no socket of pidstat shares its port
 * (no SO_REUSEADDR, no SO_REUSEPORT), so another local user cannot bind the
 * same port and read the replies, cookie included (pidstat(1), Asking).
 */

/** The local UDP ports of process `pid`, with their families, from its descriptors and /proc/net/udp{,6}. */
function udpPortsOf(pid: number): { family: 4 | 6; port: number }[] {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const match = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (match) inodes.add(match[1]!);
    } catch {
      // Closed meanwhile.
    }
  }
  const found: { family: 4 | 6; port: number }[] = [];
  for (const [table, family] of [['/proc/net/udp', 4], ['/proc/net/udp6', 6]] as const) {
    for (const line of readFileSync(table, 'latin1').split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/);
      if (fields.length > 9 && inodes.has(fields[9]!)) found.push({ family, port: parseInt(fields[1]!.split(':')[1]!, 16) });
    }
  }
  return found;
}

/** Tries, as user nobody, to bind each port with SO_REUSEADDR on the wildcard and on loopback; returns what each bind said. */
function bindAsNobody(ports: readonly { family: 4 | 6; port: number }[]): string[] {
  const script = `
    const dgram = require('node:dgram');
    const ports = ${JSON.stringify(ports)};
    const out = [];
    let left = 0;
    for (const { family, port } of ports) {
      for (const address of family === 4 ? ['0.0.0.0', '127.0.0.1'] : ['::', '::1']) {
        left++;
        const socket = dgram.createSocket({ type: family === 4 ? 'udp4' : 'udp6', reuseAddr: true });
        const done = (what) => { out.push(address + ' ' + port + ' ' + what); socket.close(); if (--left === 0) console.log(JSON.stringify(out)); };
        socket.once('error', (err) => { out.push(address + ' ' + port + ' ' + err.code); if (--left === 0) console.log(JSON.stringify(out)); });
        socket.bind(port, address, () => done('bound'));
      }
    }`;
  const result = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '-e', script], { encoding: 'utf8', timeout: 10_000 });
  assert.equal(result.status, 0, `${result.stderr}`);
  return JSON.parse(result.stdout) as string[];
}

for (const io of ['batch', 'dgram'] as const) {
  test(`another user cannot bind pidstat's ports to read its replies (PIDSTAT_IO=${io})`, async (t) => {
    if (!IS_ROOT) return t.skip(`not root (uid ${process.getuid?.()}): cannot act as another user`);
    if (spawnSync('setpriv', ['--version']).error) return t.skip('no setpriv to act as another user');
    // A responder that never answers: pidstat keeps its sockets open while it waits.
    const silent = dgram.createSocket('udp4');
    let asked = 0;
    silent.on('message', () => asked++);
    await new Promise<void>((resolve) => silent.bind(0, '127.0.0.1', resolve));
    const [command, args] = binCommand('pidstat', ['--no-local', '--port', String(silent.address().port), '--tries', '3', '--try-timeout', '1000ms', '127.0.0.1:1', '127.0.0.2:1']);
    const child = spawn(command, args, { env: binEnv({ PIDSTAT_IO: io }), stdio: 'ignore' });
    try {
      assert.ok(await waitFor(() => asked >= 2, 5000), 'pidstat asked nothing');
      const ports = udpPortsOf(child.pid!);
      assert.ok(ports.length >= 2, `pidstat has ${ports.length} UDP sockets; a connected one per address was expected`);
      const outcomes = bindAsNobody(ports);
      const shared = outcomes.filter((line) => !line.endsWith('EADDRINUSE'));
      assert.deepEqual(shared, [], `user nobody could bind pidstat's ports: ${shared.join('; ')}`);
    } finally {
      child.kill('SIGTERM');
      silent.close();
    }
  });
}
