#!/usr/bin/python3
"""A rollout worker written from docs/wire-protocol.md and proto/ alone: Python
with pyzmq (Debian's python3-zmq) and the `capnp` tool for the encoding, no
Interlace code. It asks a learner for tasks, sends made-up trajectories (it has
no model: the tokens are a fixed prompt and a reply drawn at random from the
vocabulary, with plausible log-probs), checks each Ack, and exits when the
learner says the job is done.

usage: worker.py RUN_DIR PROTO_DIR
"""
import json
import os
import random
import subprocess
import sys
import time

import zmq

RUN_DIR, PROTO_DIR = sys.argv[1], sys.argv[2]
NAME = "foreign-0"


def encode(schema, type_name, value):
    return subprocess.run(["capnp", "convert", "json:binary", os.path.join(PROTO_DIR, schema), type_name],
                          input=json.dumps(value).encode(), capture_output=True, check=True).stdout


def decode(schema, type_name, frame):
    out = subprocess.run(["capnp", "convert", "binary:json", os.path.join(PROTO_DIR, schema), type_name],
                         input=frame, capture_output=True, check=True).stdout
    return json.loads(out)


def admit_myself():
    """Makes this worker's CURVE key pair and admits it: the public key goes to
    RUN/keys/clients/NAME.pub (the learner knows us by that file's name). The
    learner's public key, RUN/keys/server.pub, is pinned."""
    keys = os.path.join(RUN_DIR, "keys")
    os.makedirs(os.path.join(keys, "clients"), mode=0o700, exist_ok=True)
    public, secret = zmq.curve_keypair()
    with open(os.open(os.path.join(keys, "clients", NAME + ".key"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
              "wb") as f:
        f.write(secret + b"\n")
    tmp = os.path.join(keys, "clients", NAME + ".pub.tmp")
    with open(tmp, "wb") as f:
        f.write(public + b"\n")
    os.rename(tmp, os.path.join(keys, "clients", NAME + ".pub"))
    server = open(os.path.join(keys, "server.pub"), "rb").read().strip()
    return public, secret, server


def wait_for_ports():
    """The learner writes its ports into endpoints.json once it has bound them (0 until then)."""
    while True:
        endpoints = json.load(open(os.path.join(RUN_DIR, "endpoints.json")))
        if endpoints["trajectories"] > 0:
            return endpoints
        time.sleep(0.1)


def main():
    endpoints = wait_for_ports()
    vocab = json.load(open(os.path.join(endpoints["initial_model"], "config.json")))["vocab_size"]
    host = endpoints["host"]
    public, secret, server = admit_myself()
    ctx = zmq.Context()
    sockets = {}
    for port in ("tasks", "trajectories"):
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.CURVE_SERVERKEY, server)
        s.setsockopt(zmq.CURVE_PUBLICKEY, public)
        s.setsockopt(zmq.CURVE_SECRETKEY, secret)
        s.setsockopt(zmq.LINGER, 0)
        s.connect("tcp://%s:%d" % (host, endpoints[port]))
        sockets[port] = s
    incarnation = random.getrandbits(63) | 1
    acked = refused = 0
    deadline = time.time() + 300
    while time.time() < deadline:
        sockets["tasks"].send(encode("heartbeat.capnp", "Heartbeat", {
            "service": NAME, "unixMillis": str(int(time.time() * 1000)), "incarnation": str(incarnation),
            "wantTasks": 2}))
        if not sockets["tasks"].poll(5000):
            continue
        grant = decode("task.capnp", "TaskGrant", sockets["tasks"].recv())
        if grant.get("jobDone"):
            print("foreign worker: job done; %d trajectories acknowledged, %d refused" % (acked, refused))
            return 0 if acked > 0 and refused == 0 else 1
        version = int(grant.get("weightsVersion", "0"))
        for task in grant.get("tasks", []):
            sampling = task.get("sampling", {})
            rng = random.Random(int(sampling.get("seed", "0")))
            for sample in range(task["groupSize"]):
                prompt = [rng.randrange(vocab) for _ in range(5)]
                reply = [rng.randrange(vocab) for _ in range(4)]
                n = len(prompt) + len(reply)
                generated = [i >= len(prompt) for i in range(n)]
                logprobs = [-rng.uniform(0.1, 5.0) if g else 0.0 for g in generated]
                trajectory = {
                    "id": {"job": task["job"], "group": task["group"], "sample": sample,
                           "attempt": task.get("attempt", 0)},
                    "taskSeed": task.get("taskSeed", "0"), "env": task["env"], "worker": NAME,
                    "tokens": prompt + reply, "lossMask": [int(g) for g in generated],
                    "logprobs": logprobs, "sampledLogprobs": logprobs,
                    "versions": [str(version) if g else "-1" for g in generated],
                    "turns": [{"role": "user", "start": 0, "end": len(prompt)},
                              {"role": "assistant", "start": len(prompt), "end": n}],
                    "reward": float(sample % 2), "finishReason": "done",
                }
                sockets["trajectories"].send(encode("trajectory.capnp", "Trajectory", trajectory))
                if not sockets["trajectories"].poll(60000):
                    print("foreign worker: no Ack within 60 s for group %s sample %d" % (task["group"], sample))
                    return 1
                ack = decode("trajectory.capnp", "Ack", sockets["trajectories"].recv())
                if ack.get("accepted"):
                    acked += 1
                else:
                    refused += 1
                    print("foreign worker: refused: %s" % ack.get("reason"))
        time.sleep(0.05)
    print("foreign worker: the job did not end in time")
    return 1


if __name__ == "__main__":
    sys.exit(main())
