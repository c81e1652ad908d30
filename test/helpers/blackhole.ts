/**
 * A loopback port that drops SYNs, as a firewall's DROP rule or a host gone from the network
 * does: connect() to it gets neither SYN-ACK nor RST and stays pending (until the kernel's
 * SYN retries run out, tcp(7) tcp_syn_retries, minutes later). No root, no iptables.
 *
 * How: a listener with backlog 1 on a worker thread whose event loop is blocked
 * (Atomics.wait) right after listen(), so nothing is ever accept()ed. Linux's accept queue
 * holds backlog + 1 connections (sk_acceptq_is_full: more than the backlog); two fillers
 * complete their handshakes into it, and from then on the kernel drops every SYN for the
 * port (tcp_conn_request, "listen queue overflow"; no RST while tcp_abort_on_overflow is 0,
 * its default). Another kernel would leave a filler pending here: the caller's test then
 * fails on its timeout rather than passing.
 */
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { Worker } from 'node:worker_threads';

export interface Blackhole {
  port: number;
  /** Frees the fillers, wakes the worker, which closes the listener and exits. */
  close(): Promise<void>;
}

const LISTENER = `
const { parentPort, workerData } = require('node:worker_threads');
const { createServer } = require('node:net');
const wake = new Int32Array(workerData);
const server = createServer(() => undefined);
server.listen({ host: '127.0.0.1', port: 0, backlog: 1 }, () => {
  parentPort.postMessage(server.address().port);
  Atomics.wait(wake, 0, 0); // this thread's event loop stops here: no accept() until woken
  server.close();
});
`;

export async function blackholedPort(): Promise<Blackhole> {
  const wake = new SharedArrayBuffer(4);
  const worker = new Worker(LISTENER, { eval: true, workerData: wake });
  const exited = once(worker, 'exit');
  const [port] = (await once(worker, 'message')) as [number];
  const fillers: Socket[] = [];
  for (let i = 0; i < 2; i++) {
    const filler = connect({ host: '127.0.0.1', port });
    filler.on('error', () => undefined);
    fillers.push(filler);
    await once(filler, 'connect');
  }
  return {
    port,
    close: async () => {
      for (const filler of fillers) filler.destroy();
      Atomics.store(new Int32Array(wake), 0, 1);
      Atomics.notify(new Int32Array(wake), 0);
      await exited;
    },
  };
}
