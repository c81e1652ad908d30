import { KeydClient } from '../keyd/client.js';
import type { ConnectKeyd } from './keyd-pool.js';

/** Connects with keyd's own client library (one pipelined connection; KEYD_* error codes). */
export const connectKeyd: ConnectKeyd = (endpoint, opts) => KeydClient.connect(endpoint, opts);
