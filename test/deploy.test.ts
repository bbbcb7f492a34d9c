import { execFile } from "node:child_process";
import { access, readdir, readFile } from "node:fs/promises";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { parseAllDocuments, parse as parseYaml } from "yaml";
import { FILES_BESIDES_CONNECTIONS } from "../src/broker/open-files.ts";
import { CONFIG_VARIABLES, type Config, loadConfig } from "../src/config.ts";

// The manifests are checked against the config schema (src/config.ts): every variable they set is
// one the service reads and holds a value it accepts, ports and grace periods agree with it.

const run = promisify(execFile);
const read = (file: string) => readFile(new URL(`../${file}`, import.meta.url), "utf8");
const ADMIN_TOKEN = "a".repeat(40);

/** The config a process gets from an environment, which must be valid. */
function configOf(env: Record<string, string>, where: string): Config {
  for (const name of Object.keys(env)) expect(CONFIG_VARIABLES, `${where} sets ${name}`).toContain(name);
  return loadConfig(env);
}

const installed = (binary: string) =>
  access(binary).then(
    () => true,
    () => false,
  );

describe("docker-compose.yml", () => {
  interface Service {
    environment?: Record<string, string>;
    command?: string[];
    ports?: string[];
    stop_grace_period?: string;
    depends_on?: unknown;
    ulimits?: { nofile?: { soft: number; hard: number } };
  }
  const compose = async () =>
    parseYaml(await read("docker-compose.yml"), { merge: true }) as { services: Record<string, Service> };
  /** `${ADMIN_TOKEN:?...}` as compose fills it in. */
  const environment = (service: Service) =>
    Object.fromEntries(
      Object.entries(service.environment ?? {}).map(([name, value]) => [
        name,
        String(value).replace(/^\$\{ADMIN_TOKEN:\?[^}]*\}$/, ADMIN_TOKEN),
      ]),
    );

  it("scales out: two brokers behind HAProxy, the API, two workers, Redis with AOF and PostgreSQL", async () => {
    const { services } = await compose();
    expect(Object.keys(services).sort()).toEqual(
      ["api", "broker-1", "broker-2", "haproxy", "postgres", "redis", "worker-1", "worker-2"].sort(),
    );
    const roles = Object.fromEntries(
      ["api", "broker-1", "broker-2", "worker-1", "worker-2"].map((name) => {
        const config = configOf(environment(services[name] as Service), name);
        expect(config.mode, name).toBe("distributed");
        expect(config.DATABASE_URL, name).toMatch(/@postgres:5432\//);
        expect(config.REDIS_URL, name).toBe("redis://redis:6379");
        // Compose waits longer than the service's own shutdown deadline before it kills.
        expect(Number.parseInt(services[name]?.stop_grace_period ?? "10s", 10) * 1000, name).toBeGreaterThan(
          config.SHUTDOWN_TIMEOUT_MS,
        );
        return [name, [...config.ROLES].join(",")];
      }),
    );
    expect(roles).toEqual({
      api: "api",
      "broker-1": "broker",
      "broker-2": "broker",
      "worker-1": "worker",
      "worker-2": "worker",
    });
    const redis = services.redis?.command ?? [];
    expect(redis.slice(redis.indexOf("--appendonly"), redis.indexOf("--appendonly") + 2)).toEqual([
      "--appendonly",
      "yes",
    ]);
    expect(redis).toContain("noeviction");
    expect(services.api?.ports).toEqual([`${configOf(environment(services.api as Service), "api").HTTP_PORT}:3000`]);
  });

  it("lets every broker open a file for each of its MQTT_MAX_CONNECTIONS and the rest", async () => {
    const { services } = await compose();
    for (const name of ["broker-1", "broker-2"]) {
      const config = configOf(environment(services[name] as Service), name);
      expect(services[name]?.ulimits?.nofile?.soft, name).toBeGreaterThanOrEqual(
        config.MQTT_MAX_CONNECTIONS + FILES_BESIDES_CONNECTIONS,
      );
    }
  });

  it("has HAProxy send MQTT and WebSockets to both brokers' ports, taking out a broker that is not ready", async () => {
    const { services } = await compose();
    const haproxy = await read("deploy/haproxy/haproxy.cfg");
    for (const name of ["broker-1", "broker-2"]) {
      const config = configOf(environment(services[name] as Service), name);
      expect(haproxy).toContain(`server ${name} ${name}:${config.MQTT_PORT} check port ${config.HTTP_PORT}`);
      expect(haproxy).toContain(`server ${name} ${name}:${config.MQTT_WS_PORT} check port ${config.HTTP_PORT}`);
    }
    expect(haproxy).toMatch(/option httpchk GET \/readyz/);
    expect(services.haproxy?.ports).toEqual(["1883:1883", "9001:9001"]);
  });

  it("with deploy/docker-compose.sentinel.yml, points every process at three sentinels over replicated, durable Redis", async () => {
    const { services } = await compose();
    const override = parseYaml(await read("deploy/docker-compose.sentinel.yml"), { merge: true }) as {
      services: Record<string, Service & { entrypoint?: string[] }>;
    };
    const sentinels = Object.keys(override.services).filter((name) => name.startsWith("sentinel-"));
    expect(sentinels).toHaveLength(3);
    for (const name of ["api", "broker-1", "broker-2", "worker-1", "worker-2"]) {
      const env = { ...environment(services[name] as Service), ...environment(override.services[name] as Service) };
      const config = configOf(env, name);
      expect(config.REDIS_SENTINELS, name).toEqual(sentinels.map((host) => ({ host, port: 26379 })));
      expect(config.REDIS_MIN_REPLICAS, name).toBe(1);
      for (const sentinel of sentinels) {
        const script = override.services[sentinel]?.entrypoint?.join(" ") ?? "";
        expect(script).toContain(`sentinel monitor ${config.REDIS_SENTINEL_NAME} redis 6379 2`);
      }
    }
    const replicas = ["redis-replica-1", "redis-replica-2"];
    for (const name of ["redis", ...replicas]) {
      const command = override.services[name]?.command?.join(" ") ?? "";
      expect(command, name).toContain("--appendonly yes");
      expect(command, name).toContain("--maxmemory-policy noeviction");
      if (replicas.includes(name)) expect(command, name).toContain("--replicaof redis 6379");
    }
  });

  it("is a configuration HAProxy accepts", async () => {
    if (!(await installed("/usr/sbin/haproxy"))) {
      expect(process.env.CI, ".ci/run installs haproxy").toBeFalsy();
      return;
    }
    const { stdout, stderr } = await run("/usr/sbin/haproxy", ["-c", "-f", "deploy/haproxy/haproxy.cfg"]);
    expect(`${stdout}${stderr}`).toContain("Configuration file is valid");
  });
});

