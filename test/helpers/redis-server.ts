import { type ChildProcess, execFile, spawn } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer } from "node:net";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { Redis } from "ioredis";

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** A certificate for 127.0.0.1, signed by itself: the server's, and the CA its clients trust. */
export interface TestCertificate {
  certFile: string;
  keyFile: string;
  /** The certificate's PEM, for a client's `ca`. */
  pem: string;
}

/** A certificate for 127.0.0.1 made with openssl in `dir`. */
export async function makeTestCertificate(dir: string): Promise<TestCertificate> {
  const certFile = path.join(dir, "redis.crt");
  const keyFile = path.join(dir, "redis.key");
  await promisify(execFile)("openssl", [
    ...["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"],
    ...["-addext", "subjectAltName=IP:127.0.0.1", "-keyout", keyFile, "-out", certFile],
  ]);
  return { certFile, keyFile, pem: await readFile(certFile, "utf8") };
}

/** Options of an ioredis client for a server with `password` and `tls`, as a test's own clients need. */
export const clientOptions = (secure: { password?: string; tls?: TestCertificate }) => ({
  ...(secure.password && { password: secure.password }),
  ...(secure.tls && { tls: { ca: secure.tls.pem } }),
});

/** The arguments that make a redis-server (or sentinel) take TLS only, on `port`, with `tls`'s certificate. */
export const tlsArgs = (port: number, tls: TestCertificate) => [
  ...["--port", "0", "--tls-port", String(port), "--tls-cert-file", tls.certFile, "--tls-key-file", tls.keyFile],
  ...["--tls-ca-cert-file", tls.certFile, "--tls-auth-clients", "no", "--tls-replication", "yes"],
];

export interface OwnRedis {
  url: string;
  port: number;
  /** Starts it again on the same port (with its append-only file, if it keeps one). */
  start(): Promise<void>;
  /** Kills it (SIGKILL). */
  stop(): Promise<void>;
  /** Freezes it (SIGSTOP): connections stay open, nothing is answered, until `resume`. */
  pause(): void;
  resume(): void;
  /** Kills it and removes its files. */
  remove(): Promise<void>;
}

/**
 * A redis-server of the caller's own on a free port, for tests and fault runs that stop it: the
 * shared one is never stopped. Without options it keeps nothing on disk, like the machine's.
 */
export async function startOwnRedis(
  options: {
    appendonly?: boolean;
    maxmemoryPolicy?: string;
    args?: string[];
    /** `requirepass` (and `masterauth`, for a replica). */
    password?: string;
    /** TLS only, with this certificate. */
    tls?: TestCertificate;
  } = {},
): Promise<OwnRedis> {
  const port = await freePort();
  const dir = await mkdtemp(path.join(os.tmpdir(), "edge-ingest-redis-"));
  let child: ChildProcess | undefined;
  const auth = options.password ? `:${encodeURIComponent(options.password)}@` : "";
  const url = `${options.tls ? "rediss" : "redis"}://${auth}127.0.0.1:${port}`;
  const args = [
    ...["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--dir", dir],
    ...["--appendonly", options.appendonly ? "yes" : "no"],
    ...(options.maxmemoryPolicy ? ["--maxmemory-policy", options.maxmemoryPolicy] : []),
    ...(options.password ? ["--requirepass", options.password, "--masterauth", options.password] : []),
    ...(options.tls ? tlsArgs(port, options.tls) : []),
    ...(options.args ?? []),
  ];
  const start = async () => {
    child = spawn("redis-server", args, { stdio: "ignore" });
    // Queued until the server listens (and has loaded its file): the client retries every 20 ms meanwhile.
    const probe = new Redis(url, { retryStrategy: () => 20, maxRetriesPerRequest: null, ...clientOptions(options) });
    probe.on("error", () => undefined);
    for (;;) {
      const loading = await probe.info("persistence").then(
        (info) => /^loading:1/m.test(info),
        () => true,
      );
      if (!loading) break;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    probe.disconnect();
  };
  const stop = async () => {
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child?.once("exit", resolve));
    child.kill("SIGKILL");
    await exited;
  };
  await start();
  return {
    url,
    port,
    start,
    stop,
    pause: () => child?.kill("SIGSTOP"),
    resume: () => child?.kill("SIGCONT"),
    remove: async () => {
      await stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
