/**
 * Formats: the same readings sent over HTTP as JSON (`POST /api/v1/metrics`), as InfluxDB line
 * protocol (`POST /api/v2/write`) and as OTLP protobuf (`POST /v1/metrics`), one format after the
 * other in one run, to one API process and one worker (distributed mode). For each: readings
 * acknowledged and stored per second, and the CPU a reading costs the API process (where the
 * parsers run), the worker and PostgreSQL. Bodies are encoded before the clock starts, so the load
 * generator's encoding is not in the figures.
 */
import { randomBytes } from "node:crypto";
import pg from "pg";
import { encodeOtlpRequest } from "../src/formats/otlp-proto.ts";
import { median, statsOf, stop } from "./lib/processes.ts";
import { serviceCpu } from "./lib/service-cpu.ts";
import {
  ADMIN_TOKEN,
  adminCaller,
  createDatabase,
  deleteRedisPrefix,
  REDIS_URL,
  serviceEnv,
  startService,
} from "./lib/targets.ts";

export const FORMATS = ["json", "line-protocol", "otlp-protobuf"] as const;
export type Format = (typeof FORMATS)[number];

export interface FormatRun {
  format: Format;
  round: number;
  readings: number;
  /** Readings acknowledged (every request answered 2xx) and stored, per second. */
  readingsPerSecond: number;
  /** Bytes a reading takes on the wire. */
  bytesPerReading: number;
  /** CPU microseconds a reading costs each process. */
  apiCpuMicros: number;
  workerCpuMicros: number;
  postgresqlCpuMicros: number;
}

export interface FormatsResult {
  requests: number;
  readingsPerRequest: number;
  concurrency: number;
  runs: FormatRun[];
  /** Median API CPU a reading of each format against JSON's. */
  apiCpuVsJson: Record<Format, number>;
}

/** Ten metrics of one agent, each at `timesPerMetric` consecutive milliseconds: a request's readings. */
interface Request {
  agent: string;
  start: number;
  metrics: number;
  times: number;
}

const METRICS = 10;

function jsonBody(r: Request, prefix: string): string {
  const metrics = [];
  for (let t = 0; t < r.times; t++) {
    for (let m = 0; m < r.metrics; m++) {
      metrics.push({
        name: `${prefix}_f${m}`,
        value: m + t / 10,
        timestamp: r.start + t,
        // The other formats give each timed reading an id of 32 characters: so does this one.
        dedupe_id: `${r.agent}-${prefix}-${m}-${r.start + t}`.padEnd(32, "0"),
        tags: { room: "lab" },
      });
    }
  }
  return JSON.stringify({ agent_id: r.agent, metrics });
}

function lineProtocolBody(r: Request, prefix: string): string {
  const lines = [];
  for (let t = 0; t < r.times; t++) {
    const fields = Array.from({ length: r.metrics }, (_, m) => `f${m}=${m + t / 10}`).join(",");
    lines.push(`${prefix},host=${r.agent},room=lab ${fields} ${r.start + t}`);
  }
  return lines.join("\n");
}

function otlpBody(r: Request, prefix: string): Buffer {
  const body = encodeOtlpRequest({
    resourceMetrics: [
      {
        resource: { attributes: [{ key: "host.name", value: { stringValue: r.agent } }] },
        scopeMetrics: [
          {
            metrics: Array.from({ length: r.metrics }, (_, m) => ({
              name: `${prefix}_f${m}`,
              gauge: {
                dataPoints: Array.from({ length: r.times }, (_, t) => ({
                  timeUnixNano: `${r.start + t}000000`,
                  asDouble: m + t / 10,
                  attributes: [{ key: "room", value: { stringValue: "lab" } }],
                })),
              },
            })),
          },
        ],
      },
    ],
  });
  return Buffer.from(body);
}

const SENDERS: Record<Format, { path: string; type: string; body: (r: Request, prefix: string) => string | Buffer }> = {
  json: { path: "/api/v1/metrics", type: "application/json", body: jsonBody },
  "line-protocol": { path: "/api/v2/write?precision=ms", type: "text/plain; charset=utf-8", body: lineProtocolBody },
  "otlp-protobuf": { path: "/v1/metrics", type: "application/x-protobuf", body: otlpBody },
};

async function storedOf(url: string, prefix: string): Promise<number> {
  const client = new pg.Client(url);
  await client.connect();
  try {
    const { rows } = await client.query<{ n: string }>("SELECT count(*) AS n FROM metrics WHERE name LIKE $1", [
      `${prefix}\\_%`,
    ]);
    return Number(rows[0]?.n);
  } finally {
    await client.end();
  }
}

