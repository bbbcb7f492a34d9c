/**
 * The MQTT load generator, run in a process of its own. Two modes:
 * - `publish`: each publisher connects and sends `messages` readings (about 60 bytes) with up to
 *   `inflight` unacknowledged at once; prints one JSON result line and writes the dedupe ids of the
 *   acknowledged readings to `ackedFile`;
 * - `idle`: opens `connections` authenticated connections, prints `ready`, holds them until killed;
 * - `steady`: one QoS 1 reading every `intervalMs` for `seconds`; prints the PUBACK latencies;
 * - `flood`: QoS 0 readings as fast as the socket takes them, for `seconds`; prints how many and when;
 * - `sustain`: each publisher sends QoS 1 readings at `ratePerSecond` for `seconds`, reconnecting to
 *   the next of `urls` whenever its connection drops (mqtt.js resends what was not acknowledged);
 *   writes the acknowledged dedupe ids to `ackedFile` and prints the acknowledgements per second.
 */
import { writeFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import mqtt, { type MqttClient } from "mqtt";
import { percentile } from "./lib/processes.ts";

export interface Publisher {
  username?: string;
  password?: string;
  topic: string;
  idPrefix: string;
  /** The broker this publisher connects to, when not the plan's `url`. */
  url?: string;
}

export type LoadPlan =
  | {
      mode: "publish";
      /** The MQTT version to speak: 4 is 3.1.1 (the default), 5 is 5.0. */
      protocolVersion?: 4 | 5;
      url: string;
      publishers: Publisher[];
      messages: number;
      inflight: number;
      qos: 0 | 1;
      ackedFile: string;
      /** Total messages per second to offer, spread evenly; absent: as fast as acknowledgements allow. */
      ratePerSecond?: number;
      /**
       * PUBACK latencies of the messages sent within this long of the start are reported apart
       * (`warmup…`), not in `pubackP50Ms` / `pubackP99Ms`: both ends' code is still cold then.
       */
      warmupMs?: number;
    }
  | { mode: "idle"; url: string; connections: number; username?: string; password?: string }
  | { mode: "steady"; url: string; publisher: Publisher; intervalMs: number; seconds: number }
  | { mode: "flood"; url: string; publishers: Publisher[]; seconds: number }
  | {
      mode: "sustain";
      urls: string[];
      publishers: Publisher[];
      ratePerSecond: number;
      seconds: number;
      ackedFile: string;
    };

export interface SustainResult {
  offered: number;
  acknowledged: number;
  startedAt: number;
  /** Acknowledgements in each second from `startedAt`. */
  acksPerSecond: number[];
}

export interface SteadyResult {
  acknowledged: number;
  p50Ms: number | null;
  p99Ms: number | null;
}

export interface FloodResult {
  /** Readings written to the socket, and when the flood started and ended (epoch ms). */
  offered: number;
  startedAt: number;
  endedAt: number;
}

export interface LoadResult {
  offered: number;
  acknowledged: number;
  startedAt: number;
  durationMs: number;
  pubackP50Ms: number | null;
  pubackP99Ms: number | null;
  /** Messages sent within `warmupMs` of the start and their PUBACK p99 (absent without a warm-up). */
  warmupMessages?: number;
  warmupPubackP99Ms?: number | null;
  cpuSeconds: number;
  /** CPU from the first message sent to the last acknowledgement (without start-up and connecting). */
  publishingCpuSeconds: number;
  peakRssMiB: number;
}

const plan = JSON.parse(process.argv[2] ?? "{}") as LoadPlan;

function connect(url: string, username?: string, password?: string, protocolVersion: 4 | 5 = 4): Promise<MqttClient> {
  return mqtt.connectAsync(url, {
    username,
    password,
    protocolVersion,
    reconnectPeriod: 0,
    connectTimeout: 30_000,
    keepalive: 300,
  });
}

async function publishAll(): Promise<void> {
  if (plan.mode !== "publish") return;
  const clients = await Promise.all(
    plan.publishers.map((p) => connect(p.url ?? plan.url, p.username, p.password, plan.protocolVersion)),
  );
  const latencies: number[] = [];
  const warmupLatencies: number[] = [];
  const warmupMs = plan.warmupMs ?? 0;
  const acked: string[] = [];
  let offered = 0;
  const startedAt = Date.now();
  const cpuAtStart = process.cpuUsage();
  const t0 = performance.now();
  let lastAck = t0;

  // Message n of a publisher is due n / (rate per publisher) after the start; unpaced, at once.
  const interval = plan.ratePerSecond ? (1000 * plan.publishers.length) / plan.ratePerSecond : 0;
  await Promise.all(
    plan.publishers.map(
      (publisher, p) =>
        new Promise<void>((resolve) => {
          const client = clients[p] as MqttClient;
          let next = 0;
          let inflight = 0;
          let failed = false;
          // One pump per publisher starts whatever is due while fewer than `inflight` await their
          // acknowledgement: no timer per message, so pacing does not skew the latencies measured.
          const pump = () => {
            const due = interval ? Math.floor((performance.now() - t0) / interval) + 1 : plan.messages;
            while (!failed && inflight < plan.inflight && next < Math.min(due, plan.messages)) send(next++);
            if ((failed || next >= plan.messages) && inflight === 0) {
              clearInterval(pacer);
              resolve();
            }
          };
          const send = (n: number) => {
            const dedupeId = `${publisher.idPrefix}-${n}`;
            const payload = reading(n, dedupeId);
            offered++;
            inflight++;
            const sent = performance.now();
            client.publishAsync(publisher.topic, payload, { qos: plan.qos }).then(
              () => {
                lastAck = performance.now();
                if (plan.qos === 1) (sent - t0 < warmupMs ? warmupLatencies : latencies).push(lastAck - sent);
                acked.push(dedupeId);
                inflight--;
                pump();
              },
              () => {
                failed = true;
                inflight--;
                pump();
              },
            );
          };
          const pacer = setInterval(pump, interval ? Math.max(1, Math.min(interval, 5)) : 1000);
          pump();
        }),
    ),
  );
  const publishingCpu = process.cpuUsage(cpuAtStart);
  await Promise.all(clients.map((client) => client.endAsync()));
  latencies.sort((x, y) => x - y);
  warmupLatencies.sort((x, y) => x - y);
  writeFileSync(plan.ackedFile, acked.join("\n"));
  const usage = process.resourceUsage();
  const result: LoadResult = {
    offered,
    acknowledged: acked.length,
    startedAt,
    durationMs: lastAck - t0,
    pubackP50Ms: percentile(latencies, 50),
    pubackP99Ms: percentile(latencies, 99),
    ...(warmupMs > 0 && {
      warmupMessages: warmupLatencies.length,
      warmupPubackP99Ms: percentile(warmupLatencies, 99),
    }),
    cpuSeconds: (usage.userCPUTime + usage.systemCPUTime) / 1e6,
    publishingCpuSeconds: (publishingCpu.user + publishingCpu.system) / 1e6,
    peakRssMiB: usage.maxRSS / 1024,
  };
  console.log(`RESULT ${JSON.stringify(result)}`);
}

const reading = (n: number, dedupeId: string) =>
  `{"value":${n % 1000}.5,"timestamp":${Date.now()},"dedupe_id":"${dedupeId}"}`;

async function steadily(): Promise<void> {
  if (plan.mode !== "steady") return;
  const client = await connect(plan.url, plan.publisher.username, plan.publisher.password);
  const latencies: number[] = [];
  const until = Date.now() + plan.seconds * 1000;
  for (let n = 0; Date.now() < until; n++) {
    const sent = performance.now();
    await client.publishAsync(plan.publisher.topic, reading(n, `${plan.publisher.idPrefix}-${n}`), { qos: 1 });
    latencies.push(performance.now() - sent);
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, plan.intervalMs - (performance.now() - sent))));
  }
  await client.endAsync();
  latencies.sort((x, y) => x - y);
  const result: SteadyResult = {
    acknowledged: latencies.length,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
  };
  console.log(`RESULT ${JSON.stringify(result)}`);
}

