"""Synthetic stacks for the build benchmark.

`write_stack(root, sites, hosts, repo)` writes a stack of `sites` data
centers with `hosts` hosts each into `root`: sites/stack.toml,
sites/<site>.toml, and copies of the repository's images/ and templates/.

Every site is laid out like the example site fra1 (sites/fra1.toml): four
VLANs (mgmt, servers, dmz, office), a cisco-ios switch, an nftables firewall
host `fw1` that also serves DHCP, one DNS server `ns1`, cluster hosts
`node1..` and, for the rest, VMs running the example's container images
(`www`, `btcpay`, then `www2`, `btcpay2`, ...) spread over the cluster hosts.
Sites come in pairs: an even-numbered primary and the next site as its
mirror in another region, sharing the pair's public domain (as fra1 and
nyc1 share example.org).

The generator is deterministic: the same arguments give the same bytes, and
the first N sites of a bigger stack are byte-identical to a stack of N sites.
"""

import base64
import hashlib
import json
import shutil
from pathlib import Path

# The example's images this generator assigns to hosts.
IMAGES = ("firewall", "dns", "cluster", "www", "btcpay")

REGIONS = [
    ("eu-central", "Frankfurt am Main, Germany"),
    ("us-east", "New York, United States"),
    ("eu-west", "Dublin, Ireland"),
    ("ap-southeast", "Singapore"),
]

# VLAN id, name, third-octet offset, firewall interface, DHCP pool (last octets).
VLANS = [
    (10, "mgmt", 0, "eth1.10", (100, 199)),
    (20, "servers", 1, "eth1.20", (100, 199)),
    (30, "dmz", 2, "eth1.30", (100, 149)),
    (40, "office", 3, "eth1.40", (50, 250)),
]

# Last octets free for reservations in the servers and dmz VLANs: below and
# above the DHCP pools, clear of the gateway (.1) and ns1 (.10).
VM_OCTETS = {
    "servers": [o for o in range(20, 100)] + [o for o in range(200, 255)],
    "dmz": [o for o in range(20, 100)] + [o for o in range(150, 255)],
}
# Octets the one-site edit moves a host to, one per run (kept free by the
# generator, so every edit is new to the derivation cache).
EDIT_OCTETS = list(range(240, 255))

MAX_HOSTS = 250
MAX_SITES = 16384


def q(value):
    """A TOML basic string (JSON string escapes are TOML escapes)."""
    return json.dumps(value)


def qlist(values):
    return "[" + ", ".join(q(v) for v in values) + "]"


def site_name(i, sites):
    width = max(3, len(str(sites - 1)))
    return f"s{i:0{width}d}"


def host_key(seed):
    """A well-formed OpenSSH ed25519 public key line, derived from `seed`."""
    blob = (
        b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20"
        + hashlib.sha256(seed.encode()).digest()
    )
    return "ssh-ed25519 " + base64.b64encode(blob).decode()


def subnet_prefix(i):
    """The first three octets of VLAN k of site i: 10.<i/64>.<(i%64)*4+k>."""
    return lambda k: f"10.{i // 64}.{(i % 64) * 4 + k}"


