import cluster from 'node:cluster';
import type { Server } from 'node:http';
import { holdReloadsDuringStart, type HeldReloads } from '../lib/reload-during-start.js';
import { AggregatorRegistry } from 'prom-client';
import type { EdgeConfig } from './config.js';
import { edgeTicketKeyRetainMs, startEdge, type RunningEdge } from './edge.js';
import { loadEngine } from './engine.js';
import { connectKeyd } from './keyd-connect.js';
import { createLogger } from './logger.js';
import { EdgeMetrics } from './metrics.js';
import { startMetricsServer } from './metrics-server.js';
import { TicketKeyRing, type SharedTicketKey } from '../tls/index.js';

/** How often the primary re-sends the session-ticket keys (and rotates them when due). */
const TICKET_KEY_BROADCAST_MS = 5 * 60_000;

/**
 * A worker that served this long before it died was stable: its restart starts the back-off
 * over (docs/EDGE.md, Workers). Test hook: `DELEGATOR_TEST_WORKER_STABLE_MS` shortens it, so
 * a test need not wait a minute; unset in production (one environment variable read at start).
 */
function workerStableMs(): number {
  const text = process.env.DELEGATOR_TEST_WORKER_STABLE_MS;
  return text !== undefined && /^\d+$/.test(text) ? Number(text) : 60_000;
}

/**
 * The edge as a daemon. One worker: everything in this process. N workers (node:cluster):
 * the primary forks them, restarts one that dies, serves /metrics aggregated over all, and
 * on SIGTERM/SIGINT tells each to drain; workers each hold their own keyd connection and
 * share the listening sockets. Resolves with the exit code once everything has stopped.
 */
export async function runEdge(config: EdgeConfig, reread?: () => EdgeConfig): Promise<number> {
  // A SIGHUP before the edge's reload handler exists (the start waits up to the keyd connect
  // timeout for an unreachable keyd) is held, then applied (src/lib/reload-during-start.ts).
  const heldReloads = holdReloadsDuringStart();
  try {
    if (config.workers > 1 && cluster.isPrimary) return await runPrimary(config, reread, heldReloads);
    return await runWorker(config, reread, heldReloads);
  } finally {
    heldReloads.release();
  }
}

/**
 * A config as it crosses the cluster channel (JSON): the files it holds (PEM bundles, the keyd
 * client certificate and key) come back as Buffers. The channel is private to this edge's
 * processes; a worker read the same files from disk before.
 */
function configFromMessage(value: unknown): EdgeConfig {
  const revive = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(revive);
    if (!v || typeof v !== 'object') return v;
    const o = v as Record<string, unknown>;
    if (o.type === 'Buffer' && Array.isArray(o.data) && Object.keys(o).length === 2) return Buffer.from(o.data as number[]);
    return Object.fromEntries(Object.entries(o).map(([k, x]) => [k, revive(x)]));
  };
  return revive(value) as EdgeConfig;
}

/**
 * A cluster worker: runs the config its primary runs, sent over the cluster channel, never
 * the file as it is now. A worker restarted after a crash used to read the file again: one
 * edited since (a reload refused for it, or none sent yet) made that worker serve other
 * routes than its siblings, listen where the primary does not, or fail to start at every
 * restart. Resolves with the exit code (1 when the primary goes away before answering).
 */
export async function runEdgeWorker(): Promise<number> {
  // A worker ignores SIGHUP (the primary reloads it), also while it starts.
  const heldReloads = holdReloadsDuringStart();
  const config = await new Promise<EdgeConfig | undefined>((resolve) => {
    const onMessage = (message: { type?: string; config?: unknown }) => {
      if (message?.type !== 'edge:config') return;
      done();
      resolve(configFromMessage(message.config));
    };
    const onDisconnect = () => {
      done();
      resolve(undefined);
    };
    const done = () => {
      process.off('message', onMessage);
      process.off('disconnect', onDisconnect);
    };
    process.on('message', onMessage);
    process.once('disconnect', onDisconnect);
    process.send?.({ type: 'edge:want-config' });
  });
  try {
    return config ? await runWorker(config, undefined, heldReloads) : 1;
  } finally {
    heldReloads.release();
  }
}

/**
 * SIGHUP: read the config again (`reread` = the same file and flags as at start). A config
 * that does not validate is refused with its reason logged, and the running one stays.
 */
function onReloadSignal(handler: () => void): () => void {
  process.on('SIGHUP', handler);
  return () => process.off('SIGHUP', handler);
}