async function flood(): Promise<void> {
  if (plan.mode !== "flood") return;
  const clients = await Promise.all(
    plan.publishers.map((publisher) => connect(plan.url, publisher.username, publisher.password)),
  );
  let offered = 0;
  const startedAt = Date.now();
  const until = startedAt + plan.seconds * 1000;
  // Each agent as fast as its socket takes them: its next hundred once its last have been handed to the kernel.
  await Promise.all(
    clients.map(async (client, i) => {
      const publisher = plan.publishers[i] as Publisher;
      let own = 0;
      while (Date.now() < until) {
        const batch: Promise<unknown>[] = [];
        for (let j = 0; j < 100; j++, own++, offered++) {
          batch.push(client.publishAsync(publisher.topic, reading(own, `${publisher.idPrefix}-${own}`)));
        }
        await Promise.race([Promise.all(batch), new Promise((resolve) => setTimeout(resolve, until - Date.now()))]);
      }
    }),
  );
  const result: FloodResult = { offered, startedAt, endedAt: Date.now() };
  console.log(`RESULT ${JSON.stringify(result)}`);
}

async function sustain(): Promise<void> {
  if (plan.mode !== "sustain") return;
  const servers = plan.urls.map((url) => {
    const { hostname, port } = new URL(url);
    return { host: hostname, port: Number(port) };
  });
  const clients = await Promise.all(
    plan.publishers.map((p) =>
      mqtt.connectAsync(plan.urls[0] as string, {
        username: p.username,
        password: p.password,
        servers,
        reconnectPeriod: 200,
        connectTimeout: 5000,
        keepalive: 10,
      }),
    ),
  );
  for (const client of clients) client.on("error", () => undefined);
  const startedAt = Date.now();
  const acksPerSecond: number[] = [];
  const acked: string[] = [];
  let offered = 0;
  const pending: Promise<unknown>[] = [];
  const interval = 1000 / plan.ratePerSecond;
  await Promise.all(
    plan.publishers.map(async (publisher, p) => {
      const client = clients[p] as MqttClient;
      for (let n = 0; ; n++) {
        const due = startedAt + n * interval;
        if (due > startedAt + plan.seconds * 1000) break;
        const wait = due - Date.now();
        if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
        const dedupeId = `${publisher.idPrefix}-${n}`;
        offered++;
        pending.push(
          client.publishAsync(publisher.topic, reading(n, dedupeId), { qos: 1 }).then(
            () => {
              const second = Math.floor((Date.now() - startedAt) / 1000);
              acksPerSecond[second] = (acksPerSecond[second] ?? 0) + 1;
              acked.push(dedupeId);
            },
            () => undefined,
          ),
        );
      }
    }),
  );
  // What is still unacknowledged gets a while to be, through reconnections.
  await Promise.race([Promise.all(pending), new Promise((resolve) => setTimeout(resolve, 60_000))]);
  await Promise.all(clients.map((client) => client.endAsync(true)));
  writeFileSync(plan.ackedFile, acked.join("\n"));
  const result: SustainResult = {
    offered,
    acknowledged: acked.length,
    startedAt,
    acksPerSecond: Array.from(acksPerSecond, (count) => count ?? 0),
  };
  console.log(`RESULT ${JSON.stringify(result)}`);
}

async function holdIdle(): Promise<void> {
  if (plan.mode !== "idle") return;
  const clients: MqttClient[] = [];
  // In waves, so the broker is not handed thousands of CONNECTs in one tick.
  for (let i = 0; i < plan.connections; i += 200) {
    const wave = Math.min(200, plan.connections - i);
    clients.push(
      ...(await Promise.all(Array.from({ length: wave }, () => connect(plan.url, plan.username, plan.password)))),
    );
  }
  console.log(`READY ${clients.length}`);
  await new Promise(() => undefined);
}

const modes = { publish: publishAll, idle: holdIdle, steady: steadily, flood, sustain };
await modes[plan.mode]();
// A flood's writes still queued in a socket the broker does not read would keep the process alive.
process.exit(0);