async function tenantToken(httpUrl: string): Promise<string> {
  const call = adminCaller(httpUrl, ADMIN_TOKEN);
  const tenant = await call("/api/v1/admin/tenants", { name: "bench-formats" });
  return (await call(`/api/v1/admin/tenants/${tenant.id}/tokens`, { role: "ingest" })).token as string;
}

export async function runFormats(
  requestCount: number,
  timesPerRequest: number,
  concurrency: number,
  rounds: number,
): Promise<FormatsResult> {
  const db = await createDatabase();
  const redisPrefix = `edge-ingest-bench-${randomBytes(4).toString("hex")}`;
  const shared = { DATABASE_URL: db.url, REDIS_URL, REDIS_PREFIX: redisPrefix, MIGRATE_ON_START: "false" };
  const apiEnv = await serviceEnv({ ...shared, ROLES: "api", ADMIN_TOKEN });
  const api = await startService("api", apiEnv);
  const worker = await startService("worker", await serviceEnv({ ...shared, ROLES: "worker" }));
  const httpUrl = `http://127.0.0.1:${apiEnv.HTTP_PORT}`;
  const runs: FormatRun[] = [];
  try {
    const token = await tenantToken(httpUrl);
    const start = Date.now() - 3_600_000;
    // Round 0 warms every path up (a tenth of the requests) and is not reported: the first format
    // sent would otherwise pay the others' share of the JIT's work.
    for (let round = 0; round <= rounds; round++) {
      for (const format of FORMATS) {
        const prefix = `${format.replace(/-/g, "")}${round}`;
        const sender = SENDERS[format];
        const requests = round === 0 ? Math.max(1, Math.floor(requestCount / 10)) : requestCount;
        const bodies = Array.from({ length: requests }, (_, i) =>
          sender.body(
            {
              agent: `agent-${i % 10}`,
              start: start + Math.floor(i / 10) * timesPerRequest,
              metrics: METRICS,
              times: timesPerRequest,
            },
            prefix,
          ),
        );
        const bytes = bodies.reduce((sum, body) => sum + body.length, 0);
        const readings = requests * METRICS * timesPerRequest;
        process.stderr.write(`formats: ${format} round ${round}, ${readings} readings…\n`);
        const apiBefore = statsOf(api.child.pid as number).cpuSeconds;
        const workerBefore = statsOf(worker.child.pid as number).cpuSeconds;
        const servicesBefore = await serviceCpu(db.url, REDIS_URL);
        const started = Date.now();
        let next = 0;
        await Promise.all(
          Array.from({ length: concurrency }, async () => {
            while (next < bodies.length) {
              const body = bodies[next++] as string | Buffer;
              const response = await fetch(`${httpUrl}${sender.path}`, {
                method: "POST",
                headers: { authorization: `Bearer ${token}`, "content-type": sender.type },
                body,
              });
              const text = await response.text();
              if (!response.ok) throw new Error(`${format}: ${response.status} ${text.slice(0, 300)}`);
            }
          }),
        );
        while ((await storedOf(db.url, prefix)) < readings) await new Promise((resolve) => setTimeout(resolve, 100));
        const seconds = (Date.now() - started) / 1000;
        const servicesAfter = await serviceCpu(db.url, REDIS_URL);
        const micros = (cpuSeconds: number) => (cpuSeconds / readings) * 1e6;
        if (round === 0) continue;
        runs.push({
          format,
          round,
          readings,
          readingsPerSecond: readings / seconds,
          bytesPerReading: bytes / readings,
          apiCpuMicros: micros(statsOf(api.child.pid as number).cpuSeconds - apiBefore),
          workerCpuMicros: micros(statsOf(worker.child.pid as number).cpuSeconds - workerBefore),
          postgresqlCpuMicros: micros(servicesAfter.postgresql - servicesBefore.postgresql),
        });
      }
    }
  } finally {
    await stop(api);
    await stop(worker);
    await db.drop();
    await deleteRedisPrefix(redisPrefix);
  }
  const apiCpu = (format: Format) => median(runs.filter((r) => r.format === format).map((r) => r.apiCpuMicros));
  return {
    requests: requestCount,
    readingsPerRequest: METRICS * timesPerRequest,
    concurrency,
    runs,
    apiCpuVsJson: Object.fromEntries(FORMATS.map((f) => [f, apiCpu(f) / apiCpu("json")])) as Record<Format, number>,
  };
}
