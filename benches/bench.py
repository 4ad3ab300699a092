#!/usr/bin/env python3
"""The sov build benchmark: numbers, not a pass/fail test.

Run it through benches/build.sh, which builds the release binary first:

    benches/build.sh [SITES] [HOSTS] [RUNS] [options]

It generates a synthetic stack (benches/stackgen.py) in a temporary
directory and measures the release binary, each as the median of RUNS runs:
a cold build into an empty state directory (and its peak RSS), a no-op
rebuild, and rebuilds after editing one site (one host moved to another
address; one DNS record added), with how many artifacts each re-rendered.

Then, side by side, nix-build (Nix 2.8, single-user, a private store in the
temporary directory, no daemon, no sandbox, no substituters) builds the same
artifacts as one derivation each: the derivation's source is the artifact's
bytes as sov wrote them and its builder copies them to $out, so Nix does its
per-artifact work (hash the input into the store, instantiate the .drv,
schedule and run a builder, register the output) but none of sov's rendering
or packing. Manifests depend on the artifacts they list and activation
scripts on the host's other artifacts, as in sov. Nix 2.8's build time grows
faster than linearly with the number of derivations, so Nix runs at a smaller
scale (--nix-sites, default 10 sites), sov is measured again at that same
scale, and the ratios compare equal scales; nothing is extrapolated.

Every process runs under GNU time (/usr/bin/time -v) for its peak RSS and
CPU time (user + system); wall time is measured around it.

Only the Python 3 standard library is used.
"""

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.dont_write_bytecode = True  # leave no __pycache__ in benches/
sys.path.insert(0, str(Path(__file__).resolve().parent))
import stackgen  # noqa: E402