describe("deploy/Dockerfile", () => {
  it("copies files that exist, builds, and runs the compiled service on the default ports", async () => {
    const dockerfile = await read("deploy/Dockerfile");
    for (const [, sources] of dockerfile.matchAll(/^COPY (.+) \S+$/gm)) {
      for (const source of (sources as string).split(" ")) await access(new URL(`../${source}`, import.meta.url));
    }
    expect(dockerfile).toMatch(/^RUN npm run build/m);
    expect(dockerfile).toMatch(/^CMD \["node", "dist\/main\.js", "serve"\]$/m);
    const defaults = loadConfig({});
    const exposed = /^EXPOSE (.+)$/m.exec(dockerfile)?.[1]?.split(" ").map(Number);
    expect(exposed).toEqual([defaults.HTTP_PORT, defaults.MQTT_PORT, defaults.MQTT_WS_PORT]);
  });
});

describe("deploy/kubernetes", () => {
  type Manifest = {
    kind: string;
    metadata: { name: string };
    spec?: any;
    data?: Record<string, string>;
    stringData?: Record<string, string>;
  };
  async function manifests(): Promise<Manifest[]> {
    const kustomization = parseYaml(await read("deploy/kubernetes/kustomization.yaml")) as { resources: string[] };
    const files = (await readdir(new URL("../deploy/kubernetes/", import.meta.url))).filter(
      (file) => file.endsWith(".yaml") && file !== "kustomization.yaml",
    );
    expect(kustomization.resources.sort()).toEqual(files.sort());
    const documents = await Promise.all(
      files.map(async (file) => parseAllDocuments(await read(`deploy/kubernetes/${file}`))),
    );
    return documents.flat().map((document) => document.toJS() as Manifest);
  }
  const named = (all: Manifest[], kind: string, name: string) => {
    const found = all.find((m) => m.kind === kind && m.metadata.name === name);
    expect(found, `${kind} ${name}`).toBeDefined();
    return found as Manifest;
  };

  it("runs one Deployment per role whose environment is a valid config, probed on its HTTP port", async () => {
    const all = await manifests();
    const configMap = named(all, "ConfigMap", "edge-ingest").data ?? {};
    const secret = named(all, "Secret", "edge-ingest").stringData ?? {};
    expect(Object.keys(secret).sort()).toEqual(["ADMIN_TOKEN", "DATABASE_URL", "REDIS_URL"]);
    for (const role of ["broker", "api", "worker"]) {
      const pod = named(all, "Deployment", `edge-ingest-${role}`).spec.template.spec;
      const [container] = pod.containers;
      const env = Object.fromEntries(container.env.map((e: { name: string; value: string }) => [e.name, e.value]));
      const config = configOf({ ...configMap, ...secret, ADMIN_TOKEN, ...env }, role);
      expect([...config.ROLES]).toEqual([role]);
      const ports = Object.fromEntries(
        container.ports.map((p: { name: string; containerPort: number }) => [p.name, p.containerPort]),
      );
      expect(ports.http).toBe(config.HTTP_PORT);
      if (role === "broker") expect([ports.mqtt, ports["mqtt-ws"]]).toEqual([config.MQTT_PORT, config.MQTT_WS_PORT]);
      expect(container.readinessProbe.httpGet).toEqual({ path: "/readyz", port: "http" });
      expect(container.livenessProbe.httpGet).toEqual({ path: "/healthz", port: "http" });
      expect(pod.terminationGracePeriodSeconds * 1000, role).toBeGreaterThan(config.SHUTDOWN_TIMEOUT_MS);
      for (const from of container.envFrom) {
        const reference = from.configMapRef ?? from.secretRef;
        expect(reference.name).toBe("edge-ingest");
      }
    }
  });

  it("exposes MQTT through a TCP load balancer and HTTP inside, guards the brokers and scales the workers", async () => {
    const all = await manifests();
    const mqtt = named(all, "Service", "edge-ingest-mqtt").spec;
    expect(mqtt.type).toBe("LoadBalancer");
    expect(mqtt.selector).toEqual({ app: "edge-ingest", role: "broker" });
    expect(mqtt.ports.map((p: { targetPort: string; protocol: string }) => [p.targetPort, p.protocol])).toEqual([
      ["mqtt", "TCP"],
      ["mqtt-ws", "TCP"],
    ]);
    expect(named(all, "Service", "edge-ingest-http").spec.selector).toEqual({ app: "edge-ingest", role: "api" });
    const budget = named(all, "PodDisruptionBudget", "edge-ingest-broker").spec;
    expect(budget.selector.matchLabels).toEqual({ app: "edge-ingest", role: "broker" });
    expect(budget.maxUnavailable).toBe(1);
    const autoscaler = named(all, "HorizontalPodAutoscaler", "edge-ingest-worker").spec;
    expect(autoscaler.scaleTargetRef).toMatchObject({ kind: "Deployment", name: "edge-ingest-worker" });
    expect(autoscaler.minReplicas).toBeGreaterThanOrEqual(1);
  });
});

