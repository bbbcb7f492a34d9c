import { execFile } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

export interface Issued {
  certFile: string;
  keyFile: string;
  pem: string;
  key: string;
}

/** Whether `openssl` is here to make certificates (under CI=true it must be). */
export async function hasOpenssl(): Promise<boolean> {
  const present = await run("openssl", ["version"]).then(
    () => true,
    () => false,
  );
  if (!present && process.env.CI === "true") throw new Error("CI=true but openssl is not installed");
  return present;
}

const files = async (dir: string, name: string): Promise<Issued> => {
  const certFile = path.join(dir, `${name}.pem`);
  const keyFile = path.join(dir, `${name}.key`);
  return { certFile, keyFile, pem: await readFile(certFile, "utf8"), key: await readFile(keyFile, "utf8") };
};

const EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];

/** A self-signed certificate: a CA (`ca`), or a device's or server's own. */
export async function selfSigned(dir: string, name: string, cn: string, options: { ca?: boolean } = {}) {
  await run("openssl", [
    ...["req", "-x509", ...EC_KEY, "-days", "2", "-subj", `/CN=${cn}`],
    ...(options.ca
      ? ["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]
      : ["-addext", "basicConstraints=critical,CA:FALSE"]),
    ...["-keyout", path.join(dir, `${name}.key`), "-out", path.join(dir, `${name}.pem`)],
  ]);
  return files(dir, name);
}

/** `openssl ca`'s timestamp: UTC, YYYYMMDDHHMMSSZ. */
const asn1Time = (ms: number) => `${new Date(ms).toISOString().replace(/[-:T]/g, "").slice(0, 14)}Z`;

/**
 * A device certificate `ca` issues for `cn`, valid from `notBefore` to `notAfter` (epoch ms;
 * default: an hour ago to a day ahead), through `openssl ca`, which takes exact dates.
 */
export async function issue(
  dir: string,
  ca: Issued,
  name: string,
  cn: string,
  validity: { notBefore?: number; notAfter?: number } = {},
): Promise<Issued> {
  const config = path.join(dir, `${name}.cnf`);
  const index = path.join(dir, `${name}.index`);
  await writeFile(index, "");
  await writeFile(
    config,
    [
      "[ca]",
      "default_ca = test",
      "[test]",
      `database = ${index}`,
      `new_certs_dir = ${dir}`,
      "rand_serial = yes",
      "default_md = sha256",
      "policy = any",
      "unique_subject = no",
      "x509_extensions = device",
      "[any]",
      "commonName = supplied",
      "[device]",
      "basicConstraints = critical,CA:FALSE",
      "keyUsage = critical,digitalSignature",
      "extendedKeyUsage = clientAuth",
    ].join("\n"),
  );
  const csr = path.join(dir, `${name}.csr`);
  await run("openssl", [
    ...["req", "-new", ...EC_KEY, "-subj", `/CN=${cn}`, "-keyout", path.join(dir, `${name}.key`), "-out", csr],
  ]);
  const now = Date.now();
  await run("openssl", [
    ...["ca", "-batch", "-notext", "-config", config, "-cert", ca.certFile, "-keyfile", ca.keyFile, "-in", csr],
    ...["-startdate", asn1Time(validity.notBefore ?? now - 3_600_000)],
    ...["-enddate", asn1Time(validity.notAfter ?? now + 86_400_000)],
    ...["-out", path.join(dir, `${name}.pem`)],
  ]);
  return files(dir, name);
}
