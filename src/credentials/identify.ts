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
}