describe("deploy/kubernetes/redis-sentinel", () => {
  const manifestsOf = async (file: string) =>
    parseAllDocuments(await read(`deploy/kubernetes/redis-sentinel/${file}`)).map((d) => d.toJS());

  it("adds three durable Redis nodes and three sentinels, and points the service's settings at them", async () => {
    const kustomization = parseYaml(await read("deploy/kubernetes/redis-sentinel/kustomization.yaml"));
    expect(kustomization.resources).toEqual(["..", "redis.yaml", "sentinel.yaml"]);
    const [settings] = await manifestsOf("settings.yaml");
    const base = parseYaml(await read("deploy/kubernetes/configmap.yaml")).data;
    const secret = parseYaml(await read("deploy/kubernetes/secret.yaml")).stringData;
    const config = configOf({ ...base, ...secret, ...settings.data }, "redis-sentinel");
    const sentinelSet = (await manifestsOf("sentinel.yaml")).find((m) => m.kind === "StatefulSet");
    const redisSet = (await manifestsOf("redis.yaml")).find((m) => m.kind === "StatefulSet");
    expect(config.REDIS_SENTINELS).toEqual(
      Array.from({ length: sentinelSet.spec.replicas }, (_, i) => ({
        host: `sentinel-${i}.${sentinelSet.spec.serviceName}`,
        port: sentinelSet.spec.template.spec.containers[0].ports[0].containerPort,
      })),
    );
    expect(config.REDIS_MIN_REPLICAS).toBeLessThan(redisSet.spec.replicas);
    const sentinelScript = sentinelSet.spec.template.spec.containers[0].command.join(" ");
    const quorum = Math.floor(sentinelSet.spec.replicas / 2) + 1;
    expect(sentinelScript).toContain(
      `sentinel monitor ${config.REDIS_SENTINEL_NAME} \${primary:-redis-0.redis} 6379 ${quorum}`,
    );
    const redisScript = redisSet.spec.template.spec.containers[0].command.join(" ");
    expect(redisScript).toContain("--appendonly yes");
    expect(redisScript).toContain("--maxmemory-policy noeviction");
    expect(redisScript).toContain(`get-master-addr-by-name ${config.REDIS_SENTINEL_NAME}`);
    // Both start-up scripts are shell the container runs: they must at least parse.
    for (const container of [sentinelSet, redisSet].map((set) => set.spec.template.spec.containers[0])) {
      await run("sh", ["-n", "-c", container.command[2]]);
    }
  });
});

