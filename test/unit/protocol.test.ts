import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  decodeReply,
  decodeRequest,
  encodeReply,
  encodeRequest,
  parsePid,
  ProtocolError,
  type Reply,
  type Request,
} from '../../src/wire/protocol.js';

const req = (text: string | Buffer) => decodeRequest(typeof text === 'string' ? Buffer.from(text, 'latin1') : text);
const refused = (text: string | Buffer) => assert.throws(() => req(text), ProtocolError, JSON.stringify(String(text)));

describe('request: accepted', () => {
  const cases: [string, Request][] = [
    ['PIDR 12', { pid: 12, flags: 3 }],
    ['PIDR 12\n', { pid: 12, flags: 3 }],
    ['PIDR 12 h1', { pid: 12, host: 'h1', flags: 3 }],
    ['PIDR 12 h1 1', { pid: 12, host: 'h1', flags: 1 }],
    ['PIDR 12 h1 2\n', { pid: 12, host: 'h1', flags: 2 }],
    ['PIDR 12 h1 0', { pid: 12, host: 'h1', flags: 3 }],
    ['PIDR 12 h1 abc', { pid: 12, host: 'h1', flags: 3 }],
    ['PIDR 12 h1 000', { pid: 12, host: 'h1', flags: 3 }],
    ['PIDR 12 h1 256', { pid: 12, host: 'h1', flags: 0 }],
    ['PIDR 12 h1 258', { pid: 12, host: 'h1', flags: 2 }],
    ['PIDR 12 h1 10000000001', { pid: 12, host: 'h1', flags: 1 }],
    ['PIDR 12 h1 3 123456789012345678901', { pid: 12, host: 'h1', flags: 3, start: '123456789012345678901' }],
    ['PIDR 12 h1 15 4711', { pid: 12, host: 'h1', flags: 15, start: '4711' }],
    ['PIDR 12 h1 15 47x1 99', { pid: 12, host: 'h1', flags: 15 }],
    ['PIDR 12 h1 15 4711 future fields', { pid: 12, host: 'h1', flags: 15, start: '4711' }],
    ['PIDR 12 h1 3\nPIDR 0 evil', { pid: 12, host: 'h1', flags: 3 }],
    ['PIDR\t12  h1\t3\r\n', { pid: 12, host: 'h1', flags: 3 }],
    ['PIDR 1', { pid: 1, flags: 3 }],
    ['PIDR 2147483647', { pid: 2147483647, flags: 3 }],
    ['PIDR 12 [::1] 3', { pid: 12, host: '[::1]', flags: 3 }],
    ['PIDR 12 ::1 3', { pid: 12, host: '::1', flags: 3 }],
    [`PIDR 12 ${'h'.repeat(255)} 3`, { pid: 12, host: 'h'.repeat(255), flags: 3 }],
  ];
  for (const [text, expected] of cases) test(JSON.stringify(text), () => assert.deepEqual(req(text), expected));
});

describe('request: refused (no reply, no probe)', () => {
  const cases = [
    '', '\n', 'PIDR', 'PIDR ', 'PIDR\n12', 'PIDR 0', 'PIDR -1', 'PIDR +5', 'PIDR 0x10', 'PIDR 010', 'PIDR 1e3',
    'PIDR 12.0', 'PIDR 99999999999', 'PIDR 2147483648', 'PIDR abc', 'PIDR 12abc', 'pidr 12', 'EXIS 12 1 h',
    'PIDRX 12', `PIDR 12 ${'h'.repeat(256)} 3`, 'PIDR 12 h\u00e9st 3', 'PIDR 12 h\u0001 3', 'PIDR 12 h\u007f 3',
    'PIDR 12\u0000', 'PIDR\u000012', 'PIDR 12 h\u0000 3', '\u0000\u0000\u0000',
  ];
  for (const text of cases) test(JSON.stringify(text), () => refused(text));
  test('a datagram over 1024 bytes', () => refused(`PIDR 12 h 3 ${'9'.repeat(1100)}`));
  test('a host in UTF-8 bytes', () => refused(Buffer.concat([Buffer.from('PIDR 12 '), Buffer.from('höst', 'utf8')])));
});

describe('request: encode and decode round-trip', () => {
  const cases: Request[] = [
    { pid: 12, flags: 3 },
    { pid: 12, host: 'h.example.org', flags: 15 },
    { pid: 2147483647, host: '::1', flags: 2, start: '123456789' },
  ];
  for (const value of cases) {
    test(JSON.stringify(value), () => {
      const wire = encodeRequest(value);
      assert.deepEqual(req(wire), value);
      assert.deepEqual(encodeRequest(req(wire)), wire);
      // decoding works at an offset inside a larger buffer too
      const shifted = Buffer.concat([Buffer.from('xxxx'), wire]).subarray(4);
      assert.deepEqual(req(shifted), value);
    });
  }
  test('without a host, flags cannot travel (the daemon assumes 3)', () => {
    assert.equal(encodeRequest({ pid: 5, flags: 15 }).toString(), 'PIDR 5\n');
  });
});

describe('reply', () => {
  const cases: [string, Reply][] = [
    ['EXIS 12 1 h1', { pid: 12, host: 'h1', state: 'exists' }],
    ['EXIS 12 1 h1 4711', { pid: 12, host: 'h1', state: 'exists', start: '4711' }],
    ['EXIS 12 0 h1', { pid: 12, host: 'h1', state: 'dead' }],
    ['UNKN 12 na h1', { pid: 12, host: 'h1', state: 'unknown' }],
  ];
  for (const [text, value] of cases) {
    test(`round-trip ${text}`, () => {
      assert.equal(encodeReply(value).toString('latin1'), text, 'no trailing newline');
      assert.deepEqual(decodeReply(Buffer.from(text)), value);
      assert.deepEqual(decodeReply(Buffer.from(text + '\n')), value, 'a trailing newline is accepted');
    });
  }
  test('a start token is only sent for an existing process', () => {
    assert.equal(encodeReply({ pid: 3, host: 'h', state: 'dead', start: '9' }).toString(), 'EXIS 3 0 h');
  });
  test('an old daemon ignores nothing we need: a non-decimal fifth field is not a token', () => {
    assert.deepEqual(decodeReply(Buffer.from('EXIS 12 1 h1 x9')), { pid: 12, host: 'h1', state: 'exists' });
  });
  for (const text of ['', 'EXIS', 'EXIS 12 1', 'EXIS 12 2 h', 'EXIS 0 1 h', 'UNKN 12 1 h', 'PIDR 12 h 3', 'EXIS 12 na h', 'EXIS -1 1 h']) {
    test(`refused ${JSON.stringify(text)}`, () => assert.throws(() => decodeReply(Buffer.from(text)), ProtocolError));
  }
});

describe('parsePid', () => {
  test('decimal 1 to 2147483647 only', () => {
    assert.equal(parsePid('1'), 1);
    assert.equal(parsePid('2147483647'), 2147483647);
    for (const text of ['0', '00', '01', '-1', '+1', ' 1', '1 ', '2147483648', '1.0', '']) assert.equal(parsePid(text), undefined, text);
  });
});
