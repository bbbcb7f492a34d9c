import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { GENERATED } from "../scripts/docs.ts";
import { CONFIG_SECTIONS, CONFIG_VARIABLES } from "../src/config.ts";
import { REFUSALS } from "../src/ingest/refusals.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const read = (file: string) => readFile(path.join(ROOT, file), "utf8");

/** The Markdown a reader follows: the README, the reference, the benchmark and fault pages. */
async function markdownFiles(): Promise<string[]> {
  const docs = (await readdir(path.join(ROOT, "docs"))).filter((f) => f.endsWith(".md")).map((f) => `docs/${f}`);
  return ["README.md", "bench/README.md", "faults/README.md", ...docs];
}

/** GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens. */
const anchorOf = (heading: string) =>
  heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N} _-]/gu, "")
    .replaceAll(" ", "-");

describe("the generated pages", () => {
  for (const [file, render] of Object.entries(GENERATED)) {
    it(`${file} is what \`npm run docs\` writes from the code`, async () => {
      expect(await read(file), `${file} is stale: run npm run docs`).toBe(render());
    });
  }

  it("put every configuration variable in exactly one section", () => {
    const listed = CONFIG_SECTIONS.flatMap((section) => section.variables);
    expect([...listed].sort()).toEqual([...CONFIG_VARIABLES].sort());
  });

  it("list every refusal of the catalogue with its status and MQTT 5 code", async () => {
    const page = await read("docs/refusals.md");
    for (const [name, refusal] of Object.entries(REFUSALS)) {
      const code = refusal.mqtt5.toString(16).toUpperCase();
      expect(page).toMatch(new RegExp(`^\\| \`${name}\` \\| ${refusal.status} \\| 0x${code} \\|`, "m"));
    }
  });
});

describe("the documentation", () => {
  it("keeps the README a user's path: at most 350 lines", async () => {
    expect((await read("README.md")).split("\n").length).toBeLessThanOrEqual(350);
  });

  it("has no relative link that leads nowhere, to a file or to a heading", async () => {
    const broken: string[] = [];
    for (const file of await markdownFiles()) {
      const text = (await read(file)).replace(/```[\s\S]*?```/g, "");
      for (const [, target] of text.matchAll(/\]\(([^)\s]+)\)/g)) {
        if (!target || /^[a-z]+:/i.test(target)) continue;
        const [pathPart, anchor] = target.split("#") as [string, string | undefined];
        const resolved = pathPart ? path.join(path.dirname(file), pathPart) : file;
        const content = await read(resolved).catch(() => undefined);
        if (content === undefined && !(await readdir(path.join(ROOT, resolved)).catch(() => undefined))) {
          broken.push(`${file}: ${target} (no such file)`);
          continue;
        }
        if (anchor && content !== undefined) {
          const anchors = [...content.matchAll(/^#+ (.*)$/gm)].map(([, heading]) => anchorOf(heading ?? ""));
          if (!anchors.includes(anchor)) broken.push(`${file}: ${target} (no such heading)`);
        }
      }
    }
    expect(broken).toEqual([]);
  });
});
