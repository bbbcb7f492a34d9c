import { X509Certificate } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TenantAuthorities } from "../../src/credentials/authorities.ts";
import { authorityUsername, CertificateError } from "../../src/credentials/certificates.ts";
import { ConflictError } from "../../src/errors.ts";
import type { Database } from "../../src/store/database.ts";
import { hasOpenssl, type Issued, issue, selfSigned } from "../helpers/certificates.ts";
import { openTestDatabase } from "../helpers/databases.ts";
import { distributedUnavailable, tempDir } from "../helpers/services.ts";

const openssl = await hasOpenssl();
const skipPostgres = Boolean(await distributedUnavailable());

for (const kind of ["PGlite", "PostgreSQL"] as const) {
  describe.skipIf(!openssl || (kind === "PostgreSQL" && skipPostgres))(`tenant CAs (${kind})`, () => {
    let db: Database;
    let removeDb: () => Promise<void>;
    let removeDir: () => Promise<void>;
    let dir: string;
    let ca: Issued;
    let device: X509Certificate;
    const tenants: string[] = [];

    beforeAll(async () => {
      ({ db, remove: removeDb } = await openTestDatabase(kind));
      ({ dir, remove: removeDir } = await tempDir());
      ca = await selfSigned(dir, "ca", "Store test CA", { ca: true });
      device = new X509Certificate((await issue(dir, ca, "device", "dev-1")).pem);
      const prisma = await db.prisma();
      for (const name of ["one", "two"]) tenants.push((await prisma.tenant.create({ data: { name } })).id);
    });
    afterAll(async () => {
      await removeDb?.();
      await removeDir?.();
    });

    it("finds the CA that issued a certificate, for one tenant only, and forgets it once removed (kept, marked)", async () => {
      const [one, two] = tenants as [string, string];
      const authorities = new TenantAuthorities(db, 60_000);
      const before = new Date(Date.now() - 1000);
      const added = await authorities.add(one, ca.pem, true);
      expect(added).toMatchObject({ tenantId: one, subject: "CN=Store test CA", registerAgents: true });
      expect(await authorities.issuerOf(device, Date.now())).toMatchObject({ tenantId: one, registerAgents: true });
      await expect(authorities.add(two, ca.pem, false)).rejects.toBeInstanceOf(ConflictError);
      await expect(authorities.add(one, (await selfSigned(dir, "leaf", "leaf")).pem, false)).rejects.toBeInstanceOf(
        CertificateError,
      );

      expect(await authorities.remove(two, added.fingerprint)).toBe(false);
      expect(await authorities.remove(one, added.fingerprint)).toBe(true);
      expect(await authorities.issuerOf(device, Date.now())).toBeUndefined();
      expect(await authorities.list(one)).toEqual([]);
      // What a process that missed the announcement asks once Pub/Sub is back.
      expect(await authorities.removedSince(before)).toEqual([authorityUsername(added.fingerprint)]);

      // Removed, it may be trusted again, by another tenant too.
      expect(await authorities.add(two, ca.pem, false)).toMatchObject({ tenantId: two, registerAgents: false });
      expect(await authorities.issuerOf(device, Date.now())).toMatchObject({ tenantId: two });
      expect(await authorities.removedSince(before)).toEqual([]);
    });

    it("admits an agent that exists, registers one only when the CA does, and once", async () => {
      const [one] = tenants as [string];
      const authorities = new TenantAuthorities(db, 60_000);
      expect(await authorities.admitAgent(one, "not-yet", false)).toBeUndefined();
      expect(await authorities.admitAgent(one, "not-yet", true)).toEqual({ registered: true });
      expect(await new TenantAuthorities(db, 60_000).admitAgent(one, "not-yet", true)).toEqual({ registered: false });
      const prisma = await db.prisma();
      expect(await prisma.agent.count({ where: { tenantId: one, agentId: "not-yet" } })).toBe(1);
    });
  });
}
