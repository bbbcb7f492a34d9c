import { readFile } from "node:fs/promises";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { CONFIG_VARIABLES } from "../src/config.ts";

const read = (file: string) => readFile(new URL(`../${file}`, import.meta.url), "utf8");

describe("docker-compose.yml", () => {
  it("runs the service, a separate worker, Redis and PostgreSQL wired by real variables", async () => {
    const compose = parse(await read("docker-compose.yml")) as {
      services: Record<string, { environment?: Record<string, string>; command?: string[] }>;
    };
    expect(Object.keys(compose.services).sort()).toEqual(["edge-ingest", "postgres", "redis", "worker"]);
    for (const name of ["edge-ingest", "worker"]) {
      const environment = compose.services[name]?.environment ?? {};
      for (const variable of Object.keys(environment)) expect(CONFIG_VARIABLES).toContain(variable);
      expect(environment.DATABASE_URL).toMatch(/^postgresql:\/\/.*@postgres:5432\//);
      expect(environment.REDIS_URL).toBe("redis://redis:6379");
    }
    expect(compose.services["edge-ingest"]?.environment?.ROLES).toBe("api,broker");
    expect(compose.services.worker?.environment?.ROLES).toBe("worker");
    expect(compose.services.redis?.command).toContain("--appendonly");
  });
});

describe("documentation", () => {
  it("documents every configuration variable in the README and .env.example", async () => {
    const readme = await read("README.md");
    const example = await read(".env.example");
    for (const variable of CONFIG_VARIABLES) {
      expect(readme, `README.md is missing ${variable}`).toContain(`\`${variable}\``);
      expect(example, `.env.example is missing ${variable}`).toMatch(new RegExp(`^#? ?${variable}=`, "m"));
    }
  });
});
