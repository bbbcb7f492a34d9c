import { readFile } from "node:fs/promises";
import http from "node:http";
import https from "node:https";
import net from "node:net";
import type { Duplex } from "node:stream";
import tls from "node:tls";
import type { Aedes } from "aedes";
import type { Logger } from "pino";
import { createWebSocketStream, WebSocketServer } from "ws";
import type { Config } from "../config.ts";
import { REFUSALS } from "../ingest/refusals.ts";
import { TokenBucket } from "../limits/token-bucket.ts";
import { rateLimitedLog } from "../logger.ts";
import type { Telemetry } from "../telemetry/prometheus.ts";
import { listen } from "./listen.ts";
import { disconnectMqtt5Connection, reasonOf } from "./mqtt5.ts";
import { warnIfTooFewFiles } from "./open-files.ts";
import { Outgoing } from "./outgoing.ts";
import { guardPacketSize } from "./packet-size-guard.ts";
import { ReadThrottle } from "./read-throttle.ts";
import { refuseConnection } from "./refuse-connection.ts";

export type ListenerName = "tcp" | "ws" | "tls" | "wss";

export interface Listeners {
  /** Bound ports, by listener (TLS ones only when a certificate is configured). */
  ports: Partial<Record<ListenerName, number>>;
  /**
   * Stops accepting connections at once; open ones stay until the broker closes them. Resolves
   * when the last one is gone.
   */
  close(): Promise<void>;
  /** Reads the TLS listeners' certificate and key files again (SIGHUP); new handshakes use them. */
  reloadCertificate(): Promise<void>;
}

const WEBSOCKET_PATHS = new Set(["/", "/mqtt"]);
/** How long a connection refused past the rate has to send the CONNECT its refusal answers. */
const REFUSED_CONNECT_TIMEOUT_MS = 5_000;

const closeServer = (server: net.Server) =>
  new Promise<void>((resolve) => (server.listening ? server.close(() => resolve()) : resolve()));

/**
 * The MQTT listeners: TCP and WebSockets (`/` and `/mqtt`, through ws 8's stream, not the
 * `websocket-stream` package that pins a vulnerable ws 3), plus TLS and WSS when a certificate is
 * configured. Every connection is counted against MQTT_MAX_CONNECTIONS, held back while its listener
 * is over MQTT_MAX_CONNECTION_RATE (it waits, unread, for its turn; refused with a CONNACK when its
 * wait would pass MQTT_CONNECTION_MAX_WAIT_MS), dropped when it announces a
 * packet over MQTT_MAX_PACKET_BYTES (before the packet is buffered), and cut when more than
 * MQTT_MAX_OUTGOING_BYTES or MQTT_MAX_OUTGOING_MESSAGES wait to be written to it.
 */
