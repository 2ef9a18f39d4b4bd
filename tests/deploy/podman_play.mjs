// node podman_play.mjs RENDERED.yaml DATA_DIR REDIS_PORT CONTROLLER_PORT RUNNER_PORT
// Rewrites the rendered local overlay into what podman 4.3's `kube play
// --network host` runs, printing it: every pod on the host's loopback, so
// (1) Services, NetworkPolicies and PodDisruptionBudgets are dropped (podman
// has none of them: this run does not test them); (2) StatefulSets become
// Deployments with their claims as host directories under DATA_DIR; (3) the
// Secret's values and the ConfigMap's go inline and $(VAR) in args is
// expanded (podman does neither), the Redis address becomes 127.0.0.1; (4)
// listen ports move to the given free ones; (5) ports and probes are dropped
// (podman maps no ports on the host network, and runs probes as commands
// inside the container, which has no shell or curl: the test polls the same
// endpoints from outside instead).
import fs from "node:fs";
import yaml from "js-yaml";

const [input, dataDir, redisPort, controllerPort, runnerPort] = process.argv.slice(2);
const all = yaml.loadAll(fs.readFileSync(input, "utf8")).filter(Boolean);
const decoded = (o) => ({...Object.fromEntries(Object.entries(o.data ?? {}).map(([k, v]) =>
  [k, Buffer.from(v, "base64").toString()])), ...(o.stringData ?? {})});
const secrets = Object.fromEntries(all.filter((o) => o.kind === "Secret").map((o) => [o.metadata.name, decoded(o)]));
const configs = Object.fromEntries(all.filter((o) => o.kind === "ConfigMap").map((o) => [o.metadata.name, {...o.data}]));
configs["interlace-defaults"].INTERLACE_REDIS = `127.0.0.1:${redisPort}`;
const listen = {"0.0.0.0:8470": `127.0.0.1:${controllerPort}`, "0.0.0.0:8471": `127.0.0.1:${runnerPort}`};

const out = [];
for (const o of all) {
  if (["Service", "NetworkPolicy", "PodDisruptionBudget", "Secret", "ConfigMap"].includes(o.kind)) continue;
  if (o.kind !== "Deployment" && o.kind !== "StatefulSet") throw new Error(`podman_play: unexpected ${o.kind}`);
  const claims = o.spec.volumeClaimTemplates ?? [];
  const pod = o.spec.template.spec;
  pod.volumes = [...(pod.volumes ?? []), ...claims.map((c) => ({name: c.metadata.name,
    hostPath: {path: `${dataDir}/${o.metadata.name}-${c.metadata.name}`, type: "Directory"}}))];
  const podName = `${o.metadata.name}-0`;
  for (const c of pod.containers) {
    const env = {};
    for (const from of c.envFrom ?? [])
      Object.assign(env, from.configMapRef ? configs[from.configMapRef.name] : secrets[from.secretRef.name]);
    for (const e of c.env ?? []) {
      const ref = e.valueFrom?.secretKeyRef;
      env[e.name] = ref ? secrets[ref.name][ref.key] : e.valueFrom?.fieldRef ? podName : e.value;
    }
    c.env = Object.entries(env).map(([name, value]) => ({name, value: String(value)}));
    delete c.envFrom;
    c.args = c.args.map((a) => listen[a] ?? a.replace(/\$\((\w+)\)/g, (_, v) => env[v]));
    if (c.name === "redis") c.args.push("--port", redisPort, "--bind", "127.0.0.1");
    delete c.ports; delete c.startupProbe; delete c.readinessProbe; delete c.livenessProbe;
  }
  out.push({apiVersion: "apps/v1", kind: "Deployment", metadata: {name: o.metadata.name, labels: o.metadata.labels},
            spec: {replicas: 1, selector: o.spec.selector, template: o.spec.template}});
}
process.stdout.write(out.map((o) => yaml.dump(o)).join("---\n"));
