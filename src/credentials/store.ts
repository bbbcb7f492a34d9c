import type { X509Certificate } from "node:crypto";
import { ConflictError, NotFoundError } from "../errors.ts";
import type { Database } from "../store/database.ts";
import { type CredentialRecord, findCredentials } from "../store/lookups.ts";
import { certificateUsername } from "./certificates.ts";
import { ExpiringCache } from "./expiring-cache.ts";
import { LookupBatch } from "./lookup-batch.ts";
import {
  formatToken,
  generateSecret,
  generateUsername,
  hashSecret,
  isCredentialUsername,
  verifySecret,
} from "./secrets.ts";

export type TokenRole = "ingest" | "viewer";

/** The stored hash of a credential that has no secret (a pinned certificate): no HMAC is ever "-". */
const NO_SECRET = "-";

/** Who a request or connection acts as, once its credential is verified. */
export type Principal =
  | { kind: "agent"; username: string; tenantId: string; agentId: string }
  | { kind: "token"; username: string; tenantId: string; role: TokenRole }
  | { kind: "admin" };

/**
 * Tenants, agents and their credentials. Lookups are cached for `cacheTtlMs` so a reconnect storm
 * does not become a database storm; revoking here drops the entry at once.
 */
export class CredentialStore {
  /** Each username looked up, found (its row) or not (null). */
  private readonly cache: ExpiringCache<CredentialRecord | null>;

  /** Looks up through `db.sql` (src/store/lookups.ts), writes and lists through Prisma. */
  constructor(
    private readonly db: Pick<Database, "prisma" | "sql">,
    cacheTtlMs: number,
  ) {
    this.cache = new ExpiringCache(cacheTtlMs);
  }

  async verify(username: string, secret: string): Promise<Principal | undefined> {
    // Client bytes (a NUL, invalid UTF-8, any length) never reach the database.
    if (!isCredentialUsername(username)) return undefined;
    const row = await this.lookup(username);
    if (!row || row.revokedAt !== null || !verifySecret(username, secret, row.secretHash)) return undefined;
    if (row.role === "agent") {
      return { kind: "agent", username, tenantId: row.tenantId, agentId: row.agentId as string };
    }
    return { kind: "token", username, tenantId: row.tenantId, role: row.role };
  }

  /**
   * The agent a pinned certificate (its credential's username, `ct_…`) stands for; "revoked" when
   * it was revoked, undefined when it was never pinned. The TLS handshake proved the key.
   */
  async verifyPinned(username: string): Promise<Principal | "revoked" | undefined> {
    if (!isCredentialUsername(username)) return undefined;
    const row = await this.lookup(username);
    if (row?.role !== "agent") return undefined;
    if (row.revokedAt !== null) return "revoked";
    return { kind: "agent", username, tenantId: row.tenantId, agentId: row.agentId as string };
  }

  private lookup(username: string): Promise<CredentialRecord | null> {
    const cached = this.cache.get(username);
    return cached === undefined ? this.batch.load(username) : Promise.resolve(cached);
  }

  /**
   * The usernames looked up in one turn of the event loop go to the database in one query: after a
   * broker restart its whole fleet connects at once, every credential missing from the new cache.
   */
  private readonly batch = new LookupBatch(async (usernames) => {
    const rows = await findCredentials(this.db.sql, usernames);
    const found = new Map(rows.map((row) => [row.username, row]));
    for (const username of usernames) this.cache.set(username, found.get(username) ?? null);
    return found;
  });

  forget(username: string): void {
    this.cache.delete(username);
  }

  async createTenant(name: string): Promise<{ id: string; name: string }> {
    const tenant = await (await this.db.prisma()).tenant.create({ data: { name } });
    return { id: tenant.id, name: tenant.name };
  }

  async tenantExists(tenantId: string): Promise<boolean> {
    return (await (await this.db.prisma()).tenant.count({ where: { id: tenantId } })) > 0;
  }

  async tenantName(tenantId: string): Promise<string | undefined> {
    return (await (await this.db.prisma()).tenant.findUnique({ where: { id: tenantId }, select: { name: true } }))
      ?.name;
  }