TARGETS = {"cold": 3.0, "noop": 0.3, "rss": 500.0}  # seconds, seconds, MB (100 x 20)


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def rmtree(path):
    """Removes a tree, including Nix's read-only store directories."""
    path = Path(path)
    if not path.exists():
        return
    subprocess.run(["chmod", "-R", "u+w", str(path)], check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shutil.rmtree(path)


class Failed(Exception):
    pass


class Sample:
    """One timed process: wall seconds, CPU seconds (user + system), peak RSS
    in MB, and its stderr."""

    def __init__(self, wall, cpu, rss, stderr):
        self.wall, self.cpu, self.rss, self.stderr = wall, cpu, rss, stderr


def run(cmd, time_file, *, env=None, cwd=None, stdout=None):
    out = open(stdout, "wb") if stdout else subprocess.DEVNULL
    try:
        start = time.perf_counter()
        proc = subprocess.run(["/usr/bin/time", "-v", "-o", str(time_file)] + cmd,
                              env=env, cwd=cwd, stdout=out, stderr=subprocess.PIPE)
        wall = time.perf_counter() - start
    finally:
        if stdout:
            out.close()
    err = proc.stderr.decode(errors="replace")
    if proc.returncode != 0:
        raise Failed(f"`{' '.join(map(str, cmd))}` exited with {proc.returncode}:\n{err[-4000:]}")
    text = Path(time_file).read_text()

    def field(name):
        m = re.search(re.escape(name) + r": ([0-9.]+)", text)
        return float(m.group(1)) if m else float("nan")

    cpu = field("User time (seconds)") + field("System time (seconds)")
    rss = field("Maximum resident set size (kbytes)") / 1024
    return Sample(wall, cpu, rss, err)


class Series:
    """Samples of one measurement and what each build did."""

    def __init__(self):
        self.samples = []
        self.counts = []  # per sample: rendered, new objects or derivations built

    def add(self, sample, *counts):
        self.samples.append(sample)
        self.counts.append(counts)

    def values(self, attr):
        return [getattr(s, attr) for s in self.samples]

    def median(self, attr="wall"):
        v = self.values(attr)
        return statistics.median(v) if v else float("nan")

    def min(self, attr="wall"):
        return min(self.values(attr), default=float("nan"))

    def max(self, attr="wall"):
        return max(self.values(attr), default=float("nan"))

    def count(self, i):
        """The i-th count over the runs: `n` or `lo-hi`."""
        values = [c[i] for c in self.counts]
        if not values:
            return "-"
        lo, hi = min(values), max(values)
        return f"{lo}" if lo == hi else f"{lo}-{hi}"

    def __len__(self):
        return len(self.samples)


def plural(n, word):
    return f"{n} {word}" + ("" if n == 1 else "s")


def secs(x):
    if x != x:  # NaN
        return "-"
    if x < 1:
        return f"{x * 1000:.0f} ms"
    return f"{x:.2f} s"


def mb(x):
    return "-" if x != x else f"{x:.0f} MB"


# ---- sov --------------------------------------------------------------------


class Sov:
    def __init__(self, binary, root, state, work):
        self.binary = binary
        self.root = Path(root)
        self.state = Path(state)
        self.work = Path(work)
        self.n = 0
        self.objects = 0

    def command(self):
        return [str(self.binary), "--root", str(self.root), "--state", str(self.state),
                "build", "--json"]

    def build(self):
        """One `sov build --json`: (sample, report). The report gets
        "new_objects": how many store objects the build added."""
        self.n += 1
        out = self.work / f"sov-{self.n}.json"
        try:
            sample = run(self.command(), self.work / f"sov-{self.n}.time", stdout=out)
        except Failed as e:
            raise Failed(f"sov build failed (stack in {self.root}):\n{e}") from None
        report = json.loads(out.read_text())
        objects, _ = store_objects(self.state)
        report["new_objects"] = objects - self.objects
        self.objects = objects
        return sample, report

    def reset(self):
        rmtree(self.state)
        self.objects = 0


def rendered(report):
    return sum(s["rendered"] for s in report["sites"])


def artifact_count(report):
    return sum(len(s["artifacts"]) for s in report["sites"])


def store_objects(state):
    store = Path(state) / "store"
    files = [p for p in store.iterdir() if not p.name.startswith(".tmp-")]
    return len(files), sum(p.stat().st_size for p in files)


def snapshot(report, state, only=None):
    """Every store object of each site's generation: site -> list of
    [name, path, kind, deps], deps being names in the same list."""
    store = Path(state) / "store"
    out = {}
    for site in report["sites"]:
        if only is not None and site["name"] != only:
            continue
        entries = []
        by_object = {}
        for a in site["artifacts"]:
            path = Path(a["path"])
            by_object[path.name] = a["name"]
            entries.append([a["name"], path, a["kind"], []])
        index = {e[0]: e for e in entries}
        site_manifest = json.loads(Path(site["manifest"]).read_text())
        host_manifests = []
        for h in site_manifest["hosts"]:
            path = store / h["manifest"]
            manifest = json.loads(path.read_text())
            deps = [by_object[a["object"]] for a in manifest["artifacts"]]
            activation = by_object[manifest["activate"]]
            # The activation script names the host's other artifacts by hash.
            index[activation][3] = [d for d in deps if d != activation]
            name = h["manifest"].split("-", 1)[1]
            host_manifests.append([name, path, "manifest", deps])
        entries += host_manifests
        top = [by_object[a["object"]] for a in site_manifest["artifacts"]]
        top += [m[0] for m in host_manifests]
        entries.append([Path(site["manifest"]).name.split("-", 1)[1], Path(site["manifest"]),
                        "manifest", top])
        out[site["name"]] = entries
    return out


# ---- nix --------------------------------------------------------------------

NIX_NAME = re.compile(r"[^A-Za-z0-9._+-]")


def nix_name(name):
    return NIX_NAME.sub("_", name).lstrip(".") or "artifact"


class Nix:
    """A private single-user Nix store under `dir`, and an expression tree
    with one derivation per sov store object."""

    def __init__(self, dir):
        self.dir = Path(dir)
        self.root = self.dir / "root"
        self.expr = self.dir / "expr"
        self.n = 0

    def env(self):
        r = self.root
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C",
            "HOME": str(r / "home"),
            "TMPDIR": str(r / "tmp"),
            "XDG_CACHE_HOME": str(r / "cache"),
            "XDG_CONFIG_HOME": str(r / "config"),
            "XDG_DATA_HOME": str(r / "data"),
            "NIX_STORE_DIR": str(r / "store"),
            "NIX_STATE_DIR": str(r / "var"),
            "NIX_LOG_DIR": str(r / "log"),
            "NIX_CONF_DIR": str(r / "etc"),
            "NIX_REMOTE": "",
        }

    def env_text(self):
        keep = ["NIX_STORE_DIR", "NIX_STATE_DIR", "NIX_LOG_DIR", "NIX_CONF_DIR", "HOME", "TMPDIR"]
        return " ".join(f"{k}={self.env()[k]}" for k in keep)

    def reset(self):
        rmtree(self.root)
        for d in ("home", "tmp", "cache", "config", "data", "etc"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        (self.root / "etc" / "nix.conf").write_text(
            "# Private single-user store for the sov benchmark: no daemon, no\n"
            "# network, builders run unsandboxed as the invoking user.\n"
            "sandbox = false\n"
            "substituters =\n"
            "build-users-group =\n"
            "max-jobs = auto\n"
        )

    def write_site(self, site, entries):
        """Copies the site's objects into the expression tree and writes its .nix file."""
        src = self.expr / "src" / site
        src.mkdir(parents=True, exist_ok=True)
        lets = []
        names = {}
        for i, (name, path, kind, deps) in enumerate(entries):
            names[name] = f"a{i}"
        for i, (name, path, kind, deps) in enumerate(entries):
            file = nix_name(name)
            shutil.copyfile(path, src / file)
            dep_vars = " ".join(names[d] for d in deps)
            lets.append(f"  a{i} = art {json.dumps(file)} ../src/{site}/{file} [ {dep_vars} ];"
                        f"  # {kind}")
        text = ("# Generated by benches/bench.py: one derivation per sov store object.\n"
                "{ art }:\nlet\n" + "\n".join(lets) + "\nin [ " + " ".join(names.values()) + " ]\n")
        path = self.expr / "sites" / f"{site}.nix"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)

    def write(self, snap):
        for site, entries in snap.items():
            self.write_site(site, entries)
        imports = "\n".join(f"    (import ./sites/{s}.nix {{ inherit art; }})" for s in snap)
        (self.expr / "default.nix").write_text(
            "# Generated by benches/bench.py from a sov build: each derivation's\n"
            "# builder writes the bytes sov produced for one artifact.\n"
            "let\n"
            "  system = builtins.currentSystem;\n"
            "  art = name: src: deps: derivation {\n"
            "    inherit name system src deps;\n"
            '    builder = "/bin/sh";\n'
            '    args = [ "-c" "/bin/cp \\"$src\\" \\"$out\\"" ];\n'
            "  };\n"
            "in builtins.concatLists [\n" + imports + "\n  ]\n"
        )

    def command(self):
        return ["nix-build", "--no-out-link", str(self.expr / "default.nix")]

    def build(self):
        """One nix-build: (sample, derivations built, file of output paths)."""
        self.n += 1
        out = self.dir / f"nix-{self.n}.out"
        sample = run(self.command(), self.dir / f"nix-{self.n}.time", env=self.env(),
                     cwd=self.dir, stdout=out)
        m = re.search(r"these (\d+) derivations will be built", sample.stderr)
        built = int(m.group(1)) if m else int("this derivation will be built" in sample.stderr)
        return sample, built, out


