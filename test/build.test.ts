import { type ChildProcess, execFile, spawn } from "node:child_process";
import { once } from "node:events";
import { readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import { bearer, request } from "./helpers/http.ts";
import { OWN_PORTS, tempDir, uniqueId } from "./helpers/services.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

// What `npm start`, the image and the benchmark run: the compiled service, built here into a
// directory of the test's own (never the developer's dist/).
describe("the build", () => {
  const out = path.join(ROOT, `.build-test-${uniqueId()}`);
  let child: ChildProcess | undefined;
  let data: Awaited<ReturnType<typeof tempDir>> | undefined;
  afterAll(async () => {
    if (child?.exitCode === null) child.kill("SIGKILL");
    await data?.remove();
    await rm(out, { recursive: true, force: true });
  });

  it("compiles to JavaScript that serves the API, the console and MQTT without tsx", { timeout: 120_000 }, async () => {
    await promisify(execFile)(process.execPath, [path.join(ROOT, "scripts/build.mjs"), path.basename(out)]);
    data = await tempDir();
    const dataDir = data.dir;
    // The service's log, shown when it does not exit cleanly (what its shutdown was waiting for).
    let buffered = "";
    const start = () => {
      buffered = "";
      const service = spawn(process.execPath, [path.join(out, "main.js"), "serve"], {
        env: { ...process.env, DATA_DIR: dataDir, ...OWN_PORTS, LOG_LEVEL: "info", LOG_FORMAT: "json" },
        stdio: ["ignore", "pipe", "inherit"],
      });
      child = service;
      return new Promise<{ http: string; mqtt: { tcp: number } }>((resolve, reject) => {
        service.stdout.setEncoding("utf8").on("data", (chunk: string) => {
          buffered += chunk;
          const line = buffered.split("\n").find((l) => l.includes('"edge-ingest started'));
          if (line) resolve(JSON.parse(line));
        });
        service.once("exit", (code) => reject(new Error(`the build exited with ${code}: ${buffered}`)));
      });
    };
    const createdApart = () => buffered.split("\n").find((l) => l.includes("created the embedded database"));
    const stop = async () => {
      if (!child) throw new Error("no service to stop");
      const exited = once(child, "exit");
      child.kill("SIGTERM");
      expect(await exited, buffered.split("\n").slice(-5).join("\n")).toEqual([0, null]);
    };

    const started = await start();
    expect(started.mqtt.tcp).toBeGreaterThan(0);
    // The first start creates the database in a process of its own, every migration applied there.
    const migrations = (await readdir(path.join(ROOT, "prisma/migrations"))).filter((name) => /^\d+_/.test(name));
    expect(JSON.parse(createdApart() ?? "{}").applied).toEqual(migrations.sort());
    const index = await fetch(`${started.http}/`);
    expect(index.status).toBe(200);
    expect(await index.text()).toContain("edge-ingest console");
    const script = await fetch(`${started.http}/console.js`);
    expect(script.status).toBe(200);
    await script.text();
    const adminToken = (await readFile(path.join(data.dir, "admin-token"), "utf8")).trim();
    const tenant = await request(`${started.http}/api/v1/admin/tenants`, {
      auth: bearer(adminToken),
      body: { name: "built" },
    });
    expect(tenant.status).toBe(201);
    expect((await request(`${started.http}/api/openapi.json`)).body.paths["/api/v1/agents"]).toBeDefined();

    await stop();

    // A restart opens the database it finds.
    const restarted = await start();
    const again = await fetch(`${restarted.http}/`);
    expect(again.status).toBe(200);
    await again.text();
    expect(createdApart()).toBeUndefined();
    await stop();
  });

  it("never leaves the output without its files while it rebuilds, and skips a build of the same sources", {
    timeout: 120_000,
  }, async () => {
    const build = (dir: string) =>
      promisify(execFile)(process.execPath, [path.join(ROOT, "scripts/build.mjs"), dir], { encoding: "utf8" });
    const dir = `.build-test-${uniqueId()}`;
    const main = path.join(ROOT, dir, "main.js");
    try {
      await build(dir);
      // Sources that changed since (a stamp of other sources): a rebuild, during which a service
      // running from the directory may load a module at any moment.
      await writeFile(path.join(ROOT, dir, ".build-stamp"), "other sources");
      let missing = 0;
      let looks = 0;
      const rebuilt = build(dir);
      let done = false;
      void rebuilt.finally(() => {
        done = true;
      });
      while (!done) {
        looks++;
        if (!(await stat(main).catch(() => undefined))) missing++;
        await new Promise((resolve) => setTimeout(resolve, 2));
      }
      await rebuilt;
      expect(looks).toBeGreaterThan(50);
      expect(missing).toBe(0);

      const before = await stat(main);
      const again = await build(dir);
      expect(again.stdout).toContain("is current");
      expect((await stat(main)).ino).toBe(before.ino);
      const leftovers = (await readdir(ROOT)).filter((name) => name.startsWith(`${dir}.`));
      expect(leftovers).toEqual([]);
    } finally {
      await rm(path.join(ROOT, dir), { recursive: true, force: true });
    }
  });
});
