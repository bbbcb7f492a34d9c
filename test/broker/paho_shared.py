"""An MQTT 5.0 member of a shared subscription in paho-mqtt 2: prints `SUBACK <codes>` once
subscribed, then the payload of each message it gets, one a line, for SECONDS seconds.

usage: paho_shared.py HOST PORT USERNAME PASSWORD FILTER SECONDS
"""
import sys
import threading

import paho.mqtt.client as mqtt

host, port, username, password, topic_filter, seconds = sys.argv[1:7]
connected = threading.Event()


def on_connect(client, userdata, flags, reason_code, properties):
    connected.set()


def on_subscribe(client, userdata, mid, reason_codes, properties):
    print("SUBACK", ",".join(str(code.value) for code in reason_codes), flush=True)


def on_message(client, userdata, message):
    print(message.payload.decode(), flush=True)


client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-shared", protocol=mqtt.MQTTv5)
client.username_pw_set(username, password)
client.on_connect = on_connect
client.on_subscribe = on_subscribe
client.on_message = on_message
client.connect(host, int(port), keepalive=30, clean_start=True)
client.loop_start()
if not connected.wait(10):
    sys.exit("no CONNACK")
client.subscribe(topic_filter, qos=1)
threading.Event().wait(float(seconds))
client.disconnect()
client.loop_stop()
