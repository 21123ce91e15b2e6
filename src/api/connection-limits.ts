// Client connections are capped, so the process keeps descriptors for its own work: one past the
// open-files limit made every descriptor-using call fail (EMFILE), and one of those, in a timer, ended
// the process. Past MAX_CONNECTIONS (Node's server.maxConnections) or MAX_CONNECTIONS_PER_ADDRESS from
// one client (an IPv4 address, an IPv6 /64: clientOf), a new connection is closed as it comes, before any byte of it is read.
import type { Socket } from 'node:net';
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import ipaddr from 'ipaddr.js';
import { DESCRIPTORS_PER_CONNECTION, type Config } from '../config.ts';
import type { ServiceMetrics } from '../metrics.ts';

/** Refusals are counted in metrics; the log gets one line per this long at most (an attack would flood it). */
const REFUSAL_LOG_INTERVAL_MS = 10_000;

async function connectionLimits(
  app: FastifyInstance,
  { config, metrics }: { config: Config; metrics: ServiceMetrics },
): Promise<void> {
  const { max, perAddress, descriptorLimit, descriptorsReserved } = config.connections;
  const server = app.server;
  server.maxConnections = max;
  if (descriptorLimit !== null && descriptorsReserved + max * DESCRIPTORS_PER_CONNECTION > descriptorLimit) {
    app.log.warn(
      { maxConnections: max, descriptorLimit, descriptorsReserved },
      'MAX_CONNECTIONS may need more descriptors than the process may open (ulimit -n): past them, uploads, downloads and new workers fail until connections close',
    );
  }

  let lastLogged = -Infinity;
  const refused = (reason: 'max_connections' | 'per_address', remoteAddress: string | undefined) => {
    metrics.connectionRefused(reason);
    const now = performance.now();
    if (now - lastLogged < REFUSAL_LOG_INTERVAL_MS) return;
    lastLogged = now;
    app.log.warn(
      { reason, remoteAddress, maxConnections: max, maxConnectionsPerAddress: perAddress },
      'connection refused: too many open',
    );
  };
  server.on('drop', (data?: { remoteAddress?: string }) => refused('max_connections', data?.remoteAddress));

  if (perAddress > 0) {
    const open = new Map<string, number>();
    server.on('connection', (socket: Socket) => {
      const address = clientOf(socket.remoteAddress ?? '');
      const count = open.get(address) ?? 0;
      if (count >= perAddress) {
        refused('per_address', address);
        socket.destroy();
        return;
      }
      open.set(address, count + 1);
      socket.once('close', () => {
        const left = open.get(address)! - 1;
        if (left === 0) open.delete(address);
        else open.set(address, left);
      });
    });
  }

  // Without a listener an 'error' on the server ends the process. After listening, the only one is a
  // failed accept (EMFILE/ENFILE when libuv's reserve descriptor is gone too): the client is lost, the server is not.
  server.on('error', (err: NodeJS.ErrnoException) => {
    if (server.listening) app.log.error({ err }, 'accepting a connection failed');
  });
}

/**
 * The client a connection's address stands for, as MAX_CONNECTIONS_PER_ADDRESS counts it: an IPv4
 * address (an IPv4-mapped IPv6 one too), or an IPv6 address's /64, which one host or network is given
 * whole (every address in it may be its own; counting them one by one would cap nothing).
 */
export function clientOf(remoteAddress: string): string {
  if (!remoteAddress.includes(':') || !ipaddr.isValid(remoteAddress)) return remoteAddress;
  const address = ipaddr.process(remoteAddress);
  if (address.kind() === 'ipv4') return address.toString();
  const parts = (address as ipaddr.IPv6).parts.slice(0, 4);
  return `${parts.map((part) => part.toString(16)).join(':')}::/64`;
}

export const connectionLimitsPlugin = fp(connectionLimits, { name: 'connection-limits' });