def nix_version():
    try:
        return subprocess.run(["nix-build", "--version"], capture_output=True,
                              text=True).stdout.strip() or None
    except OSError:
        return None


# ---- the measurements ---------------------------------------------------------


def measure_sov(sov, runs, sites, hosts, site0, label, edit_host):
    """Cold builds, no-op rebuilds and one-site edits of the stack at sov.root.
    Counts per sample: (rendered, new store objects)."""
    r = {"shape": (sites, hosts), "cold": Series(), "noop": Series(), "edit": Series(),
         "record": Series(), "edit_reports": []}
    for k in range(runs):
        sov.reset()
        sample, report = sov.build()
        r["cold"].add(sample, rendered(report), report["new_objects"])
        r["cold_report"] = report
        log(f"{label}: cold build {k + 1}/{runs}: {secs(sample.wall)} "
            f"(cpu {secs(sample.cpu)}), peak RSS {mb(sample.rss)}")
    r["artifacts"] = artifact_count(r["cold_report"])
    r["objects"], r["store_bytes"] = store_objects(sov.state)
    for k in range(runs):
        sample, report = sov.build()
        r["noop"].add(sample, rendered(report), report["new_objects"])
        log(f"{label}: no-op rebuild {k + 1}/{runs}: {secs(sample.wall)} "
            f"(cpu {secs(sample.cpu)}), {rendered(report)} rendered")

    site_file = sov.root / "sites" / f"{site0}.toml"
    pristine = site_file.read_text()
    edit_runs = min(runs, len(stackgen.EDIT_OCTETS))
    for k in range(edit_runs):
        octet = stackgen.EDIT_OCTETS[k]
        site_file.write_text(stackgen.site_toml(0, sites, hosts, ip_edit=(edit_host, octet)))
        sample, report = sov.build()
        r["edit"].add(sample, rendered(report), report["new_objects"])
        r["edit_reports"].append(report)
        log(f"{label}: edit {k + 1}/{edit_runs} ({edit_host} -> .{octet}): {secs(sample.wall)} "
            f"(cpu {secs(sample.cpu)}), {rendered(report)} rendered, "
            f"{report['new_objects']} new store objects")
    records = []
    last_ip = (edit_host, stackgen.EDIT_OCTETS[edit_runs - 1])
    for k in range(edit_runs):
        records.append(("internal", f"bench{k}", "A", f"192.0.2.{10 + k}"))
        site_file.write_text(stackgen.site_toml(0, sites, hosts, ip_edit=last_ip,
                                                extra_records=records))
        sample, report = sov.build()
        r["record"].add(sample, rendered(report), report["new_objects"])
        log(f"{label}: add record {k + 1}/{edit_runs}: {secs(sample.wall)} "
            f"(cpu {secs(sample.cpu)}), {rendered(report)} rendered")
    site_file.write_text(pristine)
    return r