  /** Every tenant, oldest first, with how many agents and unrevoked credentials it has. */
  async listTenants(): Promise<
    { id: string; name: string; createdAt: Date; agents: number; activeCredentials: number }[]
  > {
    const prisma = await this.db.prisma();
    const [tenants, active] = await Promise.all([
      prisma.tenant.findMany({ orderBy: { createdAt: "asc" }, include: { _count: { select: { agents: true } } } }),
      prisma.credential.groupBy({ by: ["tenantId"], where: { revokedAt: null }, _count: { _all: true } }),
    ]);
    const activeByTenant = new Map(active.map((row) => [row.tenantId, row._count._all]));
    return tenants.map((tenant) => ({
      id: tenant.id,
      name: tenant.name,
      createdAt: tenant.createdAt,
      agents: tenant._count.agents,
      activeCredentials: activeByTenant.get(tenant.id) ?? 0,
    }));
  }

  /** A tenant's credentials, newest first; never their secrets (only hashes are kept anyway). */
  async listCredentials(
    tenantId: string,
  ): Promise<
    { username: string; role: "agent" | TokenRole; agentId: string | null; createdAt: Date; revokedAt: Date | null }[]
  > {
    if (!(await this.tenantExists(tenantId))) throw new NotFoundError(`tenant ${tenantId} does not exist`);
    return (await this.db.prisma()).credential.findMany({
      where: { tenantId },
      orderBy: { createdAt: "desc" },
      select: { username: true, role: true, agentId: true, createdAt: true, revokedAt: true },
    });
  }

  /**
   * Registers an agent with its credential: a password (returned once, never stored), or a pinned
   * certificate (its fingerprint is the credential's name; the private key never leaves the device).
   */
  async createAgent(
    tenantId: string,
    agentId: string,
    certificate?: X509Certificate,
  ): Promise<{ username: string; password?: string }> {
    if (!(await this.tenantExists(tenantId))) throw new NotFoundError(`tenant ${tenantId} does not exist`);
    const username = certificate ? certificateUsername(certificate) : generateUsername("agent");
    const password = certificate ? undefined : generateSecret();
    // A pinned certificate has no secret: no password can ever match this.
    const secretHash = password ? hashSecret(username, password) : NO_SECRET;
    try {
      const prisma = await this.db.prisma();
      await prisma.$transaction([
        prisma.agent.create({ data: { tenantId, agentId } }),
        prisma.credential.create({ data: { username, role: "agent", tenantId, agentId, secretHash } }),
      ]);
    } catch (error) {
      if ((error as { code?: string }).code === "P2002") {
        throw new ConflictError(
          certificate
            ? `agent ${agentId} already exists in tenant ${tenantId}, or the certificate is already pinned`
            : `agent ${agentId} already exists in tenant ${tenantId}`,
        );
      }
      throw error;
    }
    return password ? { username, password } : { username };
  }

  /** Creates a tenant token (`username.secret`), returned once. */
  async createToken(tenantId: string, role: TokenRole): Promise<{ username: string; token: string }> {
    if (!(await this.tenantExists(tenantId))) throw new NotFoundError(`tenant ${tenantId} does not exist`);
    const username = generateUsername("token");
    const secret = generateSecret();
    await (await this.db.prisma()).credential.create({
      data: { username, role, tenantId, secretHash: hashSecret(username, secret) },
    });
    return { username, token: formatToken(username, secret) };
  }

  /** The usernames of the credentials revoked at `since` or later. */
  async revokedSince(since: Date): Promise<string[]> {
    const rows = await (await this.db.prisma()).credential.findMany({
      where: { revokedAt: { gte: since } },
      select: { username: true },
    });
    return rows.map((row) => row.username);
  }

  /** Revokes a credential; false when no such credential exists. Revoking twice is not an error. */
  async revoke(username: string): Promise<boolean> {
    if (!isCredentialUsername(username)) return false;
    const { count } = await (await this.db.prisma()).credential.updateMany({
      where: { username, revokedAt: null },
      data: { revokedAt: new Date() },
    });
    this.forget(username);
    return count > 0 || (await (await this.db.prisma()).credential.count({ where: { username } })) > 0;
  }
}
