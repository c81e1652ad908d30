import type { ConnectKeyd, KeydConnection } from './keyd-pool.js';

/** Connects with keyd's own client library (src/keyd/client.ts). */
export const connectKeyd: ConnectKeyd = async (endpoint, opts) => {
  // A computed specifier until src/keyd/client.ts lands; then a plain static import.
  const specifier = '../keyd/client.js';
  const { KeydClient } = (await import(specifier)) as {
    KeydClient: { connect(e: typeof endpoint, o: typeof opts): Promise<KeydConnection> };
  };
  return KeydClient.connect(endpoint, opts);
};
