/**
 * TLS handshakes: new MQTT connections per second (CONNACK received, then closed) over plain TCP
 * with a password, and over TLS with a password, a pinned client certificate and a client
 * certificate a tenant CA issued (MQTT_TLS_CLIENT_AUTH=optional), the variants alternating in each
 * round, one broker + API process on PostgreSQL and Redis. The clients run in this process; the
 * broker's CPU a connection is read from /proc. Certificates are P-256 ECDSA, made by openssl.
 */
import { randomBytes } from "node:crypto";
import mqtt, { type IClientOptions } from "mqtt";
import { hasOpenssl, issue, selfSigned } from "../test/helpers/certificates.ts";
import { tempDir } from "../test/helpers/services.ts";
import { median, statsOf, stop } from "./lib/processes.ts";
import {
  ADMIN_TOKEN,
  adminCaller,
  createDatabase,
  deleteRedisPrefix,
  REDIS_URL,
  serviceEnv,
  startService,
} from "./lib/targets.ts";

export const HANDSHAKE_VARIANTS = [
  "tcp-password",
  "tls-password",
  "tls-pinned-certificate",
  "tls-ca-certificate",
] as const;
export type HandshakeVariant = (typeof HANDSHAKE_VARIANTS)[number];

export interface HandshakeRun {
  variant: HandshakeVariant;
  round: number;
  connectionsPerSecond: number;
  /** The broker process's CPU a connection (handshake, CONNECT, CONNACK, close), µs. */
  brokerCpuMicros: number;
}

export interface TlsHandshakeResult {
  connections: number;
  concurrency: number;
  runs: HandshakeRun[];
  /** Median connections/s of each variant against TLS with a password. */
  vsTlsPassword: Record<HandshakeVariant, number>;
}

async function connectAll(url: string, options: IClientOptions, count: number, concurrency: number): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < count) {
        next++;
        const client = await mqtt.connectAsync(url, {
          ...options,
          clientId: `hs-${randomBytes(6).toString("hex")}`,
          reconnectPeriod: 0,
          connectTimeout: 30_000,
        });
        await client.endAsync();
      }
    }),
  );
}

export async function runTlsHandshake(connections: number, concurrency: number, rounds: number) {
  if (!(await hasOpenssl())) throw new Error("the tls-handshake scenario makes its certificates with openssl");
  const { dir, remove } = await tempDir();
  const db = await createDatabase();
  const prefix = `edge-ingest-bench-${randomBytes(4).toString("hex")}`;
  const server = await selfSigned(dir, "server", "localhost");
  const env = await serviceEnv({
    DATABASE_URL: db.url,
    REDIS_URL,
    REDIS_PREFIX: prefix,
    MIGRATE_ON_START: "false",
    ROLES: "api,broker",
    ADMIN_TOKEN,
    MQTT_TLS_CERT_FILE: server.certFile,
    MQTT_TLS_KEY_FILE: server.keyFile,
    MQTT_TLS_PORT: "0",
    MQTT_WSS_PORT: "0",
    MQTT_TLS_CLIENT_AUTH: "optional",
  });
  const broker = await startService("broker", env);
  const runs: HandshakeRun[] = [];
  try {
    const started = broker.lines.find((line) => line.includes("edge-ingest started")) ?? "{}";
    const ports = (JSON.parse(started) as { mqtt?: { tcp: number; tls: number } }).mqtt;
    if (!ports) throw new Error("the broker did not say its ports");
    const call = adminCaller(`http://127.0.0.1:${env.HTTP_PORT}`, ADMIN_TOKEN);
    const tenant = await call("/api/v1/admin/tenants", { name: "bench-tls" });
    const password = await call(`/api/v1/admin/tenants/${tenant.id}/agents`, { agent_id: "password-1" });
    const pinned = await selfSigned(dir, "pinned", "pinned-1");
    await call(`/api/v1/admin/tenants/${tenant.id}/agents`, { agent_id: "pinned-1", certificate: pinned.pem });
    const ca = await selfSigned(dir, "ca", "bench CA", { ca: true });
    await call(`/api/v1/admin/tenants/${tenant.id}/cas`, { pem: ca.pem, register_agents: true });
    const issued = await issue(dir, ca, "issued", "issued-1");

    const tls = { ca: server.pem, rejectUnauthorized: false };
    const login = { username: password.username, password: password.password };
    const variants: Record<HandshakeVariant, { url: string; options: IClientOptions }> = {
      "tcp-password": { url: `mqtt://127.0.0.1:${ports.tcp}`, options: login },
      "tls-password": { url: `mqtts://127.0.0.1:${ports.tls}`, options: { ...tls, ...login } },
      "tls-pinned-certificate": {
        url: `mqtts://127.0.0.1:${ports.tls}`,
        options: { ...tls, key: pinned.key, cert: pinned.pem },
      },
      "tls-ca-certificate": {
        url: `mqtts://127.0.0.1:${ports.tls}`,
        options: { ...tls, key: issued.key, cert: issued.pem },
      },
    };
    const pid = broker.child.pid as number;
    // Round 0 warms every path up and is not reported.
    for (let round = 0; round <= rounds; round++) {
      for (const variant of HANDSHAKE_VARIANTS) {
        const { url, options } = variants[variant];
        const count = round === 0 ? Math.max(1, Math.floor(connections / 10)) : connections;
        process.stderr.write(`tls-handshake: ${variant} round ${round}, ${count} connections…\n`);
        const cpuBefore = statsOf(pid).cpuSeconds;
        const t0 = Date.now();
        await connectAll(url, options, count, concurrency);
        const seconds = (Date.now() - t0) / 1000;
        const cpu = statsOf(pid).cpuSeconds - cpuBefore;
        if (round > 0) {
          runs.push({ variant, round, connectionsPerSecond: count / seconds, brokerCpuMicros: (cpu / count) * 1e6 });
        }
      }
    }
  } finally {
    await stop(broker);
    await db.drop();
    await deleteRedisPrefix(prefix);
    await remove();
  }
  const rate = (variant: HandshakeVariant) =>
    median(runs.filter((r) => r.variant === variant).map((r) => r.connectionsPerSecond));
  const result: TlsHandshakeResult = {
    connections,
    concurrency,
    runs,
    vsTlsPassword: Object.fromEntries(
      HANDSHAKE_VARIANTS.map((variant) => [variant, rate(variant) / rate("tls-password")]),
    ) as Record<HandshakeVariant, number>,
  };
  return result;
}