function onStopSignal(handler: (signal: string) => void): () => void {
  const listener = (signal: NodeJS.Signals) => handler(signal);
  process.on('SIGTERM', listener);
  process.on('SIGINT', listener);
  return () => {
    process.off('SIGTERM', listener);
    process.off('SIGINT', listener);
  };
}

async function runWorker(config: EdgeConfig, reread?: () => EdgeConfig, heldReloads?: HeldReloads): Promise<number> {
  const worker = cluster.isWorker ? cluster.worker?.id : undefined;
  const log = createLogger(config.logLevel, worker === undefined ? {} : { worker });
  if (!cluster.isWorker) log.info({ listen: config.listen }, 'edge starting');
  const metrics = new EdgeMetrics({ defaultMetrics: true });
  // In a cluster the primary owns the ticket keys and sends them over the IPC channel (private
  // to this edge's processes), so a ticket issued by one worker resumes on any other. Its keys
  // are kept for the configured ticket lifetime (startEdge follows reloads).
  const ticketKeys = new TicketKeyRing({ retainMs: edgeTicketKeyRetainMs(config.ticketLifetimeSeconds) });
  if (cluster.isWorker) {
    process.on('message', (message: { type?: string; keys?: SharedTicketKey[] }) => {
      if (message?.type === 'edge:ticket-keys' && Array.isArray(message.keys)) ticketKeys.importKeys(message.keys);
    });
  }
  const edge: RunningEdge = await startEdge(config, {
    createTlsServer: await loadEngine(),
    connectKeyd,
    logger: log,
    metrics,
    ticketKeys,
  });
  let metricsServer: Server | undefined;
  if (cluster.isWorker) {
    new AggregatorRegistry(); // installs the worker's answer to the primary's metric requests
    AggregatorRegistry.setRegistries([metrics.registry]);
  } else if (config.metrics) {
    metricsServer = await startMetricsServer(config.metrics, async () => ({
      contentType: metrics.registry.contentType,
      body: await metrics.registry.metrics(),
    }));
    log.info({ metrics: `http://${config.metrics.host}:${config.metrics.port}/metrics` }, 'metrics endpoint');
  }
  if (cluster.isWorker) process.send?.({ type: 'edge:ready', addresses: edge.addresses });

  /** `given`: the config the primary checked (a worker); else the file is read again. */
  const reload = (why: string, given?: EdgeConfig, applied?: () => void) => {
    let next: EdgeConfig;
    try {
      if (given) next = given;
      else if (!reread) throw new Error('this edge was started without a config to read again');
      else next = reread();
    } catch (err) {
      log.error({ why, err: (err as Error).message }, 'reload refused: the new config is not valid; the running config is kept');
      return;
    }
    edge.reload(next).then(
      ({ keyd }) => {
        applied?.();
        if (keyd === 'unreachable') log.warn({ why }, 'reloaded, but no new keyd endpoint answers: the current keyd connection is kept until it drops');
      },
      (err: Error) => log.error({ why, err: err.message }, 'reload refused; the running config is kept'),
    );
  };
  // In a cluster the primary takes SIGHUP and tells each worker; a worker ignores its own.
  const removeReload = cluster.isWorker ? onReloadSignal(() => undefined) : onReloadSignal(() => reload('SIGHUP'));
  if (heldReloads?.release() && !cluster.isWorker) {
    log.info('a SIGHUP arrived while the edge was starting: reloading now');
    reload('SIGHUP while starting');
  }
  if (cluster.isWorker) {
    process.on('message', (message: { type?: string; seq?: number; config?: unknown }) => {
      if (message?.type !== 'edge:reload' || message.config === undefined) return;
      // Tells the primary, which then gives this config to workers it starts from now on.
      const applied = () => process.connected && process.send?.({ type: 'edge:reloaded', seq: message.seq });
      reload('primary asked to reload', configFromMessage(message.config), applied);
    });
  }

  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (why: string) => {
      if (stopping) return;
      stopping = true;
      log.info({ why }, 'stopping: draining connections');
      edge.drain().then(() => {
        metricsServer?.close();
        removeSignals();
        removeReload();
        log.info('stopped');
        if (cluster.isWorker && process.connected) process.disconnect(); // lets the worker exit
        resolve(0);
      });
    };
    // In a cluster the primary decides when to stop; a worker ignores the terminal's SIGINT.
    const removeSignals = cluster.isWorker ? () => undefined : onStopSignal((signal) => stop(signal));
    if (cluster.isWorker) {
      process.on('SIGINT', () => undefined);
      // SIGTERM can reach a worker itself: systemd's default KillMode=control-group sends it
      // to every process of the unit at once, as does `kill -TERM -PGID`. Node's default
      // action killed the worker there and then, cutting its open connections while the
      // primary believed it was draining them; the worker drains instead (as when the
      // primary asks), and the primary, stopping too, does not restart it.
      process.on('SIGTERM', () => stop('SIGTERM'));
      process.on('message', (message: { type?: string }) => {
        if (message?.type === 'edge:drain') stop('primary asked to drain');
      });
      process.on('disconnect', () => stop('primary went away'));
    }
  });
}

