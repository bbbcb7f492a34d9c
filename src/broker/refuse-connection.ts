import type { Duplex } from "node:stream";
import mqttPacket from "mqtt-packet";
import { connackReturnCode } from "../ingest/refusals.ts";

/**
 * Refuses a connection before the broker takes it: reads its CONNECT and answers with a CONNACK
 * refusing it, in the client's own protocol version (MQTT 5: `code`; 3.1 and 3.1.1: the return code
 * the catalogue maps it to), then ends it. A client that sends no CONNECT within `timeoutMs`, or
 * anything else first, is cut without a word. Costs no Aedes client, session or lookup.
 */
export function refuseConnection(connection: Duplex, code: number, timeoutMs: number): void {
  const parser = mqttPacket.parser({ protocolVersion: 5 });
  const cut = () => connection.destroy();
  const timer = setTimeout(cut, timeoutMs);
  connection.once("close", () => clearTimeout(timer));
  parser.once("error", cut);
  parser.once("packet", (packet: mqttPacket.Packet) => {
    connection.removeAllListeners("data");
    if (packet.cmd !== "connect") return cut();
    const connack: mqttPacket.IConnackPacket =
      packet.protocolVersion === 5
        ? { cmd: "connack", sessionPresent: false, reasonCode: code }
        : { cmd: "connack", sessionPresent: false, returnCode: connackReturnCode(code) };
    connection.end(mqttPacket.generate(connack, { protocolVersion: packet.protocolVersion ?? 4 }));
  });
  connection.on("data", (chunk: Buffer) => parser.parse(chunk));
}
