#!/usr/bin/env bash
# dashboards_and_rules.sh: the committed Grafana dashboards are what
# dashboards/generate.py writes; each has a stable uid, the Prometheus
# datasource variable on every panel and target, and $__rate_interval in
# every range (no fixed window that breaks at another scrape interval); the
# alert rules pass `promtool check rules` and their unit tests (`promtool
# test rules`), and the provisioning files parse.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
command -v promtool >/dev/null || { echo "FAIL: promtool not found (Debian's prometheus package; scripts/install-deps.sh)"; exit 1; }
/usr/bin/python3 "$root/dashboards/generate.py" --check
promtool check rules "$root/dashboards/rules/interlace.rules.yaml"
(cd "$root/dashboards/rules" && promtool test rules interlace.rules.test.yaml)
/usr/bin/python3 - "$root" <<'PY'
import glob, json, re, sys
root = sys.argv[1]
failed = []
uids = set()
for path in sorted(glob.glob(f"{root}/dashboards/grafana/*.json")):
    d = json.load(open(path))
    name = path.rsplit("/", 1)[1]
    if not d.get("uid", "").startswith("interlace-") or d["uid"] in uids:
        failed.append(f"{name}: uid {d.get('uid')!r} is not a unique interlace-* uid")
    uids.add(d.get("uid"))
    if not any(v.get("type") == "datasource" and v.get("query") == "prometheus" for v in d["templating"]["list"]):
        failed.append(f"{name}: no Prometheus datasource variable")
    if not d["panels"]:
        failed.append(f"{name}: no panels")
    for p in d["panels"]:
        for where in [p] + p["targets"]:
            if where.get("datasource") != {"type": "prometheus", "uid": "${datasource}"}:
                failed.append(f"{name}: panel '{p['title']}' does not use the datasource variable")
        for t in p["targets"]:
            for window in re.findall(r"\[([^\]]*)\]", t["expr"]):
                if window != "$__rate_interval":
                    failed.append(f"{name}: panel '{p['title']}' uses a fixed window [{window}]")
for f in glob.glob(f"{root}/dashboards/provisioning/*.yaml"):
    text = open(f).read()
    if not text.startswith("#") or "apiVersion: 1" not in text:
        failed.append(f"{f}: not a Grafana provisioning file (apiVersion: 1)")
if len(uids) < 4:
    failed.append(f"expected the 4 dashboards, found {len(uids)}")
for f in failed:
    print("FAIL:", f)
sys.exit(1 if failed else 0)
PY
echo "dashboards and rules: ok"