def measure_nix(nix, sov_result, sov_state, site0, runs, cold_runs):
    """The same artifacts through nix-build. Counts per sample: (built,)."""
    r = {"cold": Series(), "noop": Series(), "edit": Series()}
    base = snapshot(sov_result["cold_report"], sov_state)
    r["derivations"] = sum(len(v) for v in base.values())
    nix.write(base)
    for k in range(cold_runs):
        nix.reset()
        sample, built, out = nix.build()
        r["cold"].add(sample, built)
        log(f"nix: cold build {k + 1}/{cold_runs}: {secs(sample.wall)} "
            f"(cpu {secs(sample.cpu)}), {built} derivations built")
    # The same bytes as sov's: every output against the object it copies.
    outputs = [Path(line) for line in out.read_text().split()]
    sources = [e[1] for entries in base.values() for e in entries]
    r["identical"] = len(outputs) == len(sources) and all(o.is_file() for o in outputs) and sorted(
        o.read_bytes() for o in outputs) == sorted(p.read_bytes() for p in sources)
    for k in range(runs):
        sample, built, _ = nix.build()
        r["noop"].add(sample, built)
        log(f"nix: no-op rebuild {k + 1}/{runs}: {secs(sample.wall)} "
            f"(cpu {secs(sample.cpu)}), {built} derivations built")
    for k, report in enumerate(sov_result["edit_reports"]):
        for site, entries in snapshot(report, sov_state, only=site0).items():
            nix.write_site(site, entries)
        sample, built, _ = nix.build()
        r["edit"].add(sample, built)
        log(f"nix: edit {k + 1}/{len(sov_result['edit_reports'])}: {secs(sample.wall)} "
            f"(cpu {secs(sample.cpu)}), {built} derivations built")
    return r


# ---- the report ---------------------------------------------------------------


def table(rows, header):
    widths = [max(len(str(row[i])) for row in [header] + rows) for i in range(len(header))]

    def line(row):
        cells = [str(c).ljust(w) if i == 0 else str(c).rjust(w)
                 for i, (c, w) in enumerate(zip(row, widths))]
        return "  ".join(cells).rstrip()

    out = [line(header), line(["-" * w for w in widths])] + [line(row) for row in rows]
    return "\n".join("  " + l for l in out)


def met(value, target):
    return "-" if value != value else ("yes" if value < target else "NO")


def git_describe(repo):
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--", "builder"],
                               capture_output=True, text=True).stdout.strip()
        return (head or "?") + (" + uncommitted changes in builder/" if dirty else "")
    except OSError:
        return "?"


