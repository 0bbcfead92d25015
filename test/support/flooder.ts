import dgram from 'node:dgram';

/**
 * A sender at a steady pace, run as its own process (as `nobody` where the
 * tests run as root): `node flooder.js PORT PER_SECOND SECONDS MESSAGE`
 * sends MESSAGE to 127.0.0.1:PORT PER_SECOND times a second, from one
 * socket, for SECONDS, then prints how many it sent and exits. What a
 * local user with no privilege can send (test/attacks/thread-abuse.test.ts, the
 * bench's many-thread figure).
 */

const [port, perSecond, seconds, message] = process.argv.slice(2);
const socket = dgram.createSocket('udp4');
const payload = Buffer.from(message ?? '');
const TICK_MS = 10;
let sent = 0;
const began = performance.now();
const timer = setInterval(() => {
  const elapsed = performance.now() - began;
  if (elapsed >= Number(seconds) * 1000) {
    clearInterval(timer);
    process.stdout.write(`${sent}\n`);
    socket.close();
    return;
  }
  // As many as the pace owes by now: a late tick catches up.
  const owed = Math.floor((elapsed / 1000) * Number(perSecond)) - sent;
  for (let i = 0; i < owed; i++) socket.send(payload, Number(port), '127.0.0.1');
  sent += Math.max(0, owed);
}, TICK_MS);
