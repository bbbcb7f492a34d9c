import { once } from "node:events";
import net, { type AddressInfo } from "node:net";

/**
 * A real TCP connection over loopback: `socket` is the server's side (where the broker's guards
 * attach), `client` the side a test writes with or stops reading from.
 */
export async function tcpPair(): Promise<{ client: net.Socket; socket: net.Socket }> {
  const server = net.createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const client = net.connect((server.address() as AddressInfo).port, "127.0.0.1");
  const [socket] = (await once(server, "connection")) as [net.Socket];
  server.close();
  return { client, socket };
}
