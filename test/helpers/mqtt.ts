import { execFile } from "node:child_process";
import { promisify } from "node:util";
import mqtt, { type IClientOptions, type IClientPublishOptions, type MqttClient } from "mqtt";

/** A real mqtt.js client that does not reconnect unless asked to, so tests see every refusal. */
export function connect(url: string, options: IClientOptions = {}): Promise<MqttClient> {
  return mqtt.connectAsync(url, { reconnectPeriod: 0, connectTimeout: 5000, ...options });
}

/** Resolves with the CONNACK refusal code, or "connected". */
/** An agent's client that reconnects after 100 ms, resending what was not acknowledged. */
export function connectAgent(url: string, agent: { username: string; password: string }): Promise<MqttClient> {
  return connect(url, { username: agent.username, password: agent.password, reconnectPeriod: 100 });
}

export async function connackOf(url: string, options: IClientOptions): Promise<number | "connected"> {
  try {
    const client = await connect(url, options);
    await client.endAsync();
    return "connected";
  } catch (error) {
    return (error as { code?: number }).code ?? -1;
  }
}

export interface Inbox {
  messages: { topic: string; payload: string; retain: boolean }[];
  /** Waits until `count` messages (optionally on `topic`) arrived; returns them. */
  waitFor(count: number, topic?: string, timeoutMs?: number): Promise<{ topic: string; payload: string }[]>;
}

export function inbox(client: MqttClient): Inbox {
  const messages: Inbox["messages"] = [];
  const wakers = new Set<() => void>();
  client.on("message", (topic, payload, packet) => {
    messages.push({ topic, payload: payload.toString(), retain: packet.retain });
    for (const wake of wakers) wake();
  });
  return {
    messages,
    waitFor: (count, topic, timeoutMs = 10_000) =>
      new Promise((resolve, reject) => {
        const matching = () => messages.filter((m) => topic === undefined || m.topic === topic);
        const check = () => {
          if (matching().length < count) return;
          wakers.delete(check);
          clearTimeout(timer);
          resolve(matching());
        };
        const timer = setTimeout(() => {
          wakers.delete(check);
          reject(
            new Error(
              `only ${matching().length} of ${count} messages${topic ? ` on ${topic}` : ""} in ${timeoutMs} ms`,
            ),
          );
        }, timeoutMs);
        wakers.add(check);
        check();
      }),
  };
}

/** SUBACK granted QoS per filter (128 = refused); mqtt.js rejects a SUBACK with a refusal but keeps its packet. */
export async function subscribeGrants(client: MqttClient, filters: string[]): Promise<number[]> {
  return client.subscribeAsync(filters, { qos: 1 }).then(
    (granted) => granted.map((g) => g.qos),
    (error: { packet?: { granted?: number[] } }) => {
      if (!error.packet?.granted) throw error;
      return error.packet.granted;
    },
  );
}

/**
 * The reason code of a publish's acknowledgement: 0 when it was accepted (and always for MQTT
 * 3.1.1, which has none), else the MQTT 5 code mqtt.js rejects it with.
 */
export async function pubackCode(
  client: MqttClient,
  topic: string,
  payload: string | Buffer,
  options: IClientPublishOptions,
): Promise<number> {
  return client.publishAsync(topic, payload, options).then(
    () => 0,
    (error: { code?: number }) => {
      if (typeof error.code !== "number") throw error;
      return error.code;
    },
  );
}

/** The reason code of the DISCONNECT the broker sends before it closes the connection (MQTT 5); undefined without one. */
export function disconnectCode(client: MqttClient, timeoutMs = 10_000): Promise<number | undefined> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(undefined), timeoutMs);
    client.once("disconnect", (packet) => {
      clearTimeout(timer);
      resolve(packet.reasonCode ?? 0);
    });
    client.once("close", () => setTimeout(() => resolve(undefined), 50));
  });
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolves when the client's connection closes. */
export function closed(client: MqttClient, timeoutMs = 10_000): Promise<void> {
  return new Promise((resolve, reject) => {
    if (!client.connected) return resolve();
    const timer = setTimeout(() => reject(new Error(`still connected after ${timeoutMs} ms`)), timeoutMs);
    client.once("close", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** Whether Mosquitto's command-line clients are here (under CI=true they must be). */
export async function hasMosquittoClients(): Promise<boolean> {
  const present = await promisify(execFile)("mosquitto_pub", ["--help"]).then(
    () => true,
    (error: { code?: number | string }) => error.code !== "ENOENT",
  );
  if (!present && process.env.CI === "true") {
    throw new Error("CI=true but mosquitto_pub is not installed (apt-get install mosquitto-clients)");
  }
  return present;
}
