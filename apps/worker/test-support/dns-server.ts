// A tiny authoritative DNS server on loopback UDP for discovery tests: A and AAAA answers from a
// table the test changes while it runs. Unknown names get NXDOMAIN, a known name without records
// of the asked type an empty NOERROR answer (what a headless Service with no ready pods gives).
import dgram from 'node:dgram';
import { isIPv4 } from 'node:net';
import { parseIp } from '@kiln/core';

export interface TestDnsServer {
  /** `127.0.0.1:port`, for dns.Resolver.setServers (KILN_BUILDER_DNS_SERVERS). */
  server: string;
  /** Sets the addresses `name` resolves to (IPv4 and IPv6 mixed); [] keeps the name with no records. */
  answer(name: string, addresses: string[]): void;
  /** Stops answering at all (queries time out), as a DNS outage. */
  silence(on: boolean): void;
  close(): Promise<void>;
}

const TYPE_A = 1;
const TYPE_AAAA = 28;

export async function startTestDns(): Promise<TestDnsServer> {
  const table = new Map<string, string[]>();
  let silent = false;
  const socket = dgram.createSocket('udp4');
  socket.on('message', (query, peer) => {
    if (silent || query.length < 12) return;
    // The question: labels from byte 12, then type and class.
    let at = 12;
    const labels: string[] = [];
    while (at < query.length && query[at] !== 0) {
      const len = query[at] ?? 0;
      labels.push(query.subarray(at + 1, at + 1 + len).toString('ascii'));
      at += 1 + len;
    }
    const questionEnd = at + 5;
    const qtype = query.readUInt16BE(at + 1);
    const name = labels.join('.').toLowerCase();
    const known = table.get(name);
    const records = (known ?? []).filter((ip) =>
      qtype === TYPE_A ? isIPv4(ip) : qtype === TYPE_AAAA && !isIPv4(ip),
    );
    const header = Buffer.alloc(12);
    header.writeUInt16BE(query.readUInt16BE(0), 0);
    // QR, AA, RD copied, RA; rcode 3 (NXDOMAIN) for names not in the table.
    header.writeUInt16BE(0x8400 | (query.readUInt16BE(2) & 0x0100) | 0x0080 | (known ? 0 : 3), 2);
    header.writeUInt16BE(1, 4);
    header.writeUInt16BE(records.length, 6);
    const answers = records.map((ip) => {
      const data = Buffer.from(parseIp(ip)?.bytes ?? []);
      const rr = Buffer.alloc(12);
      rr.writeUInt16BE(0xc00c, 0); // the name: a pointer to the question's
      rr.writeUInt16BE(qtype, 2);
      rr.writeUInt16BE(1, 4); // class IN
      rr.writeUInt32BE(1, 6); // TTL 1 s
      rr.writeUInt16BE(data.length, 10);
      return Buffer.concat([rr, data]);
    });
    socket.send(
      Buffer.concat([header, query.subarray(12, questionEnd), ...answers]),
      peer.port,
      peer.address,
    );
  });
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  return {
    server: `127.0.0.1:${socket.address().port}`,
    answer: (name, addresses) => void table.set(name.toLowerCase(), addresses),
    silence: (on) => {
      silent = on;
    },
    close: () => new Promise((resolve) => socket.close(() => resolve())),
  };
}
