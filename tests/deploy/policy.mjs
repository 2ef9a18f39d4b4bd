// node policy.mjs RENDERED.yaml ...: what deploy/README.md promises of every
// workload: each container has startup, readiness and liveness probes, CPU
// and memory requests and limits, runs as non-root with a read-only root
// filesystem, no privilege escalation and no capabilities; each workload
// has a PodDisruptionBudget selecting it; each namespace has a default-deny
// ingress NetworkPolicy; a GPU runner asks for nvidia.com/gpu in its limits.
import fs from "node:fs";
import yaml from "js-yaml";

const failures = [];
for (const file of process.argv.slice(2)) {
  const objects = [];
  for (const obj of yaml.loadAll(fs.readFileSync(file, "utf8"))) if (obj) objects.push(obj);
  const fail = (obj, what) => failures.push(`${file}: ${obj.kind} ${obj.metadata.name}: ${what}`);
  const workloads = objects.filter((o) => ["Deployment", "StatefulSet", "DaemonSet"].includes(o.kind));
  if (workloads.length === 0) failures.push(`${file}: no workloads`);
  for (const w of workloads) {
    const pod = w.spec.template.spec;
    if (pod.securityContext?.runAsNonRoot !== true) fail(w, "pod securityContext.runAsNonRoot is not true");
    if (pod.securityContext?.seccompProfile?.type !== "RuntimeDefault") fail(w, "no RuntimeDefault seccomp profile");
    for (const c of pod.containers) {
      for (const probe of ["startupProbe", "readinessProbe", "livenessProbe"])
        if (!c[probe]) fail(w, `container ${c.name} has no ${probe}`);
      for (const side of ["requests", "limits"])
        for (const r of ["cpu", "memory"])
          if (!c.resources?.[side]?.[r]) fail(w, `container ${c.name} has no ${r} ${side}`);
      const sc = c.securityContext ?? {};
      if (sc.allowPrivilegeEscalation !== false) fail(w, `container ${c.name} may escalate privileges`);
      if (sc.readOnlyRootFilesystem !== true) fail(w, `container ${c.name} has a writable root filesystem`);
      if (!(sc.capabilities?.drop ?? []).includes("ALL")) fail(w, `container ${c.name} keeps capabilities`);
      if (sc.privileged) fail(w, `container ${c.name} is privileged`);
    }
    const podLabels = w.spec.template.metadata?.labels ?? {};
    const budget = objects.find((o) => o.kind === "PodDisruptionBudget" &&
      Object.entries(o.spec.selector.matchLabels ?? {}).every(([k, v]) => podLabels[k] === v));
    if (!budget) fail(w, "no PodDisruptionBudget selects its pods");
    if (file.includes("gpu") && w.metadata.name === "interlace-runner" &&
        !w.spec.template.spec.containers[0].resources.limits["nvidia.com/gpu"])
      fail(w, "a GPU overlay's runner has no nvidia.com/gpu limit");
  }
  const denies = objects.filter((o) => o.kind === "NetworkPolicy" && Object.keys(o.spec.podSelector).length === 0 &&
    o.spec.policyTypes.includes("Ingress") && !o.spec.ingress);
  if (denies.length === 0) failures.push(`${file}: no default-deny ingress NetworkPolicy`);
}
for (const f of failures) console.log("FAIL:", f);
console.log(`policy: ${failures.length} problems`);
process.exit(failures.length ? 1 : 0);
