import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import net from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { listen } from "../../src/broker/listen.ts";

describe("binding an MQTT listener", () => {
  const servers: net.Server[] = [];
  const server = () => {
    const created = net.createServer((socket) => socket.end("hello"));
    servers.push(created);
    return created;
  };
  afterEach(async () => {
    await Promise.all(servers.splice(0).map((s) => new Promise((resolve) => s.close(resolve))));
  });

  it("names the variable to change when the port is taken", async () => {
    const port = await listen(server(), "MQTT_PORT", { host: "127.0.0.1", port: 0 }, () => undefined);
    await expect(listen(server(), "MQTT_PORT", { host: "127.0.0.1", port }, () => undefined)).rejects.toThrow(
      `MQTT_PORT port ${port} is already in use (another MQTT broker?); set MQTT_PORT to a free port`,
    );
  });

  it("hands every later server error to its handler and goes on accepting", async () => {
    const errors: [string, string][] = [];
    const listening = server();
    const port = await listen(listening, "MQTT_WS_PORT", { host: "127.0.0.1", port: 0 }, (error, name) =>
      errors.push([name, error.message]),
    );
    // What a failed accept emits (libuv absorbs running out of file descriptors, so the test cannot
    // cause one): before, the first went to the spent start-up handler and the second ended the process.
    listening.emit("error", new Error("accept ENFILE"));
    listening.emit("error", new Error("accept ENOMEM"));
    expect(errors).toEqual([
      ["MQTT_WS_PORT", "accept ENFILE"],
      ["MQTT_WS_PORT", "accept ENOMEM"],
    ]);
    const greeting = await new Promise<string>((resolve, reject) => {
      const client = net.connect(port, "127.0.0.1");
      client.on("data", (data) => resolve(data.toString()));
      client.on("error", reject);
    });
    expect(greeting).toBe("hello");
  });

  it("asks the kernel for the backlog it is given (what `ss` shows as a listener's Send-Q)", async () => {
    const port = await listen(server(), "MQTT_PORT", { host: "127.0.0.1", port: 0, backlog: 1234 }, () => undefined);
    const [line] = execFileSync("ss", ["-Hltn", `sport = :${port}`], { encoding: "utf8" })
      .trim()
      .split("\n");
    const sendQ = Number(line?.trim().split(/\s+/)[2]);
    const somaxconn = Number(readFileSync("/proc/sys/net/core/somaxconn", "utf8"));
    expect(sendQ).toBe(Math.min(1234, somaxconn));
  });
});