def sov_table(res, site0, edit_host, targets):
    def row(name, series, counts=True, target=None, target_text=""):
        return [name, secs(series.median()), secs(series.min()), secs(series.max()),
                secs(series.median("cpu")), len(series),
                f"{series.count(0)} / {series.count(1)}" if counts else "",
                target_text, met(series.median(), target) if target else ""]

    rows = [
        row("cold build (empty state)", res["cold"], target=targets and TARGETS["cold"],
            target_text=targets and f"< {TARGETS['cold']:g} s" or ""),
        row("no-op rebuild", res["noop"], target=targets and TARGETS["noop"],
            target_text=targets and f"< {TARGETS['noop']:g} s" or ""),
        row(f"edit {site0}: move host {edit_host}", res["edit"]),
        row(f"edit {site0}: add a DNS record", res["record"]),
    ]
    cold = res["cold"]
    rows.append(["peak RSS, cold build", mb(cold.median("rss")), mb(cold.min("rss")),
                 mb(cold.max("rss")), "", len(cold), "",
                 targets and f"< {TARGETS['rss']:g} MB" or "",
                 met(cold.median("rss"), TARGETS["rss"]) if targets else ""])
    header = ["measurement", "median", "min", "max", "cpu", "runs", "rendered / new objects"]
    if targets:
        header += ["target", "met"]
    else:
        rows = [r[:len(header)] for r in rows]
    return table(rows, header)


