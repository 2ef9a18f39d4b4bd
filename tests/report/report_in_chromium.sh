#!/usr/bin/env bash
# report_in_chromium.sh INTERLACE: the run report as a browser shows it. Two
# recorded runs (tests/report/data: the main job's seed 0 and 1 with two
# threads) are reported together and opened in headless Chromium (Debian's
# chromium): the page loads with no console message, its text states each
# run's held-out numbers from summary.json, and the screenshot's charts are
# drawn in both runs' colours (not blank).
set -euo pipefail
bin=$1
here=$(cd "$(dirname "$0")" && pwd)
browser=$(command -v chromium || true)
[[ -n $browser ]] || { echo "FAIL: chromium is not installed (scripts/install-deps.sh installs it)"; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$here/data/run-seed0" "$here/data/run-seed1" "$work/"
"$bin" report "$work/run-seed0" "$work/run-seed1" --out "$work/report.html"
flags=(--headless=new --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$work/profile"
       --enable-logging=stderr --v=0 --window-size=1000,3000)
timeout 120 "$browser" "${flags[@]}" --screenshot="$work/shot.png" "file://$work/report.html" >"$work/shot.log" 2>&1 ||
  { echo "FAIL: chromium could not render the report:"; tail -20 "$work/shot.log"; exit 1; }
timeout 120 "$browser" "${flags[@]}" --dump-dom "file://$work/report.html" >"$work/dom.html" 2>"$work/dom.log" ||
  { echo "FAIL: chromium could not load the report:"; tail -20 "$work/dom.log"; exit 1; }
if grep -h "CONSOLE" "$work/shot.log" "$work/dom.log"; then
  echo "FAIL: the page wrote to the console (above)"; exit 1
fi
/usr/bin/python3 - "$work" <<'PY'
import json, struct, sys, zlib
work = sys.argv[1]
dom = open(f"{work}/dom.html", encoding="utf-8").read()
failed = False
for run in ("run-seed0", "run-seed1"):
    s = json.load(open(f"{work}/{run}/summary.json"))
    for before, after in (("eval_sampled_reward_before", "eval_sampled_reward_after"), ("eval_reward_before", "eval_reward_after")):
        want = f"{s[before]:.3f} \u2192 {s[after]:.3f}"
        if want not in dom:
            print(f"FAIL: the page does not say {want} ({run}: {before}, {after})"); failed = True
    want = f"{s['eval_sampled_change']['mean']:+.3f}"
    if want not in dom:
        print(f"FAIL: the page does not give {run}'s sampled change {want}"); failed = True

def pixels(path):  # RGB(A) 8-bit PNG, as Chromium writes it
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, w = 8, b"", 0
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour in (2, 6), (depth, colour)
            bpp = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw, stride, prev, rows = zlib.decompress(idat), w * bpp, bytearray(w * bpp), []
    for y in range(h):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1: line[i] = (line[i] + a) & 255
            elif f == 2: line[i] = (line[i] + b) & 255
            elif f == 3: line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(line)
        prev = line
    return w, bpp, rows

w, bpp, rows = pixels(f"{work}/shot.png")
def count(rgb):
    n = 0
    for line in rows:
        for x in range(0, len(line), bpp):
            if abs(line[x] - rgb[0]) < 24 and abs(line[x + 1] - rgb[1]) < 24 and abs(line[x + 2] - rgb[2]) < 24:
                n += 1
    return n
for name, rgb in (("first run (blue)", (31, 119, 180)), ("second run (red)", (214, 39, 40))):
    n = count(rgb)
    print(f"{name}: {n} pixels")
    if n < 3000:
        print(f"FAIL: the charts hold almost nothing in the {name}'s colour: blank plots?"); failed = True
sys.exit(1 if failed else 0)
PY
echo "ok: the report loads without console messages, states the numbers and draws both runs"
