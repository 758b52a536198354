#!/usr/bin/env bash
# Do two builds write the same files? For refactorings that must not change a result: runs one
# list of commands with each binary, on the CPU, into two directories, and compares every file
# they wrote — CSV and JSON without their timing fields (elapsed_s, seconds, finished_unix,
# command, and cpu_kernels, which older builds lack), workbooks by their sheets, TensorBoard
# event files by their events without wall times and timing values (the n-th file of a
# directory against the n-th), everything else byte for byte. Prints the count of files
# compared and lists those that differ.
#
#   scripts/same-outputs.sh OLD_BIN NEW_BIN [--quick]
#
# The commands: the default run, each engine of each experiment, both committed sweeps and
# every command of scripts/exercises.sh (with --quick, dropout runs of 2 epochs and 2 seeds:
# the same code paths in minutes instead of an hour).
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 OLD_BIN NEW_BIN [--quick]" >&2; exit 2; }
old=$(realpath "$1"); new=$(realpath "$2"); quick=${3:-}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
if [ "$quick" = --quick ]; then ep=(--epochs 2); ep30=(--epochs 3); seeds=0,1; else ep=(); ep30=(--epochs 30); seeds=0,1,2; fi
commands=(
  ""
  "weight-decay --engine fused --wd 0,3,1"
  "weight-decay --impl concise --optimizer sgd,adam,adamw --penalty l2,l1 --n-val 50"
  "dropout --engine fused ${ep[*]}"
  "dropout --impl concise --save-weights --track-activations --mc-samples 3 ${ep[*]}"
  "sweep weight-decay --wd 0,0.1,0.3,1,3,10,30,100 --optimizer sgd,adam,adamw --n-val 100 --seeds 0,1,2"
  "sweep weight-decay --wd 0,0.1,0.3,1,3,10,30 --penalty l2,l1,l1-prox --impl scratch --seeds 0,1,2"
  "sweep dropout --engine fused --dropout1 0,0.2,0.5 --dropout2 0,0.5,0.8 --seeds $seeds ${ep[*]}"
  "sweep dropout --engine fused --impl concise --dropout1 0,0.2,0.5 --dropout2 0,0.5 --wd 0,0.0001,0.001 --seeds $seeds ${ep[*]}"
  "sweep dropout --impl concise --noise bernoulli,gaussian,dropconnect --seeds $seeds ${ep[*]}"
  "sweep dropout --impl concise --noise bernoulli,gaussian,dropconnect --seeds $seeds ${ep30[*]}"
  "sweep dropout --impl concise --dropout1 0 --dropout2 0 --input-noise 0.3 --seeds $seeds ${ep[*]}"
  "sweep dropout --impl concise --mc-samples 20 --seeds $seeds ${ep[*]}"
  "sweep dropout --impl concise --dropout1 0,0.2 --dropout2 0,0.5 --track-activations --seeds $seeds ${ep[*]}"
  "dropout --impl both --dropout1 0,0.2 --dropout2 0,0.5 --track-activations --noise bernoulli,gaussian --wd 0,0.001 ${ep[*]}"
)
for side in old new; do
  bin=$old; [ $side = new ] && bin=$new
  for i in "${!commands[@]}"; do
    # shellcheck disable=SC2086
    "$bin" --device cpu --quiet --out "$work/$side/$i" ${commands[$i]} >"$work/$side-$i.stdout" 2>/dev/null \
      || { echo "$side: '${commands[$i]}' failed" >&2; exit 1; }
  done
done
python3 - "$work" <<'EOF'
import csv, io, json, os, sys, zipfile
work = sys.argv[1]
VOLATILE = {"elapsed_s", "seconds", "finished_unix", "command", "cpu_kernels"}
def csv_rows(path):
    rows = list(csv.reader(open(path, newline="")))
    keep = [i for i, c in enumerate(rows[0]) if c not in VOLATILE] if rows else []
    return [[r[i] for i in keep if i < len(r)] for r in rows]
def strip(v):
    if isinstance(v, dict):
        return {k: strip(x) for k, x in v.items() if k not in VOLATILE}
    if isinstance(v, list):
        return [strip(x) for x in v]
    return v
