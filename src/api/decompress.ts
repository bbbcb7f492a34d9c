import { pipeline, type Readable, Transform } from "node:stream";
import { createGunzip, createInflate } from "node:zlib";
import type { preParsingHookHandler } from "fastify";
import { ApiError } from "./errors.ts";

const DECODERS: Record<string, () => Transform> = { gzip: createGunzip, deflate: createInflate };

/**
 * A preParsing hook for `Content-Encoding: gzip` (and `deflate`) bodies, as Telegraf, the InfluxDB
 * clients and OTLP exporters send them. What the body inflates to counts against the same body limit
 * as a plain body, and inflating stops at the first byte past it: a small body that would inflate to
 * gigabytes (a gzip bomb) costs what the limit allows and is refused `too_large`.
 */
export function decompressBody(limit: number): preParsingHookHandler {
  return async (request, _reply, payload) => {
    const encoding = request.headers["content-encoding"]?.trim().toLowerCase();
    if (encoding === undefined || encoding === "" || encoding === "identity") return payload;
    const decoder = DECODERS[encoding];
    if (!decoder) {
      throw new ApiError("unsupported_media_type", `Content-Encoding ${encoding} is not accepted; use gzip or none`);
    }
    let received = 0;
    let inflated = 0;
    const bounded = new Transform({
      transform(chunk: Buffer, _encoding, done) {
        inflated += chunk.length;
        if (inflated > limit) {
          done(new ApiError("too_large", `the body inflates past ${limit} bytes (HTTP_BODY_LIMIT_BYTES)`));
        } else done(null, chunk);
      },
    });
    payload.on("data", (chunk: Buffer) => {
      received += chunk.length;
      (bounded as Readable & { receivedEncodedLength?: number }).receivedEncodedLength = received;
    });
    const inflate = decoder();
    inflate.once("error", (error: Error & { statusCode?: number }) => {
      error.statusCode = 400;
      error.message = `the body is not valid ${encoding}: ${error.message}`;
    });
    // Any stream's failure destroys the others; fastify reads the error from `bounded`.
    pipeline(payload, inflate, bounded, () => undefined);
    return bounded;
  };
}