export async function startListeners(
  broker: Aedes,
  config: Config,
  telemetry: Telemetry,
  logger: Logger,
): Promise<Listeners> {
  await warnIfTooFewFiles(config.MQTT_MAX_CONNECTIONS, logger);
  let open = 0;
  const logTooLarge = rateLimitedLog(logger, 20);
  const logSlowConsumer = rateLimitedLog(logger, 20);
  const logListenerError = rateLimitedLog(logger, 5, 60_000);
  const outgoingLimits = { maxBytes: config.MQTT_MAX_OUTGOING_BYTES, maxMessages: config.MQTT_MAX_OUTGOING_MESSAGES };
  const connectionRates = new Map<ListenerName, TokenBucket>();
  /** Connections handed to the broker that have not had their CONNACK yet. */
  const handshakes = new Set<object>();
  broker.on("connackSent", (_packet, client) => handshakes.delete(client.conn));

  const accept = (listener: ListenerName) => (connection: Duplex, request?: http.IncomingMessage) => {
    if (open >= config.MQTT_MAX_CONNECTIONS) {
      telemetry.countDisconnect("max_connections");
      connection.destroy();
      return;
    }
    open++;
    telemetry.mqttConnections.set(open);
    connection.once("close", () => telemetry.mqttConnections.set(--open));
    connection.on("error", (error: Error) => logger.debug({ err: error }, "MQTT connection error"));
    const now = Date.now();
    const rate =
      connectionRates.get(listener) ??
      new TokenBucket(config.MQTT_MAX_CONNECTION_RATE, config.MQTT_CONNECTION_RATE_BURST, now);
    connectionRates.set(listener, rate);
    // Past the rate a connection waits its turn, unread (a reconnect storm after a restart), but
    // never longer than a client waits for its CONNACK: one that would is told to come back later.
    // Its wait is its turn plus the handshakes still ahead of it at that rate (a broker slower than
    // its rate, on a busy machine, would otherwise take in more than it answers in time).
    const ahead = (handshakes.size * 1000) / config.MQTT_MAX_CONNECTION_RATE;
    if (rate.waitFor(1, now) + ahead > config.MQTT_CONNECTION_MAX_WAIT_MS) {
      telemetry.mqttConnectsRefused.inc({ reason: "connection_rate" });
      refuseConnection(connection, REFUSALS.connection_rate.mqtt5, REFUSED_CONNECT_TIMEOUT_MS);
      return;
    }
    const wait = rate.take(1, now);
    if (wait === 0) return hand(connection, request);
    telemetry.mqttConnectionsDelayed.inc({ listener });
    setTimeout(() => connection.destroyed || hand(connection, request), wait);
  };

  const hand = (connection: Duplex, request?: http.IncomingMessage) => {
    handshakes.add(connection);
    connection.once("close", () => handshakes.delete(connection));
    ReadThrottle.attach(connection);
    guardPacketSize(connection, config.MQTT_MAX_PACKET_BYTES, () => {
      telemetry.countDisconnect("packet_too_large");
      disconnectMqtt5Connection(
        connection,
        reasonOf("packet_too_large", `packets are at most ${config.MQTT_MAX_PACKET_BYTES} bytes`),
      );
      logTooLarge({ limit: config.MQTT_MAX_PACKET_BYTES }, "disconnecting: packet over the size limit");
    });
    Outgoing.attach(connection, outgoingLimits, (waiting) => {
      telemetry.countDisconnect("slow_consumer");
      logSlowConsumer(
        { ...waiting, limits: outgoingLimits },
        "disconnecting: the client does not read what it subscribed to",
      );
    });
    broker.handle(connection, request);
  };

  const onListenerError = (error: Error, listener: string) =>
    logListenerError({ err: error, listener }, "MQTT listener could not accept a connection");
  // A storm's connections queue where the rate limit sees them, not in a short kernel backlog.
  const bind = (server: net.Server, name: string, port: number) =>
    listen(server, name, { host: config.MQTT_HOST, port, backlog: config.MQTT_LISTEN_BACKLOG }, onListenerError);

  const servers: net.Server[] = [];
  const webSockets: WebSocketServer[] = [];
  let reloadCertificate: Listeners["reloadCertificate"] = async () => undefined;
  const ports: Listeners["ports"] = {};

  function withWebSockets(server: http.Server, listener: "ws" | "wss"): http.Server {
    const wss = new WebSocketServer({
      noServer: true,
      handleProtocols: (protocols) => protocols.values().next().value ?? false,
    });
    webSockets.push(wss);
    server.on("upgrade", (request, socket, head) => {
      const path = new URL(request.url ?? "/", "http://localhost").pathname;
      if (!WEBSOCKET_PATHS.has(path)) {
        socket.end("HTTP/1.1 404 Not Found\r\n\r\n");
        return;
      }
      wss.handleUpgrade(request, socket, head, (ws) => accept(listener)(createWebSocketStream(ws), request));
    });
    return server;
  }

  const close = () => {
    for (const wss of webSockets) wss.close();
    return Promise.all(servers.map(closeServer)).then(() => undefined);
  };
  const upgradeRequired = (_request: http.IncomingMessage, response: http.ServerResponse) =>
    response.writeHead(426).end();

  try {
    // No Nagle: acknowledgements are small writes made after the batch is durable, and delaying them
    // behind the client's delayed ACK costs ~40 ms a round trip.
    const tcp = net.createServer({ noDelay: true }, accept("tcp"));
    servers.push(tcp);
    ports.tcp = await bind(tcp, "MQTT_PORT", config.MQTT_PORT);
    const ws = withWebSockets(http.createServer(upgradeRequired), "ws");
    servers.push(ws);
    ports.ws = await bind(ws, "MQTT_WS_PORT", config.MQTT_WS_PORT);

    if (config.MQTT_TLS_CERT_FILE && config.MQTT_TLS_KEY_FILE) {
      const options = await tlsOptions(config);
      const secure = tls.createServer({ ...options, noDelay: true }, accept("tls"));
      servers.push(secure);
      ports.tls = await bind(secure, "MQTT_TLS_PORT", config.MQTT_TLS_PORT);
      const secureWeb = https.createServer(options, upgradeRequired);
      const wss = withWebSockets(secureWeb, "wss");
      servers.push(wss);
      ports.wss = await bind(wss, "MQTT_WSS_PORT", config.MQTT_WSS_PORT);
      // A renewed server certificate is read again without a restart; connections open stay as they are.
      reloadCertificate = async () => {
        const renewed = await tlsOptions(config);
        secure.setSecureContext(renewed);
        secureWeb.setSecureContext(renewed);
      };
    }
  } catch (error) {
    await close();
    throw error;
  }
  return { ports, close, reloadCertificate: () => reloadCertificate() };
}

/**
 * The TLS listeners' settings: the server certificate, TLS 1.2 and up, and with
 * MQTT_TLS_CLIENT_AUTH a request for the client's certificate. Its chain is not judged by the
 * handshake (rejectUnauthorized: false) but at CONNECT, against the agents' pinned certificates
 * and the tenants' CAs (src/credentials/identify.ts), so a refusal is a CONNACK with its reason.
 */
async function tlsOptions(config: Config): Promise<tls.SecureContextOptions & tls.TlsOptions> {
  return {
    cert: await readFile(config.MQTT_TLS_CERT_FILE as string),
    key: await readFile(config.MQTT_TLS_KEY_FILE as string),
    minVersion: "TLSv1.2",
    ...(config.MQTT_TLS_CIPHERS && { ciphers: config.MQTT_TLS_CIPHERS }),
    requestCert: config.MQTT_TLS_CLIENT_AUTH !== "none",
    rejectUnauthorized: false,
  };
}
