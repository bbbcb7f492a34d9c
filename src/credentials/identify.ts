import type { X509Certificate } from "node:crypto";
import type { TenantAuthorities } from "./authorities.ts";
import {
  agentIdOf,
  authorityUsername,
  CertificateError,
  certificateUsername,
  validityProblem,
} from "./certificates.ts";
import { parseToken, secretMatcher } from "./secrets.ts";
import type { CredentialStore, Principal } from "./store.ts";

/**
 * Who a presented secret belongs to, the same way for HTTP and MQTT: the admin token, a tenant
 * token (`username.secret`), or an agent's username and secret.
 */
export class Identifier {
  private readonly isAdminToken: (candidate: string) => boolean;

  constructor(
    private readonly credentials: CredentialStore,
    adminToken: string | undefined,
    private readonly authorities: TenantAuthorities,
  ) {
    this.isAdminToken = adminToken ? secretMatcher(adminToken) : () => false;
  }

  /** A bearer token: the admin token or a tenant token. */
  async bearer(token: string): Promise<Principal | undefined> {
    if (this.isAdminToken(token)) return { kind: "admin" };
    const parsed = parseToken(token);
    return parsed && this.credentials.verify(parsed.username, parsed.secret);
  }

  /** A username and its secret: an agent's credential (HTTP Basic, MQTT username and password). */
  basic(username: string, secret: string): Promise<Principal | undefined> {
    return this.credentials.verify(username, secret);
  }

  /**
   * An MQTT password: a token (viewers and the admin connect with theirs as the password, whatever
   * the username), else the secret of the username's credential.
   */
  async password(username: string | undefined, secret: string): Promise<Principal | undefined> {
    if (this.isAdminToken(secret) || parseToken(secret)) return this.bearer(secret);
    return username ? this.basic(username, secret) : undefined;
  }

  /**
   * The agent a client certificate stands for (the TLS handshake proved the client holds its key):
   * a pinned certificate's agent, else, for a certificate a tenant's CA issued, the agent its CN
   * names in that CA's tenant (registered now if the CA registers agents). Refused, with the reason,
   * when it is outside its validity, revoked, or neither.
   */
  async certificate(
    peer: X509Certificate,
    now: number,
  ): Promise<{ principal: Principal & { kind: "agent" }; registered: boolean } | CertificateError> {
    const problem = validityProblem(peer, now);
    if (problem) return new CertificateError(problem);
    if (peer.ca) return new CertificateError("a CA's certificate does not identify a device");
    const pinned = await this.credentials.verifyPinned(certificateUsername(peer));
    if (pinned === "revoked") return new CertificateError("the certificate was revoked");
    if (pinned?.kind === "agent") return { principal: pinned, registered: false };
    const issuer = await this.authorities.issuerOf(peer, now);
    if (!issuer) return new CertificateError("the certificate is not pinned to an agent, nor issued by a tenant's CA");
    let agentId: string;
    try {
      agentId = agentIdOf(peer);
    } catch (error) {
      return error as CertificateError;
    }
    const admitted = await this.authorities.admitAgent(issuer.tenantId, agentId, issuer.registerAgents);
    if (!admitted) {
      return new CertificateError(`agent ${agentId} is not registered, and its CA does not register agents`);
    }
    const username = authorityUsername(issuer.fingerprint);
    return {
      principal: { kind: "agent", username, tenantId: issuer.tenantId, agentId },
      registered: admitted.registered,
    };
  }
}
