/**
 * The seed architecture's bridge: subscribed to `metrics/#` on Mosquitto, it enqueues one
 * `metric-submission` job per message, as the bridge edge-ingest replaces did. Prints `READY`.
 */
import { randomUUID } from "node:crypto";
import { Queue } from "bullmq";
import { Redis } from "ioredis";
import mqtt from "mqtt";
import { INGEST_QUEUE_NAME } from "../../src/ingest/bullmq-queue.ts";
import { SUBMISSION_JOB_NAME } from "../../src/ingest/submission.ts";

const env = (name: string) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is required`);
  return value;
};
const [MQTT_URL, REDIS_URL, REDIS_PREFIX] = ["MQTT_URL", "REDIS_URL", "REDIS_PREFIX"].map(env) as [
  string,
  string,
  string,
];
const queue = new Queue(INGEST_QUEUE_NAME, { connection: new Redis(REDIS_URL), prefix: REDIS_PREFIX });
const client = await mqtt.connectAsync(MQTT_URL, { clientId: "bridge", clean: false, reconnectPeriod: 1000 });
client.on("message", (topic, payload) => {
  const [, tenantId, agentId, name] = topic.split("/");
  const reading = JSON.parse(payload.toString()) as { value: number; timestamp: number; dedupe_id: string };
  const receivedAt = Date.now();
  queue
    .add(
      SUBMISSION_JOB_NAME,
      {
        id: randomUUID(),
        tenantId,
        agentId,
        source: "mqtt",
        receivedAt,
        metrics: [{ name, value: reading.value, ts: reading.timestamp, dedupeId: reading.dedupe_id }],
      },
      { attempts: 8, backoff: { type: "exponential", delay: 500 }, removeOnComplete: true, removeOnFail: false },
    )
    .catch((error: Error) => console.error(`enqueue failed: ${error.message}`));
});
await client.subscribeAsync("metrics/#", { qos: 1 });
console.log("READY");
process.once("SIGTERM", async () => {
  await client.endAsync();
  await queue.close();
  process.exit(0);
});
