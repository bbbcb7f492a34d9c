/**
 * The devices of the reconnect-storm scenario, in a process of their own: each connects, publishes
 * one QoS 1 reading every `intervalMs`, and when its connection drops reconnects after a random
 * pause of up to `jitterMs` (again after every failed attempt), as device firmware does. An attempt
 * without a CONNACK within `connackTimeoutMs` is abandoned and counted. mqtt.js keeps what was not
 * acknowledged and sends it again once connected.
 *
 * Prints `CONNECTED {"seconds"}` once every device is first connected; after every device has lost
 * its connection and got it back, publishes for `settleMs` more, waits for what is unacknowledged,
 * writes the acknowledged dedupe ids to `ackedFile` and the result to `{ackedFile}.result.json`, and
 * prints `RESULT`.
 */
import { readFileSync, writeFileSync } from "node:fs";
import mqtt, { type MqttClient } from "mqtt";
import type { Publisher } from "./load-generator.ts";

export interface StormPlan {
  url: string;
  publishers: Publisher[];
  intervalMs: number;
  jitterMs: number;
  connackTimeoutMs: number;
  settleMs: number;
  ackedFile: string;
}

export interface DeviceReconnect {
  /** When the device lost its connection and got it back (epoch ms). */
  lostAt: number;
  backAt: number;
  /** Attempts it made meanwhile, those with no CONNACK in time, and those refused (by code). */
  attempts: number;
  timeouts: number;
  refusals: Record<string, number>;
}

export interface StormResult {
  firstConnectSeconds: number;
  reconnects: DeviceReconnect[];
  offered: number;
  acknowledged: number;
}

/** The plan is a file: thousands of publishers' credentials are too long for a command line. */
const plan = JSON.parse(readFileSync(process.argv[2] as string, "utf8")) as StormPlan;
const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const jitter = () => Math.random() * plan.jitterMs;

interface Device {
  client: MqttClient;
  publisher: Publisher;
  connected: boolean;
  /** Set while the device is away after its first connection. */
  outage?: DeviceReconnect;
  reconnect?: DeviceReconnect;
}

/** One attempt: resolves true on a CONNACK that accepts, false on a refusal or a timeout. */
function attempt(device: Device): Promise<boolean> {
  const { client } = device;
  return new Promise((resolve) => {
    const settle = (ok: boolean) => {
      client.off("connect", onConnect);
      client.off("error", onError);
      client.off("close", onClose);
      resolve(ok);
    };
    const onConnect = () => settle(true);
    const onError = (error: Error & { code?: number }) => {
      if (device.outage && typeof error.code === "number") {
        device.outage.refusals[error.code] = (device.outage.refusals[error.code] ?? 0) + 1;
      }
    };
    const onClose = () => settle(false);
    client.once("connect", onConnect);
    client.on("error", onError);
    client.once("close", onClose);
    if (device.outage) device.outage.attempts++;
    // connect() again on the same client keeps its store: what was not acknowledged is sent again.
    client.connect();
  });
}

async function bringBack(device: Device): Promise<void> {
  for (;;) {
    await pause(jitter());
    const started = Date.now();
    if (await attempt(device)) break;
    // A close after the whole timeout: no CONNACK in time (refusals close sooner).
    if (device.outage && Date.now() - started >= plan.connackTimeoutMs - 50) device.outage.timeouts++;
  }
  device.connected = true;
  if (device.outage) {
    device.reconnect = { ...device.outage, backAt: Date.now() };
    device.outage = undefined;
  }
}

const devices: Device[] = plan.publishers.map((publisher) => {
  const client = mqtt.connect(plan.url, {
    username: publisher.username,
    password: publisher.password,
    clientId: `storm-${publisher.idPrefix}`,
    reconnectPeriod: 0,
    manualConnect: true,
    connectTimeout: plan.connackTimeoutMs,
    keepalive: 30,
  });
  client.on("error", () => undefined);
  return { client, publisher, connected: false };
});

const started = Date.now();
await Promise.all(devices.map((device) => bringBack(device)));
const firstConnectSeconds = (Date.now() - started) / 1000;
console.log(`CONNECTED ${JSON.stringify({ seconds: firstConnectSeconds })}`);

for (const device of devices) {
  device.client.on("close", () => {
    if (!device.connected) return;
    device.connected = false;
    device.outage = { lostAt: Date.now(), backAt: 0, attempts: 0, timeouts: 0, refusals: {} };
    void bringBack(device);
  });
}

let offered = 0;
const acked: string[] = [];
const pending: Promise<unknown>[] = [];
let publishing = true;
const publishers = devices.map(async (device, d) => {
  // Spread over the interval, as a fleet's clocks are.
  await pause((d / devices.length) * plan.intervalMs);
  for (let n = 0; publishing; n++) {
    const dedupeId = `${device.publisher.idPrefix}-${n}`;
    offered++;
    pending.push(
      device.client
        .publishAsync(device.publisher.topic, JSON.stringify({ value: n, dedupe_id: dedupeId }), { qos: 1 })
        .then(
          () => acked.push(dedupeId),
          () => undefined,
        ),
    );
    await pause(plan.intervalMs);
  }
});

// Every device lost its connection once and has it back (or three minutes passed).
const deadline = Date.now() + 180_000;
while (devices.some((device) => !device.reconnect) && Date.now() < deadline) await pause(100);
await pause(plan.settleMs);
publishing = false;
await Promise.all(publishers);
await Promise.race([Promise.all(pending), pause(60_000)]);
await Promise.all(devices.map((device) => device.client.endAsync(true)));
writeFileSync(plan.ackedFile, acked.join("\n"));
const result: StormResult = {
  firstConnectSeconds,
  reconnects: devices.flatMap((device) => (device.reconnect ? [device.reconnect] : [])),
  offered,
  acknowledged: acked.length,
};
// The result holds a line per device: a file, not a line of stdout.
writeFileSync(`${plan.ackedFile}.result.json`, JSON.stringify(result));
console.log("RESULT");
process.exit(0);
