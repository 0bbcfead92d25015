import assert from 'node:assert/strict';
import { isIP } from 'node:net';
import { test } from 'node:test';
import fc from 'fast-check';
import { ipFamily } from '../../src/wire/address.js';
import { decodeReply, decodeRequest, ProtocolError, type Reply, type Request } from '../../src/wire/protocol.js';

/**
 * The fast readers of the daemon's hot path hold to the reference readers
 * they stand in for, over generated inputs: ipFamily() to net.isIP(), the
 * byte-scanning codec to a reading by strings and regular expressions
 * written for clarity here.
 */

const RUNS = 5_000;

// --- addresses -------------------------------------------------------------

test('ipFamily() answers as net.isIP() does, zone ids aside', () => {
  const text = fc.oneof(
    fc.ipV4(),
    fc.ipV4Extended(),
    fc.ipV6(),
    fc.ipV6().map((address) => address.toUpperCase()),
    fc.string({ unit: fc.constantFrom(...'0123456789abcdefABCDEF:.[]/x'), maxLength: 45 }),
    fc.string(),
  );
  fc.assert(
    fc.property(text, (address) => {
      assert.equal(ipFamily(address), isIP(address), JSON.stringify(address));
    }),
    { numRuns: RUNS },
  );
  for (const address of ['0.0.0.0', '255.255.255.255', '256.1.1.1', '01.1.1.1', '1.2.3', '1.2.3.4.', '1..3.4', ' 1.2.3.4', '1.2.3.-4', '1.2.3.4e0', '0x7f.0.0.1', '１.2.3.4']) {
    assert.equal(ipFamily(address), isIP(address), JSON.stringify(address));
  }
  assert.equal(ipFamily('fe80::1%eth0'), 0, 'a zone id is left to getaddrinfo');
});

// --- the codec -------------------------------------------------------------

/** The codec's rules read by strings and regular expressions: slower, plainer. */
const reference = {
  fields(buf: Uint8Array): string[] {
    if (buf.length > 1024) throw new ProtocolError('oversized');
    const line = Buffer.from(buf).toString('latin1').split('\n')[0]!;
    return line.split(/[ \t\r\v\f]+/).filter((field) => field !== '');
  },
  pid(field: string | undefined): number {
    if (field === undefined || !/^[1-9][0-9]{0,9}$/.test(field) || Number(field) > 2147483647) throw new ProtocolError('pid');
    return Number(field);
  },
  host(field: string): string {
    if (!/^[\x21-\x7e]{1,255}$/.test(field)) throw new ProtocolError('host');
    return field;
  },
  request(buf: Uint8Array): Request {
    const [kind, pid, host, flags, start] = reference.fields(buf);
    if (kind !== 'PIDR') throw new ProtocolError('kind');
    const req: Request = { pid: reference.pid(pid), flags: 3 };
    if (flags !== undefined && /^[0-9]+$/.test(flags) && !/^0+$/.test(flags)) req.flags = Number(BigInt(flags) % 256n);
    if (host !== undefined) req.host = reference.host(host);
    if (start !== undefined && /^[0-9]+$/.test(start)) req.start = start;
    return req;
  },
  reply(buf: Uint8Array): Reply {
    const [kind, pidField, value, hostField, start] = reference.fields(buf);
    const pid = reference.pid(pidField);
    if (hostField === undefined) throw new ProtocolError('no host');
    const host = reference.host(hostField);
    if (kind === 'UNKN' && value === 'na') return { pid, host, state: 'unknown' };
    if (kind === 'EXIS' && value === '0') return { pid, host, state: 'dead' };
    if (kind === 'EXIS' && value === '1') return start !== undefined && /^[0-9]+$/.test(start) ? { pid, host, state: 'exists', start } : { pid, host, state: 'exists' };
    throw new ProtocolError('kind');
  },
};

/** The outcome of a reader: its value, or "refused" for a ProtocolError (any other throw fails the test). */
function outcome<T>(read: (buf: Uint8Array) => T, buf: Uint8Array): T | 'refused' {
  try {
    return read(buf);
  } catch (err) {
    if (err instanceof ProtocolError) return 'refused';
    throw err;
  }
}

/** Datagrams near the valid ones: fields from a small vocabulary, any blank, sometimes a byte of anything. */
const datagram = fc
  .tuple(
    fc.array(
      fc.oneof(
        fc.constantFrom('PIDR', 'EXIS', 'UNKN', 'na', '0', '1', '00', '010', '256', '2147483647', '2147483648', '99999999999', '3', '11', '123456789012', 'h', 'host.example'),
        fc.string({ unit: fc.integer({ min: 0, max: 255 }).map((c) => String.fromCharCode(c)), maxLength: 6 }),
      ),
      { maxLength: 7 },
    ),
    fc.array(fc.constantFrom(' ', '\t', '\r', '\v', '\f', '  ', '\n', ' \n'), { minLength: 8, maxLength: 8 }),
  )
  .map(([fields, blanks]) => Buffer.from(fields.map((field, i) => field + blanks[i]).join(''), 'latin1'));

test('decodeRequest() and decodeReply() read every datagram as the reference does', () => {
  fc.assert(
    fc.property(fc.oneof(datagram, fc.uint8Array({ maxLength: 64 })), (buf) => {
      assert.deepEqual(outcome(decodeRequest, buf), outcome(reference.request, buf), JSON.stringify(Buffer.from(buf).toString('latin1')));
      assert.deepEqual(outcome(decodeReply, buf), outcome(reference.reply, buf), JSON.stringify(Buffer.from(buf).toString('latin1')));
    }),
    { numRuns: RUNS },
  );
});
