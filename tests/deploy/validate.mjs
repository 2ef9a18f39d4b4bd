// node validate.mjs RENDERED.yaml ...: every object validates against the
// Kubernetes API schemas (kubernetes-models; the Prometheus operator's and
// KEDA's CRDs from their @kubernetes-models packages), offline. Exits 1 with
// each object's errors. First checks that the validator rejects a broken
// Deployment, so a validator that accepts anything cannot pass.
import fs from "node:fs";
import yaml from "js-yaml";

const packages = {
  "monitoring.coreos.com": "@kubernetes-models/prometheus-operator",
  "keda.sh": "@kubernetes-models/keda",
};

async function modelFor(apiVersion, kind) {
  const group = apiVersion.includes("/") ? apiVersion.split("/")[0] : "";
  const pkg = packages[group] ?? "kubernetes-models";
  const module = await import(`${pkg}/${apiVersion}/${kind}`);
  return module[kind];
}

async function errorsOf(obj) {
  let Model;
  try {
    Model = await modelFor(obj.apiVersion, obj.kind);
  } catch (e) {
    return [`no schema for ${obj.apiVersion} ${obj.kind} (${e.code ?? e.message})`];
  }
  try {
    new Model(obj).validate();
    return [];
  } catch (e) {
    return [e.message];
  }
}

const broken = {apiVersion: "apps/v1", kind: "Deployment", metadata: {name: "x"},
                spec: {replicas: "two", selector: {}, template: {spec: {containers: [{image: 1}]}}}};
if ((await errorsOf(broken)).length === 0) {
  console.log("FAIL: the validator accepted a broken Deployment");
  process.exit(1);
}

let failed = 0, checked = 0;
for (const file of process.argv.slice(2)) {
  for (const obj of yaml.loadAll(fs.readFileSync(file, "utf8"))) {
    if (!obj) continue;
    ++checked;
    for (const error of await errorsOf(obj)) {
      ++failed;
      console.log(`FAIL: ${file}: ${obj.kind} ${obj.metadata?.name}: ${error}`);
    }
  }
}
console.log(`${checked} objects validated against the API schemas, ${failed} errors`);
process.exit(failed ? 1 : 0);
