import { describe, expect, it } from "vitest";
import {
  formatToken,
  generateSecret,
  generateUsername,
  hashSecret,
  parseToken,
  verifySecret,
} from "../../src/credentials/secrets.ts";

describe("secrets", () => {
  it("verifies a secret against its keyed hash and nothing else", () => {
    const secret = generateSecret();
    const hash = hashSecret("ag_user", secret);
    expect(hash).not.toContain(secret);
    expect(verifySecret("ag_user", secret, hash)).toBe(true);
    expect(verifySecret("ag_user", `${secret}x`, hash)).toBe(false);
    expect(verifySecret("ag_other", secret, hash)).toBe(false);
    expect(verifySecret("ag_user", secret, "short")).toBe(false);
  });

  it("hashes the same secret differently for different usernames", () => {
    expect(hashSecret("a", "s")).not.toBe(hashSecret("b", "s"));
  });

  it("generates 256-bit secrets and distinct usernames by kind", () => {
    expect(Buffer.from(generateSecret(), "base64url")).toHaveLength(32);
    expect(generateSecret()).not.toBe(generateSecret());
    expect(generateUsername("agent")).toMatch(/^ag_[A-Za-z0-9_-]{12}$/);
    expect(generateUsername("token")).toMatch(/^tk_[A-Za-z0-9_-]{12}$/);
  });

  it("round-trips a token and refuses malformed ones", () => {
    const secret = generateSecret();
    expect(parseToken(formatToken("tk_abc", secret))).toEqual({ username: "tk_abc", secret });
    expect(parseToken("nodot")).toBeUndefined();
    expect(parseToken(".secret")).toBeUndefined();
    expect(parseToken("user.")).toBeUndefined();
  });
});
