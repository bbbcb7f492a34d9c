import { X509Certificate } from "node:crypto";
import { ConflictError, NotFoundError } from "../errors.ts";
import type { Database } from "../store/database.ts";
import { authorityUsername, checkAuthority, fingerprintOf, issuedBy, parseCertificate } from "./certificates.ts";
import { ExpiringCache } from "./expiring-cache.ts";

/** A tenant CA as the admin API shows it: never more than its public certificate. */
export interface TenantAuthority {
  fingerprint: string;
  tenantId: string;
  subject: string;
  registerAgents: boolean;
  notAfter: Date;
  createdAt: Date;
}

interface Candidate {
  fingerprint: string;
  tenantId: string;
  registerAgents: boolean;
  certificate: X509Certificate;
}

/**
 * The certificate authorities tenants trust for their devices (docs/certificates.md). A device
 * certificate's issuer finds the candidates (one query per issuer, cached for `cacheTtlMs`); its
 * signature picks the one that issued it. A CA belongs to one tenant: the tenant a certificate
 * stands for is the CA's, whatever the certificate says.
 */
export class TenantAuthorities {
  /** The CAs of each issuer a device certificate named (none, for most a stranger makes up). */
  private readonly bySubject: ExpiringCache<Promise<Candidate[]>>;
  /** Agents known to exist (a reconnect storm asks the database once per agent). */
  private readonly knownAgents: ExpiringCache<true>;

  constructor(
    private readonly db: Pick<Database, "prisma" | "sql">,
    cacheTtlMs: number,
  ) {
    this.bySubject = new ExpiringCache(cacheTtlMs);
    this.knownAgents = new ExpiringCache(cacheTtlMs);
  }

  /** The tenant CA that issued the certificate, if one did (and is still valid at `now`). */
  async issuerOf(certificate: X509Certificate, now: number): Promise<Omit<Candidate, "certificate"> | undefined> {
    for (const candidate of await this.candidates(certificate.issuer)) {
      if (!issuedBy(certificate, candidate.certificate)) continue;
      if (Date.parse(candidate.certificate.validTo) <= now) return undefined;
      const { certificate: _, ...issuer } = candidate;
      return issuer;
    }
    return undefined;
  }

  private candidates(subject: string): Promise<Candidate[]> {
    const cached = this.bySubject.get(subject);
    if (cached) return cached;
    const candidates = this.db
      .sql<{ fingerprint: string; tenantId: string; registerAgents: boolean; pem: string }>(
        `SELECT fingerprint, tenant_id::text AS "tenantId", register_agents AS "registerAgents", pem
         FROM tenant_cas WHERE subject = $1 AND removed_at IS NULL`,
        [subject],
      )
      .then((rows) => rows.map(({ pem, ...row }) => ({ ...row, certificate: new X509Certificate(pem) })));
    this.bySubject.set(subject, candidates);
    candidates.catch(() => this.bySubject.delete(subject));
    return candidates;
  }

  /** Drops what was cached (a CA removed, here or on another process). */
  forget(): void {
    this.bySubject.clear();
  }

  /**
   * Whether the agent may connect: it exists, or the CA registers agents on their first connection
   * (then it exists from now on; `registered` says it was made now).
   */
  async admitAgent(tenantId: string, agentId: string, register: boolean): Promise<{ registered: boolean } | undefined> {
    const key = `${tenantId}/${agentId}`;
    if (this.knownAgents.get(key)) return { registered: false };
    const admitted = await this.findOrRegister(tenantId, agentId, register);
    if (admitted) this.knownAgents.set(key, true);
    return admitted;
  }

  private async findOrRegister(tenantId: string, agentId: string, register: boolean) {
    const [existing] = await this.db.sql<{ one: number }>(
      "SELECT 1 AS one FROM agents WHERE tenant_id = $1::uuid AND agent_id = $2",
      [tenantId, agentId],
    );
    if (existing) return { registered: false };
    if (!register) return undefined;
    const inserted = await this.db.sql<{ one: number }>(
      `INSERT INTO agents (tenant_id, agent_id) VALUES ($1::uuid, $2) ON CONFLICT DO NOTHING RETURNING 1 AS one`,
      [tenantId, agentId],
    );
    return { registered: inserted.length > 0 };
  }

  async add(tenantId: string, pem: string, registerAgents: boolean): Promise<TenantAuthority> {
    const certificate = parseCertificate(pem);
    checkAuthority(certificate, Date.now());
    const prisma = await this.db.prisma();
    if ((await prisma.tenant.count({ where: { id: tenantId } })) === 0) {
      throw new NotFoundError(`tenant ${tenantId} does not exist`);
    }
    const fingerprint = fingerprintOf(certificate);
    const trusted = await prisma.tenantCa.findUnique({ where: { fingerprint }, select: { removedAt: true } });
    // One CA, one tenant: the tenant of a certificate is its CA's. A removed CA may be trusted again.
    if (trusted && trusted.removedAt === null) throw new ConflictError("this CA is already trusted");
    const data = {
      tenantId,
      subject: certificate.subject,
      pem: certificate.toString(),
      registerAgents,
      notAfter: new Date(certificate.validTo),
      createdAt: new Date(),
      removedAt: null,
    };
    try {
      const row = await prisma.tenantCa.upsert({
        where: { fingerprint },
        create: { fingerprint, ...data },
        update: data,
      });
      this.forget();
      return toAuthority(row);
    } catch (error) {
      if ((error as { code?: string }).code === "P2002") throw new ConflictError("this CA is already trusted");
      throw error;
    }
  }

  async list(tenantId: string): Promise<TenantAuthority[]> {
    const rows = await (await this.db.prisma()).tenantCa.findMany({
      where: { tenantId, removedAt: null },
      orderBy: { createdAt: "asc" },
    });
    return rows.map(toAuthority);
  }

  /** Removes a tenant's CA; false when the tenant has no such CA. */
  async remove(tenantId: string, fingerprint: string): Promise<boolean> {
    const { count } = await (await this.db.prisma()).tenantCa.updateMany({
      where: { tenantId, fingerprint, removedAt: null },
      data: { removedAt: new Date() },
    });
    this.forget();
    return count > 0;
  }

  /** The names (authorityUsername) of the CAs removed at `since` or later: revocations missed while away. */
  async removedSince(since: Date): Promise<string[]> {
    const rows = await (await this.db.prisma()).tenantCa.findMany({
      where: { removedAt: { gte: since } },
      select: { fingerprint: true },
    });
    return rows.map((row) => authorityUsername(row.fingerprint));
  }
}

function toAuthority(row: TenantAuthority & { pem: string; removedAt: Date | null }): TenantAuthority {
  const { pem: _, removedAt: __, ...authority } = row;
  return authority;
}
