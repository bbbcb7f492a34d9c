import { describe, expect, it } from "vitest";
import { filterRefusal, subackCodes } from "../../src/broker/mqtt5.ts";
import { refusalAck } from "../../src/broker/publish.ts";
import { connackReturnCode, MQTT5, REFUSALS, reject } from "../../src/ingest/refusals.ts";

describe("MQTT 5 decisions", () => {
  it.each([
    ["metrics/t/+/x", undefined],
    ["#", undefined],
    ["a/+/#", undefined],
    ["", MQTT5.TOPIC_FILTER_INVALID],
    ["a/#/b", MQTT5.TOPIC_FILTER_INVALID],
    ["a/b#", MQTT5.TOPIC_FILTER_INVALID],
    ["a/x+/b", MQTT5.TOPIC_FILTER_INVALID],
    ["a/b/c/d/e", MQTT5.TOPIC_FILTER_INVALID],
    ["$share/group/a/b", undefined],
    ["$share/group/#", undefined],
    ["$share/group", MQTT5.TOPIC_FILTER_INVALID],
    ["$share//a", MQTT5.TOPIC_FILTER_INVALID],
    ["$share/g+/a", MQTT5.TOPIC_FILTER_INVALID],
  ])("refuses the filter %j before Aedes with %s", (filter, code) => {
    expect(filterRefusal(filter, 4)).toBe(code);
  });

  it("gives each filter sent its SUBACK code, where Aedes answered each distinct filter it saw once", () => {
    const pending = {
      filters: ["a/#", "bad/#/x", "b", "a/#", "$share/g"],
      refused: [undefined, MQTT5.TOPIC_FILTER_INVALID, undefined, undefined, MQTT5.TOPIC_FILTER_INVALID],
    };
    // Aedes saw a/#, b (a/# once): granted QoS 1, and refused b (128).
    expect(subackCodes(pending, [1, 128])).toEqual([
      1,
      MQTT5.TOPIC_FILTER_INVALID,
      MQTT5.NOT_AUTHORIZED,
      1,
      MQTT5.TOPIC_FILTER_INVALID,
    ]);
  });

  it("acknowledges a publish with its first refusal's code when nothing was accepted, else with the counts", () => {
    expect(refusalAck([], 3)).toEqual({ code: MQTT5.SUCCESS });
    expect(refusalAck([reject("bad_value", "value must be a finite number")], 0)).toEqual({
      code: REFUSALS.bad_value.mqtt5,
      reasonString: "bad_value: value must be a finite number",
      userProperties: { accepted: "0", rejected: "1" },
    });
    expect(refusalAck([reject("bad_tags", "at most 2 tags"), reject("bad_value", "x")], 3)).toEqual({
      code: MQTT5.SUCCESS,
      reasonString: "2 of 5 readings refused, the first bad_tags: at most 2 tags",
      userProperties: { accepted: "3", rejected: "2" },
    });
  });

  it("answers MQTT 3.1 and 3.1.1 clients with the five CONNACK codes they have", () => {
    expect(connackReturnCode(REFUSALS.bad_client_id.mqtt5)).toBe(2);
    expect(connackReturnCode(REFUSALS.bad_credentials.mqtt5)).toBe(4);
    expect(connackReturnCode(REFUSALS.no_credentials.mqtt5)).toBe(5);
    expect(connackReturnCode(REFUSALS.not_authorized.mqtt5)).toBe(5);
    expect(connackReturnCode(REFUSALS.tenant_connection_quota.mqtt5)).toBe(3);
    expect(connackReturnCode(REFUSALS.unavailable.mqtt5)).toBe(3);
  });
});