def report(args, res, small, nixres, sov, nix, edit_host, site0, elapsed):
    lines = [
        f"sov build benchmark: {args.sites} sites x {args.hosts} hosts, "
        f"{plural(args.runs, 'run')} per measurement",
        f"machine: {os.cpu_count()} cores, {platform.system()} {platform.release()}; "
        f"sov {git_describe(args.repo)}; {nix_version() or 'nix: not installed'}",
        f"stack: {args.sites * args.hosts} hosts; a cold build makes {res['artifacts']} artifacts, "
        f"{res['objects']} store objects with the manifests, {res['store_bytes'] / 1e6:.0f} MB",
        "",
        f"sov, {args.sites} x {args.hosts} (wall time median, min, max; cpu = median user+system):",
    ]
    full_scale = (args.sites, args.hosts) == (100, 20)
    lines.append(sov_table(res, site0, edit_host, targets=True))
    lines.append('  rendered: sum of "rendered" in --json; new objects: store objects the build')
    lines.append("  added, manifests included")
    if not full_scale:
        lines.append("  (the targets are for 100 x 20; this run is at another scale)")
    lines.append("")

    if nixres is not None:
        n_sites, hosts = small["shape"]
        small_site0 = stackgen.site_name(0, n_sites)
        if (n_sites, hosts) != (args.sites, args.hosts):
            lines.append(f"sov again at the nix comparison's scale, {n_sites} x {hosts}:")
            lines.append(sov_table(small, small_site0, edit_host, targets=False))
            lines.append("")
        lines.append(f"sov vs nix-build at {n_sites} x {hosts}: {nixres['derivations']} store objects "
                     f"= {nixres['derivations']} derivations; nix outputs byte-identical to sov's: "
                     f"{'yes' if nixres['identical'] else 'NO'}")

        def both(name, a, b, attr="wall", fmt=secs, counts=""):
            ratio = b.median(attr) / a.median(attr) if a.median(attr) > 0 else float("nan")
            return [name, f"{fmt(a.median(attr))} [{fmt(a.min(attr))}-{fmt(a.max(attr))}]",
                    f"{fmt(b.median(attr))} [{fmt(b.min(attr))}-{fmt(b.max(attr))}]",
                    "-" if ratio != ratio else f"{ratio:.1f}x", counts]

        rows = [
            both("cold build", small["cold"], nixres["cold"],
                 counts=f"{small['cold'].count(1)} / {nixres['cold'].count(0)}"),
            both("  cpu (user+system)", small["cold"], nixres["cold"], attr="cpu"),
            both("no-op rebuild", small["noop"], nixres["noop"],
                 counts=f"{small['noop'].count(1)} / {nixres['noop'].count(0)}"),
            both("  cpu (user+system)", small["noop"], nixres["noop"], attr="cpu"),
            both(f"edit {small_site0}: move host {edit_host}", small["edit"], nixres["edit"],
                 counts=f"{small['edit'].count(1)} / {nixres['edit'].count(0)}"),
            both("  cpu (user+system)", small["edit"], nixres["edit"], attr="cpu"),
            both("peak RSS, cold build", small["cold"], nixres["cold"], attr="rss", fmt=mb),
        ]
        lines.append(table(rows, ["measurement", "sov median [min-max]",
                                  "nix-build median [min-max]", "nix/sov",
                                  "new objects (sov) / built (nix)"]))
        lines += [
            f"  runs: sov {args.runs} of each; nix {len(nixres['cold'])} cold, "
            f"{len(nixres['noop'])} no-op, {plural(len(nixres['edit']), 'edit')}",
            "  Nix's builders only copy sov's bytes (no rendering or packing): its times are a",
            "  floor for Nix doing this job. Nix is input-addressed, so it also rebuilds a",
            "  derivation whose dependency changed even when its bytes do not.",
            "",
        ]

    lines.append("commands (wall time measured around `/usr/bin/time -v <command>`):")
    lines.append(f"  sov:  {' '.join(sov.command())} > out.json")
    lines.append("        cold: the state directory removed before each run")
    lines.append(f"        edits: sites/{site0}.toml rewritten with host {edit_host} at a new address "
                 f"each run (.{stackgen.EDIT_OCTETS[0]}, .{stackgen.EDIT_OCTETS[1]}, ...), "
                 "then with one more internal A record each run")
    if nix is not None:
        lines.append(f"  nix:  {nix.env_text()} \\")
        lines.append(f"        {' '.join(nix.command())}")
        lines.append("        nix.conf: sandbox = false, substituters =, build-users-group =, "
                     "max-jobs = auto")
        lines.append("        cold: the private store removed before each run")
    lines.append(f"benchmark wall time: {elapsed:.0f} s; load average at the end: "
                 + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sites", type=int, nargs="?", default=100)
    ap.add_argument("hosts", type=int, nargs="?", default=20)
    ap.add_argument("runs", type=int, nargs="?", default=5)
    ap.add_argument("--bin", required=True, help="the sov release binary")
    ap.add_argument("--repo", required=True, help="the sov repository (images/, templates/)")
    ap.add_argument("--nix-sites", type=int, default=10,
                    help="sites of the nix comparison (default 10, at most SITES)")
    ap.add_argument("--nix-cold-runs", type=int, default=None,
                    help="nix cold builds (default: min(RUNS, 3))")
    ap.add_argument("--no-nix", action="store_true", help="skip the nix comparison")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    if args.runs < 1:
        raise SystemExit("RUNS must be at least 1")
    if not Path("/usr/bin/time").is_file():
        raise SystemExit("GNU time (/usr/bin/time) is needed: apt-get install time")
    nix_sites = max(1, min(args.sites, args.nix_sites))
    nix_cold_runs = args.nix_cold_runs or min(args.runs, 3)
    do_nix = not args.no_nix
    if do_nix and not nix_version():
        log("nix-build not found: skipping the nix comparison")
        do_nix = False

    work = Path(tempfile.mkdtemp(prefix="sov-bench-"))
    started = time.perf_counter()
    log("load average at the start: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    try:
        binary = work / "sov"
        shutil.copy2(args.bin, binary)  # others may rebuild target/ meanwhile
        edit_host = stackgen.edit_host(args.hosts)
        site0 = stackgen.site_name(0, args.sites)

        log(f"generating {args.sites} sites x {args.hosts} hosts in {work}/stack")
        stackgen.write_stack(work / "stack", args.sites, args.hosts, args.repo)
        sov = Sov(binary, work / "stack", work / "state", work)
        res = measure_sov(sov, args.runs, args.sites, args.hosts, site0,
                          f"sov {args.sites}x{args.hosts}", edit_host)
        small = nixres = nix = None
        if do_nix:
            if nix_sites == args.sites:
                small, small_state, small_site0 = res, sov.state, site0
            else:
                log(f"nix comparison at {nix_sites} sites x {args.hosts} hosts")
                stackgen.write_stack(work / "nixstack", nix_sites, args.hosts, args.repo)
                small_sov = Sov(binary, work / "nixstack", work / "nixstate", work)
                small_site0 = stackgen.site_name(0, nix_sites)
                small = measure_sov(small_sov, args.runs, nix_sites, args.hosts, small_site0,
                                    f"sov {nix_sites}x{args.hosts}", edit_host)
                small_state = small_sov.state
            nix = Nix(work / "nix")
            nixres = measure_nix(nix, small, small_state, small_site0, args.runs, nix_cold_runs)
        elapsed = time.perf_counter() - started
        print(report(args, res, small, nixres, sov, nix, edit_host, site0, elapsed))
    except Failed as e:
        print(f"benchmark failed: {e}", file=sys.stderr)
        sys.exit(1)
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            rmtree(work)


if __name__ == "__main__":
    main()
