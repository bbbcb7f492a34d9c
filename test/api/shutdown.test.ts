import { once } from "node:events";
import net from "node:net";
import { describe, expect, it } from "vitest";
import { startTestApp } from "../helpers/app.ts";
import { closeWithin } from "../helpers/nodes.ts";

describe("the HTTP server at shutdown", () => {
  it("cuts a request a client never finishes after its grace, instead of waiting for it", {
    timeout: 60_000,
  }, async () => {
    const t = await startTestApp("embedded");
    const socket = net.connect(Number(new URL(t.url).port), "127.0.0.1");
    socket.on("error", () => undefined);
    socket.resume();
    await once(socket, "connect");
    // Announces a body it never sends: a request in flight for as long as the client likes.
    socket.write(
      "POST /api/v1/metrics HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
    );
    await new Promise((resolve) => setTimeout(resolve, 200));
    const cut = once(socket, "close");
    const started = Date.now();
    try {
      await closeWithin(t.app, 15_000);
      expect(Date.now() - started).toBeLessThan(10_000);
      await cut;
    } finally {
      socket.destroy();
      await t.cleanup();
    }
  });
});
