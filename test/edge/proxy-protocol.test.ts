import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { PROXY_V2_SIGNATURE, Pp2Type, decodeProxyV2, encodeProxyV2 } from '../../src/edge/proxy-protocol.js';

test('IPv4 header: fixed part, addresses, ports and TLVs as the spec lays them out', () => {
  const header = encodeProxyV2({
    sourceAddress: '192.0.2.10',
    sourcePort: 51000,
    destinationAddress: '198.51.100.1',
    destinationPort: 443,
    serverName: 'www.example.com',
    alpnProtocol: 'http/1.1',
    tlsVersion: 'TLSv1.3',
    cipherSuite: 'TLS_AES_128_GCM_SHA256',
  });
  assert.deepEqual(header.subarray(0, 12), PROXY_V2_SIGNATURE);
  assert.equal(header[12], 0x21, 'version 2, PROXY command');
  assert.equal(header[13], 0x11, 'TCP over IPv4');
  assert.equal(header.readUInt16BE(14), header.length - 16);
  assert.deepEqual([...header.subarray(16, 20)], [192, 0, 2, 10]);
  assert.deepEqual([...header.subarray(20, 24)], [198, 51, 100, 1]);
  assert.equal(header.readUInt16BE(24), 51000);
  assert.equal(header.readUInt16BE(26), 443);
  const decoded = decodeProxyV2(Buffer.concat([header, Buffer.from('GET / HTTP/1.1\r\n')]));
  assert.ok(decoded);
  assert.equal(decoded.command, 'PROXY');
  assert.equal(decoded.length, header.length);
  assert.equal(decoded.sourceAddress, '192.0.2.10');
  assert.equal(decoded.tlvs.get(Pp2Type.AUTHORITY)?.toString(), 'www.example.com');
  assert.equal(decoded.tlvs.get(Pp2Type.ALPN)?.toString(), 'http/1.1');
  const ssl = decoded.tlvs.get(Pp2Type.SSL);
  assert.ok(ssl);
  assert.equal(ssl[0], 0x01, 'PP2_CLIENT_SSL');
  assert.equal(ssl.readUInt32BE(1), 0);
  // sub-TLV: SSL version
  assert.equal(ssl[5], Pp2Type.SUBTYPE_SSL_VERSION);
  assert.equal(ssl.subarray(8, 8 + ssl.readUInt16BE(6)).toString(), 'TLSv1.3');
});

test('IPv4-mapped IPv6 addresses are sent as IPv4; mixed families as IPv6', () => {
  const mapped = encodeProxyV2({ sourceAddress: '::ffff:127.0.0.1', sourcePort: 1, destinationAddress: '127.0.0.1', destinationPort: 2 });
  assert.equal(mapped[13], 0x11);
  const mixed = encodeProxyV2({ sourceAddress: '2001:db8::1', sourcePort: 1, destinationAddress: '127.0.0.1', destinationPort: 2 });
  assert.equal(mixed[13], 0x21);
  const d = decodeProxyV2(mixed);
  assert.equal(d?.sourceAddress, '2001:db8:0:0:0:0:0:1');
  assert.equal(d?.destinationAddress, '0:0:0:0:0:ffff:7f00:1');
  assert.equal(d?.destinationPort, 2);
});

test('unknown addresses give the UNSPEC family (the receiver uses the real endpoints)', () => {
  const header = encodeProxyV2({ serverName: 'a.example' });
  assert.equal(header[13], 0x00);
  assert.equal(decodeProxyV2(header)?.tlvs.get(Pp2Type.AUTHORITY)?.toString(), 'a.example');
});

test('decoder: every strict prefix asks for more bytes; garbage is refused, never crashes', () => {
  const header = encodeProxyV2({ sourceAddress: '10.0.0.1', sourcePort: 5, destinationAddress: '10.0.0.2', destinationPort: 6, serverName: 'x.example' });
  for (let i = 0; i < header.length; i++) assert.equal(decodeProxyV2(header.subarray(0, i)), undefined, `prefix ${i}`);
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 80 }), (bytes) => {
      const data = Buffer.concat([PROXY_V2_SIGNATURE, bytes]);
      try {
        decodeProxyV2(data);
      } catch (err) {
        assert.equal((err as { code?: string }).code, 'EDGE_PROXY_PROTOCOL');
      }
    }),
  );
  assert.throws(() => decodeProxyV2(Buffer.from('GET / HTTP/1.1\r\n')), { code: 'EDGE_PROXY_PROTOCOL' });
});

/** PP2_TYPE_SSL's sub-TLVs as type → text, read by hand (§2.2.5: type u8, length u16, value). */
function sslSubTlvs(ssl: Buffer): Map<number, string> {
  const out = new Map<number, string>();
  for (let o = 5; o < ssl.length; o += 3 + ssl.readUInt16BE(o + 1)) out.set(ssl[o]!, ssl.subarray(o + 3, o + 3 + ssl.readUInt16BE(o + 1)).toString('utf8'));
  return out;
}