describe("deploy/systemd", () => {
  it("has a unit per role that restarts on failure and waits for the drain on stop", async () => {
    const config = loadConfig({});
    for (const role of ["broker", "api", "worker"]) {
      const unit = await read(`deploy/systemd/edge-ingest-${role}.service`);
      const setting = (key: string) => new RegExp(`^${key}=(.*)$`, "m").exec(unit)?.[1];
      expect(setting("Environment"), role).toBe(`ROLES=${role}`);
      expect(setting("Restart"), role).toBe("on-failure");
      expect(setting("KillSignal"), role).toBe("SIGTERM");
      expect(Number(setting("TimeoutStopSec")) * 1000, role).toBeGreaterThan(config.SHUTDOWN_TIMEOUT_MS);
      expect(setting("ExecStart"), role).toMatch(/bin\/edge-ingest\.js serve$/);
    }
    await access(new URL("../bin/edge-ingest.js", import.meta.url));
  });
});

describe(".env.example", () => {
  it("configures the service, loaded as the environment, as no environment does", async () => {
    const example = Object.fromEntries(
      (await read(".env.example")).split("\n").flatMap((line) => {
        const match = /^([A-Z0-9_]+)=(.*)$/.exec(line);
        return match ? [[match[1] as string, match[2] as string]] : [];
      }),
    );
    expect(loadConfig(example)).toEqual(loadConfig({}));
  });
});
