// Upstream HTTP servers for egress tests. They listen on loopback only (127.0.0.1 or ::1) and record
// every connection and request, so a test can prove that a refused request never reached them.
import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { gzipSync } from 'node:zlib';

export interface ReceivedRequest {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: string;
}

export interface Upstream {
  host: '127.0.0.1' | '::1';
  port: number;
  /** Base URL by address, e.g. http://127.0.0.1:4321 or http://[::1]:4321 */
  url: string;
  /** Base URL under another host name (which the test maps to this server's address). */
  urlAs(name: string): string;
  connections: number;
  received: ReceivedRequest[];
  close(): Promise<void>;
}

/**
 * Routes: /ok, /bytes?n=N[&chunked=1][&gzip=1], /echo (method, headers, body as JSON),
 * /todo?title=T (JSON with a `title`, as the hello plugin expects), /todos/1 (jsonplaceholder's todo 1),
 * /redirect?to=URL[&status=302], /hang (never answers), /hang-body (headers, then stalls).
 */
export async function startUpstream(host: '127.0.0.1' | '::1' = '127.0.0.1', port = 0): Promise<Upstream> {
  const sockets = new Set<Socket>();
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString();
      upstream.received.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body });
      route(req, res, body);
    });
  });
  server.on('connection', (socket: Socket) => {
    upstream.connections += 1;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  server.listen(port, host);
  await once(server, 'listening');
  const actualPort = (server.address() as AddressInfo).port;
  const bracketed = host.includes(':') ? `[${host}]` : host;

  const upstream: Upstream = {
    host,
    port: actualPort,
    url: `http://${bracketed}:${actualPort}`,
    urlAs: (name) => `http://${name}:${actualPort}`,
    connections: 0,
    received: [],
    async close() {
      for (const socket of sockets) socket.destroy();
      server.close();
      await once(server, 'close');
    },
  };
  return upstream;
}

function route(req: http.IncomingMessage, res: http.ServerResponse, body: string): void {
  const url = new URL(req.url ?? '/', 'http://upstream.invalid');
  switch (url.pathname) {
    case '/ok':
      res.end('ok');
      return;
    case '/bytes': {
      const n = Number(url.searchParams.get('n') ?? '0');
      let payload = Buffer.alloc(n, 'x');
      if (url.searchParams.has('gzip')) {
        payload = gzipSync(payload);
        res.setHeader('content-encoding', 'gzip');
      }
      if (url.searchParams.has('chunked')) {
        // No content-length: the size is only known by reading.
        const half = Math.floor(payload.length / 2);
        res.write(payload.subarray(0, half));
        setTimeout(() => res.end(payload.subarray(half)), 5);
      } else {
        res.setHeader('content-length', payload.length);
        res.end(payload);
      }
      return;
    }
    case '/todo':
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ userId: 1, id: 1, title: url.searchParams.get('title') ?? 'delectus aut autem' }));
      return;
    case '/todos/1':
      // jsonplaceholder's todo 1 as it sends it (2-space indent, 83 bytes): what the seed's hello plugin fetches.
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ userId: 1, id: 1, title: 'delectus aut autem', completed: false }, null, 2));
      return;
    case '/echo':
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ method: req.method, headers: req.headers, body }));
      return;
    case '/redirect':
      res.statusCode = Number(url.searchParams.get('status') ?? '302');
      res.setHeader('location', url.searchParams.get('to') ?? '/ok');
      res.end('moved');
      return;
    case '/hang':
      return;
    case '/hang-body':
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('partial');
      return;
    default:
      res.statusCode = 404;
      res.end('not found');
  }
}

/** A loopback port with nothing listening on it (bound, then released). */
export async function closedPort(): Promise<number> {
  const server = http.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  server.close();
  await once(server, 'close');
  return port;
}
