import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto";

/**
 * Secrets are 256-bit random values, so they cannot be guessed from their hash: a keyed SHA-256
 * (keyed by the credential's username, so equal secrets never hash alike) is enough, and a lookup
 * costs microseconds instead of a slow KDF on every connect.
 */
export function hashSecret(username: string, secret: string): string {
  return createHmac("sha256", username).update(secret).digest("base64url");
}

export function verifySecret(username: string, secret: string, storedHash: string): boolean {
  const actual = Buffer.from(hashSecret(username, secret));
  const expected = Buffer.from(storedHash);
  return actual.length === expected.length && timingSafeEqual(actual, expected);
}

export function generateSecret(): string {
  return randomBytes(32).toString("base64url");
}

export type UsernameKind = "agent" | "token";

const USERNAME_PREFIX: Record<UsernameKind, string> = { agent: "ag_", token: "tk_" };

/** Usernames are public identifiers of a credential: random, so they reveal nothing about tenants. */
export function generateUsername(kind: UsernameKind): string {
  return USERNAME_PREFIX[kind] + randomBytes(9).toString("base64url");
}

// Agents and tokens: random names; pinned certificates: `ct_` and the certificate's SHA-256.
const USERNAME_PATTERN = /^(?:(?:ag|tk)_[A-Za-z0-9_-]{12}|ct_[A-Za-z0-9_-]{43})$/;

/** Whether a client's string can name a credential at all: anything else is refused without a lookup. */
export function isCredentialUsername(candidate: string): boolean {
  return USERNAME_PATTERN.test(candidate);
}

/** A bearer token is `username.secret`: the username finds the credential, the secret proves it. */
export function formatToken(username: string, secret: string): string {
  return `${username}.${secret}`;
}

export function parseToken(token: string): { username: string; secret: string } | undefined {
  const dot = token.indexOf(".");
  if (dot <= 0 || dot === token.length - 1) return undefined;
  return { username: token.slice(0, dot), secret: token.slice(dot + 1) };
}

/** A constant-time test of candidates against one configured secret (the admin token). */
export function secretMatcher(secret: string): (candidate: string) => boolean {
  const digest = (value: string) => createHash("sha256").update(value).digest();
  const expected = digest(secret);
  return (candidate) => timingSafeEqual(digest(candidate), expected);
}
