import { afterEach, describe, expect, it } from "vitest";
import type { Mode } from "../helpers/app.ts";
import { createTenant, eventually, metricValue, type TenantFixture } from "../helpers/http.ts";
import { connect, inbox, sleep } from "../helpers/mqtt.ts";
import { publishes, type RawMqttClient, rawConnect, waitFor } from "../helpers/raw-mqtt.ts";
import { type ServiceProcess, startServiceProcess } from "../helpers/service-process.ts";
import { distributedUnavailable } from "../helpers/services.ts";

const skipDistributed = Boolean(await distributedUnavailable());

// Rate limits out of the way: these tests are about what a client's backlog can do.
const UNLIMITED = {
  AGENT_MAX_READINGS_PER_SECOND: "10000000",
  AGENT_READINGS_BURST: "10000000",
  AGENT_MAX_BYTES_PER_SECOND: "1000000000",
  AGENT_BYTES_BURST: "1000000000",
  TENANT_MAX_READINGS_PER_SECOND: "10000000",
  TENANT_READINGS_BURST: "10000000",
};

for (const { mode, skip } of [
  { mode: "embedded" as Mode, skip: false },
  { mode: "distributed" as Mode, skip: skipDistributed },
]) {
  describe.skipIf(skip)(`one client cannot take the broker down (${mode})`, () => {
    let service: ServiceProcess | undefined;
    const clients: { end(): unknown }[] = [];
    afterEach(async () => {
      for (const client of clients.splice(0)) client.end();
      await service?.cleanup();
      service = undefined;
    });
    const raw = async (options: Parameters<typeof rawConnect>[1]) => {
      const client = await rawConnect((service as ServiceProcess).mqttPort, options);
      clients.push({ end: () => client.socket.destroy() });
      return client;
    };
    const agentOf = async (fixture: TenantFixture) => {
      const client = await connect(`mqtt://127.0.0.1:${service?.mqttPort}`, {
        username: fixture.agent.username,
        password: fixture.agent.password,
      });
      clients.push({ end: () => client.end(true) });
      return client;
    };

    it("survives an agent that floods bad publishes while not reading its own feedback, and sums them up for it", {
      timeout: 120_000,
    }, async () => {
      // A short drain timeout: the moment the broker used to give up on the client and crash.
      service = await startServiceProcess(mode, UNLIMITED);
      const a = await createTenant(service.httpUrl, service.adminToken, "flooder");
      const b = await createTenant(service.httpUrl, service.adminToken, "bystander");
      const feedback = `ingest/${a.tenantId}/flooder/errors`;
      const flooder = await raw({ username: a.agent.username, password: a.agent.password });
      flooder.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: feedback, qos: 1 }] });
      await waitFor(flooder.received, (p) => p.cmd === "suback");
      flooder.stopReading();
      const flood = 50_000;
      flooder.socket.write(publishes(`metrics/${a.tenantId}/flooder/x`, "not json", flood));

      const url = service.httpUrl;
      await eventually(
        async () => ((await metricValue(url, "edge_ingest_metrics_rejected_total")) >= flood ? true : undefined),
        60_000,
      );
      await sleep(3000);
      expect(service.alive(), service.stderr()).toBe(true);

      // Another tenant is served as before.
      const bystander = await agentOf(b);
      await bystander.publishAsync(`metrics/${b.tenantId}/bystander/ok`, "1", { qos: 1 });

      // The flooder's feedback is a few messages that account for every refusal.
      flooder.startReading();
      const reported = () =>
        flooder.received
          .filter((p) => p.cmd === "publish" && p.topic === feedback)
          .map((p) => JSON.parse((p as { payload: Buffer }).payload.toString()) as { count: number });
      await eventually(async () =>
        reported().reduce((sum, message) => sum + message.count, 0) === flood ? true : undefined,
      );
      expect(reported().length).toBeLessThan(100);
      expect(reported()[0]).toMatchObject({ reason: "bad_json", topic: `metrics/${a.tenantId}/flooder/x` });
    });

    it("cuts off a subscriber whose backlog passes its bound, while everyone else's messages keep flowing", {
      timeout: 120_000,
    }, async () => {
      service = await startServiceProcess(mode, UNLIMITED);
      const admin = { username: "admin", password: service.adminToken };
      const slow: RawMqttClient = await raw(admin);
      slow.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "load/#", qos: 1 }] });
      await waitFor(slow.received, (p) => p.cmd === "suback");
      slow.stopReading();

      const watcher = await connect(`mqtt://127.0.0.1:${service.mqttPort}`, admin);
      clients.push({ end: () => watcher.end(true) });
      const watched = inbox(watcher);
      await watcher.subscribeAsync("other/topic", { qos: 1 });

      const publisher = await raw(admin);
      publisher.socket.write(publishes("load/x", "x".repeat(200), 50_000));
      const url = service.httpUrl;
      await eventually(
        async () =>
          (await metricValue(url, "edge_ingest_mqtt_forced_disconnects_total", { reason: "slow_consumer" })) >= 1
            ? true
            : undefined,
        30_000,
      );
      // A message of another topic is routed at once, not behind the slow client's backlog.
      const other = await connect(`mqtt://127.0.0.1:${service.mqttPort}`, admin);
      clients.push({ end: () => other.end(true) });
      await other.publishAsync("other/topic", "still here", { qos: 1 });
      await watched.waitFor(1, "other/topic", 2000);
      await sleep(2000);
      expect(service.alive(), service.stderr()).toBe(true);
    });

    it("keeps memory bounded under a storm of clients that subscribe to thousands of retained messages and leave", {
      timeout: 120_000,
    }, async () => {
      service = await startServiceProcess(mode, {
        ...UNLIMITED,
        MQTT_ALLOW_ANONYMOUS: "true",
        MQTT_MAX_RETAINED_MESSAGES: "10000",
        MQTT_MAX_RETAINED_MESSAGES_PER_PRINCIPAL: "10000",
      });
      const retained = 5000;
      const seeder = await raw({});
      const payload = Buffer.alloc(1024, 0x61);
      seeder.send(
        ...Array.from({ length: retained }, (_, i) => ({
          cmd: "publish" as const,
          topic: `test/r/${i}`,
          payload,
          qos: 0 as const,
          retain: true,
          dup: false,
        })),
      );
      // Every retained message is there for a subscriber that reads.
      const reader = await raw({});
      reader.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "test/#", qos: 0 }] });
      await eventually(async () =>
        reader.received.filter((p) => p.cmd === "publish").length >= retained ? true : undefined,
      );
      reader.socket.destroy();
      const before = await service.rssMiB();

      // About 100 clients a second: connect, subscribe to everything, leave.
      const port = service.mqttPort;
      const stormUntil = Date.now() + 10_000;
      let stormed = 0;
      while (Date.now() < stormUntil) {
        await Promise.all(
          Array.from({ length: 10 }, async () => {
            const client = await rawConnect(port, {}).catch(() => undefined);
            if (!client) return;
            client.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "test/#", qos: 1 }] });
            await waitFor(client.received, (p) => p.cmd === "suback", 5000).catch(() => undefined);
            client.socket.destroy();
            stormed++;
          }),
        );
        await sleep(100);
      }
      await sleep(3000);
      const after = await service.rssMiB();
      expect(service.alive(), service.stderr()).toBe(true);
      expect(stormed).toBeGreaterThan(500);
      // The bound this test states: the storm leaves at most 150 MiB more resident than before it.
      expect(after - before).toBeLessThan(150);
      // And the broker still answers a new connection at once.
      const fresh = await connect(`mqtt://127.0.0.1:${port}`, { connectTimeout: 2000 });
      await fresh.endAsync();
    });
  });
}
