import { describe, expect, it } from "vitest";
import { FILES_BESIDES_CONNECTIONS, openFilesLimit } from "../../src/broker/open-files.ts";
import { startServiceProcess } from "../helpers/service-process.ts";

const LIMITS = `Limit                     Soft Limit           Hard Limit           Units
Max cpu time              unlimited            unlimited            seconds
Max open files            1024                 524288               files
Max locked memory         8388608              8388608              bytes
`;

describe("open files", () => {
  it("reads the soft limit on open files from /proc/<pid>/limits", () => {
    expect(openFilesLimit(LIMITS)).toBe(1024);
    expect(openFilesLimit(LIMITS.replace(/1024 {17}/, "unlimited            "))).toBeUndefined();
    expect(openFilesLimit("")).toBeUndefined();
  });

  // Two first starts of the embedded service at once: each creates its database, slow on a loaded machine.
  it("warns at start-up when the process may open fewer files than MQTT_MAX_CONNECTIONS needs", {
    timeout: 120_000,
  }, async () => {
    const limit = 1024;
    const tooMany = await startServiceProcess("embedded", { MQTT_MAX_CONNECTIONS: "10000" }, { openFilesLimit: limit });
    const fitting = await startServiceProcess(
      "embedded",
      { MQTT_MAX_CONNECTIONS: String(limit - FILES_BESIDES_CONNECTIONS) },
      { openFilesLimit: limit },
    );
    try {
      const warning = tooMany
        .stdout()
        .split("\n")
        .find((line) => line.includes('"openFilesLimit"'));
      expect(warning && JSON.parse(warning)).toMatchObject({
        level: 40,
        openFilesLimit: limit,
        MQTT_MAX_CONNECTIONS: 10000,
      });
      expect(fitting.stdout()).not.toContain('"openFilesLimit"');
    } finally {
      await Promise.all([tooMany.cleanup(), fitting.cleanup()]);
    }
  });
});