test('a verified client certificate: PP2_CLIENT_SSL|CERT_CONN|CERT_SESS, verify 0, PP2_SUBTYPE_SSL_CN (0x22)', () => {
  const header = encodeProxyV2({
    tlsVersion: 'TLSv1.3',
    cipherSuite: 'TLS_AES_128_GCM_SHA256',
    serverSignatureAlgorithm: 'ecdsa-with-SHA256',
    serverKeyAlgorithm: 'EC256',
    clientCertificate: { commonName: 'alice', fromSession: false },
  });
  const ssl = decodeProxyV2(header)!.tlvs.get(Pp2Type.SSL)!;
  assert.equal(ssl[0], 0x01 | 0x02 | 0x04);
  assert.equal(ssl.readUInt32BE(1), 0);
  const sub = sslSubTlvs(ssl);
  assert.equal(sub.get(0x22), 'alice');
  assert.equal(sub.get(0x24), 'ecdsa-with-SHA256');
  assert.equal(sub.get(0x25), 'EC256');
  assert.equal(sub.get(0x21), 'TLSv1.3');
  assert.equal(sub.get(0x23), 'TLS_AES_128_GCM_SHA256');
});

test('a resumed session with a client certificate: CERT_SESS without CERT_CONN; no certificate: SSL only and no CN', () => {
  const resumed = decodeProxyV2(encodeProxyV2({ clientCertificate: { commonName: 'alice', fromSession: true } }))!.tlvs.get(Pp2Type.SSL)!;
  assert.equal(resumed[0], 0x01 | 0x04);
  assert.equal(sslSubTlvs(resumed).get(0x22), 'alice');
  const none = decodeProxyV2(encodeProxyV2({ tlsVersion: 'TLSv1.3' }))!.tlvs.get(Pp2Type.SSL)!;
  assert.equal(none[0], 0x01);
  assert.equal(sslSubTlvs(none).has(0x22), false);
});

test('decoder: a TLV whose length runs past the header is refused, not taken truncated; one that ends exactly at the header is read', () => {
  const header = encodeProxyV2({ serverName: 'a.example' }); // UNSPEC: the body is the TLVs, AUTHORITY first
  const bodyLength = header.readUInt16BE(14);
  assert.equal(header[16], Pp2Type.AUTHORITY);
  const withLength = (len: number) => {
    const h = Buffer.from(header);
    h.writeUInt16BE(len, 17);
    return h;
  };
  assert.throws(() => decodeProxyV2(withLength(bodyLength - 3 + 1)), { code: 'EDGE_PROXY_PROTOCOL', message: 'PROXY v2 TLV 0x2 overruns the header' });
  const exact = decodeProxyV2(withLength(bodyLength - 3))!;
  assert.equal(exact.tlvs.get(Pp2Type.AUTHORITY)?.length, bodyLength - 3, 'control: the AUTHORITY TLV now holds the rest of the header');
});

test('decoder: another protocol version and a short IPv4 address block are refused with EDGE_PROXY_PROTOCOL; the header they were made from decodes', () => {
  const header = encodeProxyV2({ sourceAddress: '10.0.0.1', sourcePort: 5, destinationAddress: '10.0.0.2', destinationPort: 6 });
  assert.equal(decodeProxyV2(header)?.sourceAddress, '10.0.0.1', 'control');
  const v1 = Buffer.from(header);
  v1[12] = 0x11; // version 1, PROXY
  assert.throws(() => decodeProxyV2(v1), { code: 'EDGE_PROXY_PROTOCOL', message: 'PROXY protocol version 1 is not 2' });
  // TCP over IPv4 with an 8-byte body: the addresses without the ports.
  const short = Buffer.concat([header.subarray(0, 16), header.subarray(16, 24)]);
  short.writeUInt16BE(8, 14);
  assert.throws(() => decodeProxyV2(short), { code: 'EDGE_PROXY_PROTOCOL', message: 'PROXY v2 IPv4 address block is short' });
});

test('PP2_TYPE_ALPN carries the negotiated protocol as the bytes sent in the handshake: a non-ASCII name as its UTF-8 bytes', () => {
  const alpnOf = (alpnProtocol: string) =>
    decodeProxyV2(encodeProxyV2({ sourceAddress: '192.0.2.10', sourcePort: 1, destinationAddress: '198.51.100.1', destinationPort: 443, alpnProtocol }))?.tlvs.get(Pp2Type.ALPN);
  // The engine sends a configured name as UTF-8 (src/tls/handshake/negotiate.ts), 'ĥ2' as c4 a5 32.
  assert.deepEqual(alpnOf('ĥ2'), Buffer.from([0xc4, 0xa5, 0x32]));
  assert.deepEqual(alpnOf('é'), Buffer.from([0xc3, 0xa9]));
  assert.deepEqual(alpnOf('h2'), Buffer.from('h2'), 'control: ASCII as it is');
});
