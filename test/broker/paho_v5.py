"""An MQTT 5.0 agent in paho-mqtt 2: connects, publishes a good and a bad reading and one to
another tenant, subscribes to a filter it may not, and prints the reason codes it got as JSON.

usage: paho_v5.py HOST PORT USERNAME PASSWORD OWN_TOPIC FOREIGN_TOPIC
"""
import json
import sys
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

host, port, username, password, own_topic, foreign_topic = sys.argv[1:7]
result = {}
connected = threading.Event()
acks = {}
acked = threading.Condition()
subscribed = threading.Event()


def on_connect(client, userdata, flags, reason_code, properties):
    result["connack"] = reason_code.value
    connected.set()


def on_publish(client, userdata, mid, reason_code, properties):
    with acked:
        acks[mid] = reason_code.value
        acked.notify_all()


def on_subscribe(client, userdata, mid, reason_codes, properties):
    result["suback"] = [code.value for code in reason_codes]
    subscribed.set()


client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-v5", protocol=mqtt.MQTTv5)
client.username_pw_set(username, password)
client.on_connect = on_connect
client.on_publish = on_publish
client.on_subscribe = on_subscribe
properties = Properties(PacketTypes.CONNECT)
properties.SessionExpiryInterval = 0
client.connect(host, int(port), keepalive=30, clean_start=True, properties=properties)
client.loop_start()
if not connected.wait(10):
    sys.exit("no CONNACK")
if result["connack"] != 0:
    client.loop_stop()
    print(json.dumps(result))
    sys.exit(0)


def publish(topic, payload):
    info = client.publish(topic, payload, qos=1)
    with acked:
        acked.wait_for(lambda: info.mid in acks, timeout=10)
    return acks[info.mid]


result["accepted"] = publish(own_topic, json.dumps({"value": 21.5}))
result["bad_value"] = publish(own_topic, json.dumps({"value": "warm"}))
result["forbidden"] = publish(foreign_topic, "1")
client.subscribe("metrics/#", qos=1)
if not subscribed.wait(10):
    sys.exit("no SUBACK")
client.disconnect()
client.loop_stop()
print(json.dumps(result))
