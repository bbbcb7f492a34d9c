import mqtt, { type IClientOptions, type MqttClient } from "mqtt";

/** A real mqtt.js client that does not reconnect unless asked to, so tests see every refusal. */
export function connect(url: string, options: IClientOptions = {}): Promise<MqttClient> {
  return mqtt.connectAsync(url, { reconnectPeriod: 0, connectTimeout: 5000, ...options });
}

/** Resolves with the CONNACK refusal code, or "connected". */
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
