import type net from "node:net";
import type { AddressInfo } from "node:net";

/**
 * Binds a listener: resolves with its port, or rejects with what to do when the port is taken.
 * From then on a server error (an accept that failed) goes to `onError`: the server keeps
 * listening, and an `error` event without a listener would end the process.
 */
export function listen(
  server: net.Server,
  name: string,
  { host, port, backlog }: { host: string; port: number; backlog?: number },
  onError: (error: Error, name: string) => void,
): Promise<number> {
  return new Promise((resolve, reject) => {
    const refuse = (error: NodeJS.ErrnoException) =>
      reject(
        error.code === "EADDRINUSE"
          ? new Error(`${name} port ${port} is already in use (another MQTT broker?); set ${name} to a free port`)
          : error,
      );
    server.once("error", refuse);
    server.listen({ port, host, backlog }, () => {
      server.off("error", refuse);
      server.on("error", (error: Error) => onError(error, name));
      resolve((server.address() as AddressInfo).port);
    });
  });
}
