import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import {
  decodeReply,
  decodeRequest,
  encodeReply,
  encodeRequest,
  MAX_PID,
  ProtocolError,
  type Reply,
  type Request,
} from '../../src/wire/protocol.js';

/**
 * Properties of the codec (doc/protocol.md) over generated inputs:
 * round trips for every valid message, no throw but ProtocolError on any
 * bytes, and every refused kind of input stays refused.
 */

const pid = fc.integer({ min: 1, max: MAX_PID });
const host = fc.string({ unit: fc.integer({ min: 0x21, max: 0x7e }).map((c) => String.fromCharCode(c)), minLength: 1, maxLength: 255 });
const flags = fc.integer({ min: 1, max: 15 });
const start = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }).map(String);

const request: fc.Arbitrary<Request> = fc.oneof(
  pid.map((p) => ({ pid: p, flags: 3 })),
  fc.record({ pid, host, flags }),
  fc.record({ pid, host, flags, start }),
);
const reply: fc.Arbitrary<Reply> = fc.oneof(
  fc.record({ pid, host, state: fc.constantFrom('exists' as const, 'dead' as const, 'unknown' as const) }),
  fc.record({ pid, host, state: fc.constant('exists' as const), start }),
);

/** Decoding returns a value or throws ProtocolError; nothing else escapes. */
function decodesOrRefuses(decode: (buf: Buffer) => unknown, bytes: Uint8Array): void {
  try {
    decode(Buffer.from(bytes));
  } catch (err) {
    if (!(err instanceof ProtocolError)) throw err;
  }
}

test('decodeRequest(encodeRequest(r)) is r, for every valid request', () => {
  fc.assert(fc.property(request, (r) => assert.deepEqual(decodeRequest(encodeRequest(r)), { ...r })));
});

test('decodeReply(encodeReply(r)) is r, with or without a trailing newline', () => {
  fc.assert(
    fc.property(reply, (r) => {
      assert.deepEqual(decodeReply(encodeReply(r)), { ...r });
      assert.deepEqual(decodeReply(Buffer.concat([encodeReply(r), Buffer.from('\n')])), { ...r });
    }),
  );
});

test('arbitrary bytes never make a decoder throw anything but ProtocolError', () => {
  const bytes = fc.uint8Array({ maxLength: 1500 });
  fc.assert(fc.property(bytes, (b) => decodesOrRefuses(decodeRequest, b)), { numRuns: 5000 });
  fc.assert(fc.property(bytes, (b) => decodesOrRefuses(decodeReply, b)), { numRuns: 5000 });
});

test('mutations of a valid request either decode to a valid request or are refused', () => {
  const mutated = fc.tuple(request, fc.nat(), fc.integer({ min: 0, max: 255 })).map(([r, at, byte]) => {
    const wire = encodeRequest(r);
    wire[at % wire.length] = byte;
    return wire;
  });
  fc.assert(
    fc.property(mutated, (wire) => {
      try {
        const r = decodeRequest(wire);
        assert.ok(Number.isInteger(r.pid) && r.pid >= 1 && r.pid <= MAX_PID);
        assert.ok(r.host === undefined || /^[\x21-\x7e]{1,255}$/.test(r.host));
        assert.ok(r.flags >= 0 && r.flags <= 255);
      } catch (err) {
        if (!(err instanceof ProtocolError)) throw err;
      }
    }),
    { numRuns: 5000 },
  );
});

test('every refused kind of pid stays refused', () => {
  const badPid = fc.oneof(
    fc.constant('0'),
    fc.integer({ min: 1, max: MAX_PID }).map((p) => `-${p}`),
    fc.integer({ min: 1, max: MAX_PID }).map((p) => `+${p}`),
    fc.integer({ min: 1, max: MAX_PID }).map((p) => `0x${p.toString(16)}`),
    fc.integer({ min: 1, max: MAX_PID }).map((p) => `0${p}`),
    fc.bigInt({ min: BigInt(MAX_PID) + 1n, max: 10n ** 30n }).map(String),
    fc.string({ unit: fc.constantFrom(...'abcxyzABC_.-'), minLength: 1 }),
  );
  fc.assert(
    fc.property(badPid, fc.option(host), (p, h) => {
      const text = h === null ? `PIDR ${p}` : `PIDR ${p} ${h} 3`;
      assert.throws(() => decodeRequest(Buffer.from(text, 'latin1')), ProtocolError, text);
    }),
  );
});

test('every host outside printable ASCII, or over 255 bytes, stays refused', () => {
  const badHost = fc.oneof(
    fc.string({ unit: fc.integer({ min: 0x21, max: 0x7e }).map((c) => String.fromCharCode(c)), minLength: 256, maxLength: 600 }),
    fc.tuple(host, fc.integer({ min: 0x80, max: 0xff }), host).map(([a, c, b]) => `${a}${String.fromCharCode(c)}${b}`),
    fc.tuple(host, fc.constantFrom(0x00, 0x01, 0x7f, 0x1b), host).map(([a, c, b]) => `${a}${String.fromCharCode(c)}${b}`),
  );
  fc.assert(
    fc.property(pid, badHost, (p, h) => {
      assert.throws(() => decodeRequest(Buffer.from(`PIDR ${p} ${h} 3`, 'latin1')), ProtocolError);
    }),
  );
});