def sheets(path):
    """A workbook as its parts: each sheet's cell values (shared strings resolved) without the
    volatile columns (header row) and volatile keys (the run sheet), everything else as bytes."""
    import re
    from xml.etree import ElementTree as ET
    ns = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        strings = []
        if "xl/sharedStrings.xml" in names:
            for si in ET.fromstring(z.read("xl/sharedStrings.xml")).iter(ns + "si"):
                strings.append("".join(t.text or "" for t in si.iter(ns + "t")))
        parts = {}
        for n in names:
            if n == "xl/sharedStrings.xml" or "docProps" in n or not n.startswith("xl/"):
                continue
            if not re.match(r"xl/worksheets/sheet\d+\.xml$", n):
                parts[n] = z.read(n)
                continue
            grid = {}
            for c in ET.fromstring(z.read(n)).iter(ns + "c"):
                m = re.match(r"([A-Z]+)(\d+)$", c.get("r"))
                v = c.find(ns + "v")
                t = c.find(ns + "is")
                if c.get("t") == "s" and v is not None:
                    val = strings[int(v.text)]
                elif t is not None:
                    val = "".join(x.text or "" for x in t.iter(ns + "t"))
                else:
                    val = v.text if v is not None else None
                grid.setdefault(int(m.group(2)), {})[m.group(1)] = val
            header = grid.get(1, {})
            drop = {col for col, v in header.items() if v in VOLATILE}
            rows = []
            for r in sorted(grid):
                row = grid[r]
                if header.get("A") == "key" and (row.get("A") or "").split(".")[0] in VOLATILE:
                    continue
                rows.append(sorted((c, v) for c, v in row.items() if c not in drop))
            parts[n] = rows
        return parts
def fields(msg):
    """A protobuf message's fields as (number, wire type, raw value) in order."""
    out, at = [], 0
    def varint():
        nonlocal at
        v, shift = 0, 0
        while True:
            b = msg[at]; at += 1
            v |= (b & 0x7F) << shift; shift += 7
            if b < 0x80:
                return v
    while at < len(msg):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            start = at; varint(); value = msg[start:at]
        elif wire == 1:
            value = msg[at : at + 8]; at += 8
        elif wire == 5:
            value = msg[at : at + 4]; at += 4
        else:  # length-delimited
            n = varint(); value = msg[at : at + n]; at += n
        out.append((number, wire, value))
    return out
def events(path):
    """A TensorBoard event file as its events, each without its wall_time (an Event's field 1)
    and without the summary values of the volatile figures (a Summary's values, field 1 of
    field 5, whose tag, their field 1, is a VOLATILE name)."""
    import struct
    data, records, at = open(path, "rb").read(), [], 0
    while at < len(data):
        (n,) = struct.unpack_from("<Q", data, at)
        event = []
        for number, wire, value in fields(data[at + 12 : at + 12 + n]):
            if number == 1:
                continue
            if number == 5:
                value = [v for v in fields(value)
                         if not any(t == 1 and x.decode(errors="replace") in VOLATILE
                                    for t, _, x in fields(v[2]))]
            event.append((number, wire, value))
        records.append(event)
        at += 12 + n + 4
    return records
def same(a, b):
    if ".tfevents." in a:
        return events(a) == events(b)
    if a.endswith(".csv"):
        return csv_rows(a) == csv_rows(b)
    if a.endswith(".json"):
        return strip(json.load(open(a))) == strip(json.load(open(b)))
    if a.endswith(".xlsx"):
        return sheets(a) == sheets(b)
    return open(a, "rb").read() == open(b, "rb").read()
compared, differing = 0, []
old_root, new_root = os.path.join(work, "old"), os.path.join(work, "new")
# An event file's name holds the time and process it was written by: within a directory, the
# n-th event file of one side is compared with the n-th of the other.
def outputs(root):
    found = {}
    for d, _, fs in os.walk(root):
        ev = sorted(f for f in fs if ".tfevents." in f)
        for f in fs:
            # Lock files (empty of results) are not outputs.
            if ".lock" in f:
                continue
            name = f"events.out.tfevents[{ev.index(f)}]" if f in ev else f
            found[os.path.relpath(os.path.join(d, name), root)] = os.path.join(d, f)
    return found
old_files, new_files = outputs(old_root), outputs(new_root)
files = set(old_files) | set(new_files)
for f in sorted(files):
    a, b = old_files.get(f, "/nonexistent"), new_files.get(f, "/nonexistent")
    compared += 1
    if not (os.path.exists(a) and os.path.exists(b)):
        differing.append(f + (" (old only)" if os.path.exists(a) else " (new only)"))
    elif not same(a, b):
        differing.append(f)
stdouts = sorted(n for n in os.listdir(work) if n.startswith("old-"))
for n in stdouts:
    compared += 1
    # The printed paths name each side's own directory.
    a = open(os.path.join(work, n), "rb").read().replace((old_root + "/").encode(), b"OUT/")
    b = open(os.path.join(work, "new-" + n[4:]), "rb").read().replace((new_root + "/").encode(), b"OUT/")
    if a != b:
        differing.append("stdout of command " + n[4:-7])
print(f"{compared} files compared (outputs and printed results), {len(differing)} differ")
for f in differing:
    print("  differs:", f)
sys.exit(1 if differing else 0)
EOF