async function runPrimary(config: EdgeConfig, reread?: () => EdgeConfig, heldReloads?: HeldReloads): Promise<number> {
  const log = createLogger(config.logLevel, { role: 'primary' });
  log.info({ listen: config.listen, workers: config.workers }, 'edge starting');
  const aggregator = new AggregatorRegistry();
  let metricsServer: Server | undefined;
  if (config.metrics) {
    metricsServer = await startMetricsServer(config.metrics, async () => ({
      contentType: aggregator.contentType,
      body: await aggregator.clusterMetrics(),
    }));
  }
  let stopping = false;
  // Kept for the ticket lifetime, like each worker's ring: a worker keeps only the keys the
  // primary still sends (TicketKeyRing.importKeys), so the primary's retention is theirs.
  const ticketKeys = new TicketKeyRing({ retainMs: edgeTicketKeyRetainMs(config.ticketLifetimeSeconds) });
  const sendTicketKeys = (worker: { send(message: object): unknown; isConnected(): boolean }) => {
    if (worker.isConnected()) worker.send({ type: 'edge:ticket-keys', keys: ticketKeys.exportKeys() });
  };
  cluster.on('online', sendTicketKeys);
  const broadcast = setInterval(() => {
    for (const worker of Object.values(cluster.workers ?? {})) if (worker) sendTicketKeys(worker);
  }, TICKET_KEY_BROADCAST_MS);
  broadcast.unref();
  // Each of the config.workers places is a slot; a restart takes the place (slot) of the worker
  // that died, so the back-off below follows one place's deaths, not the cluster's.
  const slotOf = new Map<number, number>();
  const fork = (slot: number) => {
    const worker = cluster.fork();
    slotOf.set(worker.id, slot);
    // A message to a worker that has just died, before its exit is seen here, fails with
    // EPIPE, emitted as 'error' on the worker: without a listener that was an uncaught error
    // that killed the primary, and with it every worker. Its 'exit' follows and restarts it.
    worker.on('error', (err: Error) => log.warn({ worker: worker.id, err: err.message }, 'a message to a worker failed (it is exiting)'));
    return worker;
  };
  // When each worker said it was ready (serving), by worker id.
  const readySince = new Map<number, number>();
  /** Deaths in a row of each slot's workers (since that slot's last stable run). */
  const restartsOf = new Map<number, number>();
  const stableMs = workerStableMs();
  cluster.on('message', (worker, message: { type?: string }) => {
    if (message?.type === 'edge:ready') readySince.set(worker.id, performance.now());
  });
  cluster.on('exit', (worker, code, signal) => {
    startedFrom.delete(worker.id);
    const since = readySince.get(worker.id);
    readySince.delete(worker.id);
    const slot = slotOf.get(worker.id) ?? 0;
    slotOf.delete(worker.id);
    if (stopping) return;
    // The back-off counts the deaths of one slot since its last stable run: a worker that
    // served for stableMs before it died starts its slot's count over. It used to count every
    // death since the primary started, so after six, even years apart, each restart waited
    // the full 5 s; then one count for all slots, so a stable worker's death reset the
    // back-off of a sibling dying at once, and the deaths of different workers added up.
    const restarts = (since !== undefined && performance.now() - since >= stableMs ? 0 : (restartsOf.get(slot) ?? 0)) + 1;
    restartsOf.set(slot, restarts);
    // A worker that keeps dying at once must not spin: back off up to 5 s.
    const delay = Math.min(5000, 100 * 2 ** Math.min(restarts, 6));
    log.error({ worker: worker.id, slot, code, signal, restartInMs: delay }, 'worker died; restarting it');
    setTimeout(() => {
      if (!stopping) fork(slot);
    }, delay);
  });
  // Which workers have started their edge: only those have their drain handler installed.
  const readyWorkers = new Set<number>();
  let resolveStopped!: (code: number) => void;
  const stopped = new Promise<number>((resolve) => (resolveStopped = resolve));
  const drain = (worker: { send(message: object): unknown; isConnected(): boolean }) => {
    if (worker.isConnected()) worker.send({ type: 'edge:drain' });
  };
  // The config the workers run: a worker (first start or restart) asks for it, and a reload
  // replaces it once a worker has applied it (workers apply what the primary sends, so a
  // worker that refuses it refuses for all).
  let running = config;
  let reloads = 0;
  let appliedReload = 0;
  const sentReloads = new Map<number, EdgeConfig>();
  /** The reload each worker's start config came from (0: the config of the primary's start). */
  const startedFrom = new Map<number, number>();
  cluster.on('message', (worker, message: { type?: string; seq?: number }) => {
    if (message?.type === 'edge:want-config') {
      startedFrom.set(worker.id, appliedReload);
      if (worker.isConnected()) worker.send({ type: 'edge:config', config: running });
    } else if (message?.type === 'edge:ready' && reloads > (startedFrom.get(worker.id) ?? 0)) {
      // A reload sent while this worker was starting (it was not ready, so not sent it): its
      // turn now. Once applied, a reload's entry is gone and `running` is its config.
      if (worker.isConnected()) worker.send({ type: 'edge:reload', seq: reloads, config: sentReloads.get(reloads) ?? running });
    } else if (message?.type === 'edge:reloaded' && typeof message.seq === 'number' && message.seq > appliedReload) {
      const applied = sentReloads.get(message.seq);
      if (!applied) return;
      appliedReload = message.seq;
      running = applied;
      ticketKeys.setRetainMs(edgeTicketKeyRetainMs(applied.ticketLifetimeSeconds));
      for (const seq of sentReloads.keys()) if (seq <= message.seq) sentReloads.delete(seq);
    }
  });
  const ready = new Promise<void>((resolve) => {
    cluster.on('message', (worker, message: { type?: string }) => {
      if (message?.type !== 'edge:ready') return;
      readyWorkers.add(worker.id);
      // A stop that came while this worker was starting is passed on now that it can drain.
      if (stopping) return drain(worker);
      sendTicketKeys(worker); // again, in case 'online' came before the worker listened
      if (readyWorkers.size === config.workers) resolve();
    });
  });
  // The stop signals are handled from before the first fork: a SIGTERM that arrives while
  // workers are still starting (the port is open as soon as one listens) drains them, where
  // Node's default action would kill the primary and leave the workers orphaned.
  const removeSignals = onStopSignal((signal) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'stopping: workers drain their connections');
    const workers = Object.values(cluster.workers ?? {});
    let left = workers.length;
    if (left === 0) finish();
    for (const worker of workers) {
      worker?.once('exit', () => {
        if (--left === 0) finish();
      });
      if (worker && readyWorkers.has(worker.id)) drain(worker);
    }
  });
  // SIGHUP: the primary reads and checks the new config once (a bad one is refused here, with
  // its reason, and no worker hears of it), then sends it to each worker, which applies it.
  const reloadWorkers = () => {
    let next: EdgeConfig;
    try {
      if (!reread) throw new Error('this edge was started without a config to read again');
      next = reread();
      const restartOnly = (['workers', 'listen', 'metrics', 'logLevel'] as const).filter((k) => JSON.stringify(next[k]) !== JSON.stringify(config[k]));
      if (restartOnly.length) throw new Error(`${restartOnly.join(', ')} changed: a restart applies that (nothing was reloaded)`);
    } catch (err) {
      log.error({ err: (err as Error).message }, 'reload refused: the running config is kept');
      return;
    }
    log.info('reloading: workers apply the new config to new connections');
    const seq = ++reloads;
    sentReloads.set(seq, next);
    for (const worker of Object.values(cluster.workers ?? {})) {
      if (worker?.isConnected() && readyWorkers.has(worker.id)) worker.send({ type: 'edge:reload', seq, config: next });
    }
  };
  const removeReload = onReloadSignal(reloadWorkers);
  if (heldReloads?.release()) {
    log.info('a SIGHUP arrived while the edge was starting: reloading now');
    reloadWorkers();
  }
  function finish() {
    removeReload();
    clearInterval(broadcast);
    metricsServer?.close();
    removeSignals();
    log.info('all workers stopped');
    resolveStopped(0);
  }
  for (let slot = 0; slot < config.workers; slot++) fork(slot);
  await Promise.race([ready, stopped]);
  if (!stopping) log.info({ workers: config.workers, listen: config.listen }, 'edge workers ready');
  return stopped;
}