def plan_hosts(i, hosts):
    """The hosts of site i: dicts with name, vlan, ip, image, vm_on, ..."""
    if hosts < 4:
        raise SystemExit("at least 4 hosts per site (fw1, ns1, node1, www)")
    if hosts > MAX_HOSTS:
        raise SystemExit(f"at most {MAX_HOSTS} hosts per site")
    net = subnet_prefix(i)
    vms = hosts - 2 - max(1, (hosts - 2 + 9) // 10)
    nodes = hosts - 2 - vms
    out = [
        dict(name="fw1", vlan="mgmt", ip=f"{net(0)}.2", image="firewall",
             aliases=["firewall", "dhcp"], oui="00:0d"),
        dict(name="ns1", vlan="servers", ip=f"{net(1)}.10", image="dns",
             aliases=["dns", "resolver"],
             public_names=["ns1" if i % 2 == 0 else "ns2"], oui="3c:ec"),
    ]
    for n in range(1, nodes + 1):
        out.append(dict(name=f"node{n}", vlan="mgmt", ip=f"{net(0)}.{10 + n}",
                        image="cluster", oui="3c:ec"))
    free = {vlan: list(octets) for vlan, octets in VM_OCTETS.items()}
    for vlan in free:
        free[vlan] = [o for o in free[vlan] if o not in EDIT_OCTETS]
    counters = {"www": 0, "btcpay": 0}
    for v in range(vms):
        image = "www" if v % 2 == 0 else "btcpay"
        counters[image] += 1
        k = counters[image]
        name = image if k == 1 else f"{image}{k}"
        vlan = "dmz" if image == "www" else "servers"
        if not free[vlan]:
            raise SystemExit(f"too many hosts for VLAN {vlan} of site {i}")
        octet = free[vlan].pop(0)
        third = 2 if vlan == "dmz" else 1
        host = dict(name=name, vlan=vlan, ip=f"{net(third)}.{octet}",
                    image=image, vm_on=f"node{v % nodes + 1}", oui="52:54")
        if name == "www":
            host["aliases"] = ["web", "relay", "proxy"]
            host["public_names"] = ["@", "www", "relay", "pay"]
        elif name == "btcpay":
            host["aliases"] = ["pay", "lightning"]
            host["public_names"] = ["ln"]
        out.append(host)
    for h, host in enumerate(out):
        host["mac"] = "{}:{:02x}:{:02x}:{:02x}:{:02x}".format(
            host.pop("oui"), i >> 8, i & 255, h >> 8, h & 255
        )
    return out


def edit_host(hosts):
    """The host whose address the one-site edit changes: the last VM in the
    servers VLAN (a btcpay VM: not a firewall forward target, not a DNS
    server, not the first btcpay, which the www Caddyfiles name)."""
    for host in reversed(plan_hosts(0, hosts)):
        if host["vlan"] == "servers" and host.get("vm_on") and host["name"] != "btcpay":
            return host["name"]
    for host in reversed(plan_hosts(0, hosts)):
        if host.get("vm_on"):
            return host["name"]
    raise SystemExit("no VM to edit")


def site_toml(i, sites, hosts, ip_edit=None, extra_records=()):
    """The text of sites/<site>.toml for site i.

    ip_edit: (host name, new last octet) moves one host within its VLAN.
    extra_records: more records, as (zone, name, type, value) tuples.
    """
    name = site_name(i, sites)
    pair = i // 2
    primary = i % 2 == 0
    region = REGIONS[(pair + (0 if primary else 1)) % len(REGIONS)][0]
    domain = f"p{pair:04d}.example.org"
    net = subnet_prefix(i)
    host_list = plan_hosts(i, hosts)
    if ip_edit is not None:
        target, octet = ip_edit
        for host in host_list:
            if host["name"] == target:
                host["ip"] = host["ip"].rsplit(".", 1)[0] + f".{octet}"
    nodes = [h["name"] for h in host_list if h["image"] == "cluster"]

    lines = [
        f"# {name}: synthetic site {i} of {sites} for the sov build benchmark",
        "# (benches/stackgen.py), laid out like sites/fra1.toml.",
        "",
        f"name = {q(name)}",
        f"region = {q(region)}",
        f"role = {q('primary' if primary else 'mirror')}",
    ]
    if not primary:
        lines.append(f"primary = {q(site_name(i - 1, sites))}")
    lines.append(f"wan_address = \"198.{18 + i // 62500}.{i % 62500 // 250}.{i % 250 + 1}\"")
    records = [
        ("public", "@", "TXT", "v=spf1 -all"),
        ("public", "_dmarc", "TXT", f"v=DMARC1; p=reject; rua=mailto:hostmaster@{domain}"),
        ("public", "@", "CAA", '0 issue "letsencrypt.org"'),
        ("internal", "printer", "A", f"{net(3)}.10"),
        ("internal", "_ipp._tcp", "SRV", "0 0 631 printer"),
    ]
    records += list(extra_records)
    lines.append("records = [")
    for zone, owner, rtype, value in records:
        lines.append(
            f"    {{ zone = {q(zone)}, name = {q(owner)}, type = {q(rtype)}, value = {q(value)} }},"
        )
    lines += ["]", "", "[domains]", f"public = [{q(domain)}]",
              f"internal = {q(name + '.example.internal')}", ""]

    for vid, vname, k, iface, (start, end) in VLANS:
        lines += [
            "[[vlans]]",
            f"id = {vid}",
            f"name = {q(vname)}",
            f"subnet = \"{net(k)}.0/24\"",
            f"gateway = \"{net(k)}.1\"",
            f"interface = {q(iface)}",
            f"dhcp_pool = {{ start = \"{net(k)}.{start}\", end = \"{net(k)}.{end}\" }}",
            "",
        ]

    lines += ["[switch]", 'name = "sw1"', 'dialect = "cisco-ios"',
              'management_vlan = "mgmt"', f"management_ip = \"{net(0)}.3\"", ""]
    ports = [("trunk", ["mgmt", "servers", "dmz", "office"], None,
              "fw1 eth1 (LAN trunk, all VLANs tagged)")]
    for node in nodes:
        ports.append(("trunk", ["mgmt", "servers", "dmz"], "mgmt",
                      f"{node} eno1 (VM host; VMs on servers and dmz)"))
    ports.append(("access", "servers", None, "ns1 eno1"))
    ports.append(("access", "mgmt", None, "admin desk (management workstation)"))
    while len(ports) < 48:
        ports.append(("access", "office", None, f"office desk {len(ports) + 1}"))
    for p, (mode, vlans, native, desc) in enumerate(ports, start=1):
        lines += ["[[switch.ports]]", f"name = \"GigabitEthernet1/0/{p}\"", f"mode = {q(mode)}"]
        if mode == "trunk":
            lines.append(f"vlans = {qlist(vlans)}")
            if native:
                lines.append(f"native_vlan = {q(native)}")
        else:
            lines.append(f"vlan = {q(vlans)}")
        lines += [f"description = {q(desc)}", ""]

    lines += ["[firewall]", 'dialect = "nftables"', 'host = "fw1"', 'wan_interface = "eth0"', ""]
    allows = [
        ("mgmt", "servers", "tcp", [22], "admins and sov deploys: SSH to servers"),
        ("mgmt", "dmz", "tcp", [22], "admins and sov deploys: SSH to the DMZ"),
        ("mgmt", "servers", "icmp", [], "ping servers from management"),
        ("mgmt", "dmz", "icmp", [], "ping the DMZ from management"),
        ("dmz", "servers", "tcp", [8080], 'Caddy on www proxies "pay" to BTCPay'),
        ("office", "dmz", "tcp", [80, 443], "staff reach the website and relay directly"),
    ]
    for src, dst, proto, ports_, comment in allows:
        lines += ["[[firewall.allow]]", f"from = {q(src)}", f"to = {q(dst)}", f"proto = {q(proto)}"]
        if ports_:
            lines.append(f"ports = [{', '.join(str(p) for p in ports_)}]")
        lines += [f"comment = {q(comment)}", ""]
    forwards = [
        ("tcp", 80, "www", None, "HTTP (ACME http-01 and redirects to HTTPS)"),
        ("tcp", 443, "www", None, "HTTPS: website, nostr relay, BTCPay"),
        ("udp", 443, "www", None, "HTTP/3"),
        ("udp", 53, "ns1", 5353, "authoritative DNS (knotd on ns1 listens on 5353)"),
        ("tcp", 53, "ns1", 5353, "authoritative DNS over TCP"),
    ]
    if any(h["name"] == "btcpay" for h in host_list):
        forwards.insert(3, ("tcp", 9735, "btcpay", None, "Lightning peers (lnd)"))
    for proto, port, host, host_port, comment in forwards:
        lines += ["[[firewall.forwards]]", f"proto = {q(proto)}", f"port = {port}", f"host = {q(host)}"]
        if host_port:
            lines.append(f"host_port = {host_port}")
        lines += [f"comment = {q(comment)}", ""]

    lines += ["[dhcp]", 'server = "fw1"', "valid_lifetime = 86400", "",
              "[dns]", 'servers = ["ns1"]', ""]

    for host in host_list:
        lines += ["[[hosts]]", f"name = {q(host['name'])}", f"vlan = {q(host['vlan'])}",
                  f"mac = {q(host['mac'])}", f"ip = {q(host['ip'])}", f"image = {q(host['image'])}"]
        if host.get("vm_on"):
            lines.append(f"vm_on = {q(host['vm_on'])}")
        if host.get("aliases"):
            lines.append(f"aliases = {qlist(host['aliases'])}")
        if host.get("public_names"):
            lines.append(f"public_names = {qlist(host['public_names'])}")
        lines += [f"ssh = {{ host_key = {q(host_key(name + '/' + host['name']))} }}", ""]
    return "\n".join(lines)


def stack_toml(sites):
    lines = [
        "# Stack-wide settings of the synthetic benchmark stack (benches/stackgen.py).",
        "",
        'name = "bench"',
        "",
    ]
    for op in ("alice", "bob"):
        lines += ["[[operators]]", f"name = {q(op)}",
                  f"ssh_key = {q(host_key('operator/' + op) + ' ' + op + '@example.org')}", ""]
    lines += [
        "[dns]",
        "ttl = 3600",
        'nameservers = ["ns1.example.org", "ns2.example.org"]',
        'hostmaster = "hostmaster.example.org"',
        "",
    ]
    for region, desc in REGIONS:
        lines += ["[[regions]]", f"name = {q(region)}", f"description = {q(desc)}", ""]
    return "\n".join(lines)


def write_stack(root, sites, hosts, repo):
    """Writes the stack into `root` (which must not exist yet)."""
    if not 1 <= sites <= MAX_SITES:
        raise SystemExit(f"between 1 and {MAX_SITES} sites")
    root = Path(root)
    repo = Path(repo)
    for image in IMAGES:
        if not (repo / "images" / f"{image}.toml").is_file():
            raise SystemExit(f"{repo}/images/{image}.toml is missing: the benchmark's sites use it")
    if not (repo / "templates").is_dir():
        raise SystemExit(f"{repo}/templates is missing")
    (root / "sites").mkdir(parents=True)
    shutil.copytree(repo / "templates", root / "templates")
    shutil.copytree(repo / "images", root / "images")
    (root / "sites" / "stack.toml").write_text(stack_toml(sites))
    for i in range(sites):
        path = root / "sites" / f"{site_name(i, sites)}.toml"
        path.write_text(site_toml(i, sites, hosts))
